"""From a vertebra's occupancy probability to what a planner uses: mesh, points, frame.

- `mesh_from_probability`: the largest connected component of {p ≥ ½} (stray islands and
  neighbours' fragments go), marching cubes at ½ on the probability (sub-voxel surface),
  then Taubin smoothing (λ = 0.5, μ = −0.53; shrink-free, Taubin 1995) in millimetres.
- `collision_mesh`: that surface decimated to a triangle budget and padded outwards, for a
  planner's collision checking (the visual meshes stay as reconstructed).
- `sample_points`: area-weighted points on the mesh, each with a confidence
  c = |p(x − δn) − p(x + δn)|, δ one voxel along the face normal n: 1 where the network puts a
  crisp wall between bone and background, near 0 where it hesitates.
- `anatomical_frame`: origin at the vertebral body's centre, z superior, y posterior, x left
  (right-handed, as LPS). The body is the thickest part of a vertebra: its centre is the
  centroid of the voxels deeper than 60 % of the deepest (Euclidean distance transform). The
  superior direction comes from the neighbouring levels' centres (the spine's axis); the
  posterior direction runs from the body centre to the centroid of the whole vertebra
  (the posterior arch pulls it back), made orthogonal to z.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from skimage import measure


class SurfaceError(ValueError):
    """The occupancy holds no surface (nothing above the threshold)."""


def largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == (1 + int(np.argmax(sizes)))


def _to_mm(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _taubin(vertices: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Taubin's λ|μ smoothing with uniform weights over each vertex's distinct neighbours.
    Kept by hand: open3d's `filter_smooth_taubin` (same λ, μ, iterations) left a marching-cubes
    ball self-intersecting, so not watertight; this one keeps it watertight (test_surface)."""
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adjacency = sparse.coo_matrix((np.ones(len(edges)), edges.T), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0  # duplicates summed to >1 by the conversion
    degree = np.asarray(adjacency.sum(1)).ravel()
    degree[degree == 0] = 1.0
    v = vertices.copy()
    for _ in range(iterations):
        for factor in (0.5, -0.53):
            v = v + factor * (adjacency @ v / degree[:, None] - v)
    return v


def _o3d_mesh(vertices: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
        o3d.utility.Vector3iVector(np.asarray(faces, np.int32)),
    )


def mask_surface_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points (N, 3) mm on a boolean mask's surface (marching-cubes vertices, closed at the
    volume's border): the ground truth that reconstructions are compared with."""
    verts = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)[0] - 1.0
    return _to_mm(verts, affine)


def mesh_from_probability(
    probability: np.ndarray,
    affine: np.ndarray,
    smoothing_iterations: int = 10,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) in mm and triangles (M, 3) of the surface p = ½ of the largest part
    (`keep`, when the caller already has it: `largest_component(probability >= 0.5)`)."""
    if keep is None:
        keep = largest_component(probability >= 0.5)
    if not keep.any():
        raise SurfaceError("no voxel has an occupancy probability of ½ or more")
    # Clamp the kept part above ½ and everything else below, so only its surface is traced
    # (still at sub-voxel precision); pad so that a part touching the grid's border closes.
    p = np.where(keep, np.maximum(probability, 0.5 + 1e-3), np.minimum(probability, 0.5 - 1e-3))
    p = np.pad(p.astype(np.float32), 1)
    verts, faces, _, _ = measure.marching_cubes(p, level=0.5, allow_degenerate=False)
    verts = _to_mm(verts - 1.0, affine)
    if smoothing_iterations:
        verts = _taubin(verts, faces, smoothing_iterations)
    return verts.astype(np.float64), faces.astype(np.int64)


def collision_mesh(
    vertices: np.ndarray, faces: np.ndarray, padding_mm: float = 2.0, max_triangles: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """A planner's collision mesh of a vertebra's surface (mm): decimated to at most
    `max_triangles` (quadric error metric, open3d; 0: as it is), then every vertex moved
    `padding_mm` outwards along its normal. Under-segmentation is the unsafe direction for a
    collision object; the padding covers the decimation's error and part of the model's."""
    if padding_mm < 0:
        raise ValueError(f"padding_mm must be ≥ 0, not {padding_mm}")
    mesh = _o3d_mesh(vertices, faces)
    if max_triangles and len(faces) > max_triangles:
        mesh = mesh.simplify_quadric_decimation(int(max_triangles))
        mesh.remove_degenerate_triangles()
        mesh.remove_unreferenced_vertices()
    v = np.asarray(mesh.vertices).copy()
    f = np.asarray(mesh.triangles).astype(np.int64)
    # Wind the triangles outwards (positive enclosed volume; marching cubes winds them in), so
    # that the normals, and a planner's inside/outside, point the right way.
    if np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() < 0:
        f = f[:, ::-1].copy()
    if padding_mm > 0:
        padded = _o3d_mesh(v, f)
        padded.compute_vertex_normals()  # area-weighted
        padded.compute_triangle_normals()
        normals, face_normals = (
            np.asarray(padded.vertex_normals),
            np.asarray(padded.triangle_normals),
        )
        # Along the vertex normal a face moves out by only d·cos θ (θ between the vertex's and
        # the face's normals): go further where the surface bends, so that every face moves
        # out by at least d (the factor capped at 2, at 60°).
        cos = np.ones(len(v))
        for k in range(3):
            np.minimum.at(cos, f[:, k], np.einsum("ij,ij->i", normals[f[:, k]], face_normals))
        v += (padding_mm / np.clip(cos, 0.5, 1.0))[:, None] * normals
    return v, f


def sample_points(
    vertices: np.ndarray,
    faces: np.ndarray,
    probability: np.ndarray,
    affine: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`count` points (count, 3) mm on the mesh, area-weighted, and their confidence (count,)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise SurfaceError("the mesh has no area")
    chosen = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    points = w[:, :1] * a[chosen] + w[:, 1:2] * b[chosen] + w[:, 2:] * c[chosen]
    normals = cross[chosen] / np.maximum(2 * area[chosen], 1e-12)[:, None]
    step = float(np.abs(np.linalg.det(affine[:3, :3])) ** (1 / 3))
    inverse = np.linalg.inv(affine)

    def p_at(x: np.ndarray) -> np.ndarray:
        ijk = x @ inverse[:3, :3].T + inverse[:3, 3]
        return ndimage.map_coordinates(probability, ijk.T, order=1, mode="constant", cval=0.0)

    confidence = np.abs(p_at(points - step * normals) - p_at(points + step * normals))
    return points, np.clip(confidence, 0.0, 1.0)


def box_centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centre (3,) mm of a mask's bounding box. The fine grid sits there, not at the centroid:
    a vertebra's mass is in its body, so its centroid lies ~20 mm from the front and up to
    ~80 mm from the spinous process's tip, while its box centre is ≤ ~60 mm from every end."""
    idx = np.argwhere(mask)
    return (idx.min(0) + idx.max(0)) / 2 @ affine[:3, :3].T + affine[:3, 3]


def body_centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centre (3,) mm of the thickest part of a vertebra mask (its body)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    core = largest_component(depth >= 0.6 * depth.max())
    return _to_mm(np.argwhere(core).mean(0), affine)


def anatomical_frame(mask: np.ndarray, affine: np.ndarray, superior: np.ndarray) -> np.ndarray:
    """T_ref_vertebra (4, 4): origin at the body centre, z along `superior` (a direction in the
    reference frame, e.g. from the level below to the level above), y posterior, x left."""
    if not mask.any():
        raise SurfaceError("empty vertebra mask")
    origin = body_centre(mask, affine)
    z = np.asarray(superior, float)
    z = z / np.linalg.norm(z)
    centroid = _to_mm(np.argwhere(mask).mean(0), affine)
    y = centroid - origin
    y = y - (y @ z) * z
    if np.linalg.norm(y) < 1e-6:  # a symmetric blob: no posterior cue; any perpendicular
        y = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = origin
    return T


def write_mesh(path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A binary mesh file in the units of `vertices`, its format from the suffix (open3d):
    `.ply` (MeshLab, Open3D, Blender), `.stl` (CAD and slicers; a normal per facet), `.obj`."""
    import open3d as o3d

    mesh = _o3d_mesh(vertices, faces)
    mesh.compute_triangle_normals()
    if not o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False, compressed=False):
        raise OSError(f"could not write the mesh to {path}")
