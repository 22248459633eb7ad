"""From a vertebra's occupancy probability to what a planner uses: mesh, points, frame.

- `mesh_from_probability`: the largest connected component of {p ≥ ½} (stray islands and
  neighbours' fragments go), marching cubes at ½ on the probability (sub-voxel surface),
  then Taubin smoothing (λ = 0.5, μ = −0.53; shrink-free, Taubin 1995) in millimetres.
- `collision_mesh`: that surface grown outwards by a padding (a level set of its distance
  field, checked to hold the padding everywhere) and decimated to a triangle budget, for a
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

from dataclasses import dataclass

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


#: Collision meshes: the distance field's grid (mm), the first extra offset beyond the padding
#: (covers the level set's chords across the grid and the decimation's), the extra added per
#: retry, and the tolerance of the check (a margin of at least padding − tolerance at every
#: vertex).
#: The field holds each grid point's exact distance to the surface's triangles (open3d), on a
#: 3 mm grid. Before, a Euclidean distance transform on a 1 mm grid gave the distances, and
#: marching cubes took every third point of it: the same level-set density (steps of 2: 1.53 s
#: a spine, no better margins; steps of 4: a median margin of 3.63 mm and two hull fallbacks,
#: `bench/bench_collision.py`), at 27 times the points and a distance rounded to the grid.
#: Same host, same 36 vertebrae: 0.68 s a spine (median; max 0.77) against 1.06 s (1.20);
#: smallest margin 1.82 mm against 1.75, median 2.94 against 3.13, no hull fallback against one.
#: (0.59 s since the points near the surface come from a distance transform, `_DistanceField`.)
COLLISION_GRID_MM = 3.0
COLLISION_EXTRA_MM = (1.0, 0.5)
COLLISION_TOLERANCE_MM = 0.25
COLLISION_ATTEMPTS = 4


def _wound_outwards(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`faces` wound so that the enclosed volume is positive (marching cubes winds them in),
    so that the normals, and a planner's inside/outside, point the right way."""
    v, f = vertices, faces
    if np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() < 0:
        return f[:, ::-1].copy()
    return f


def _closed(faces: np.ndarray) -> bool:
    """Whether every edge is shared by exactly two triangles (a closed surface, so inside and
    outside are defined). open3d's `is_watertight` also tests self-intersection: 0.26 s a
    vertebra, more than the rest of the collision mesh."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    keys = edges[:, 0] * (int(faces.max(initial=0)) + 1) + edges[:, 1]  # one int64 per edge
    _, counts = np.unique(keys, return_counts=True)
    return len(faces) > 0 and bool(np.all(counts == 2))


def _decimated(vertices: np.ndarray, faces: np.ndarray, max_triangles: int):
    mesh = _o3d_mesh(vertices, faces)
    if max_triangles and len(faces) > max_triangles:
        mesh = mesh.simplify_quadric_decimation(int(max_triangles))
        mesh.remove_degenerate_triangles()
        mesh.remove_unreferenced_vertices()
    v = np.asarray(mesh.vertices).copy()
    return v, _wound_outwards(v, np.asarray(mesh.triangles).astype(np.int64))


def _scene(vertices: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(vertices, np.float32)),
        o3d.core.Tensor(np.asarray(faces, np.uint32)),
    )
    return scene


def _depth(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How deep (mm) each point (N, 3) lies inside the closed mesh: its distance to the
    nearest face, negative outside (open3d's signed distance, inside by ray parity)."""
    import open3d as o3d

    distance = _scene(vertices, faces).compute_signed_distance(
        o3d.core.Tensor(np.asarray(points, np.float32)),
        nsamples=3,  # inside: 3 rays' vote
    )
    return -distance.numpy()


#: Where the scanlines of `_inside_on_grid` run beside the grid's lines (mm, per axis): off
#: the lattice that marching cubes puts vertices and edges on, so that a line rarely meets
#: one exactly; far below the grid's spacing.
_SCANLINE_SHIFT_MM = np.array([0.0131, 0.0173, 0.0097])


def _inside_on_grid(scene, lo: np.ndarray, shape: list[int], grid_mm: float) -> np.ndarray:
    """Which points of the grid (origin `lo`, `shape`, spacing `grid_mm`) lie inside the
    closed mesh of `scene`, by ray parity along the grid's lines: one ray per line and axis
    (open3d's `list_intersections`), a point inside where an odd number of crossings precede
    it, and the three axes' majority vote (a ray that grazes an edge miscounts the rest of its
    line; two axes outvote it). The same vote as open3d's per-point `compute_occupancy` with 3
    rays, for a hundredth of the rays. A point counted inside beyond the surface would grow its
    own bubble in the level set (seen 5 mm below a reconstructed L3), hence the vote."""
    import open3d as o3d

    votes = np.zeros(shape, np.int8)
    for axis in range(3):
        a, b = (d for d in range(3) if d != axis)
        ia, ib = np.meshgrid(np.arange(shape[a]), np.arange(shape[b]), indexing="ij")
        origins = np.empty((ia.size, 3))
        origins[:, a] = lo[a] + ia.ravel() * grid_mm + _SCANLINE_SHIFT_MM[a]
        origins[:, b] = lo[b] + ib.ravel() * grid_mm + _SCANLINE_SHIFT_MM[b]
        origins[:, axis] = lo[axis] - grid_mm  # outside: the grid reaches beyond the mesh
        direction = np.zeros((len(origins), 3))
        direction[:, axis] = 1.0  # unit: the hits' t are mm along the line
        rays = o3d.core.Tensor(np.hstack([origins, direction]).astype(np.float32))
        hits = scene.list_intersections(rays)
        splits = hits["ray_splits"].numpy().astype(np.int64)
        ray = np.repeat(np.arange(len(origins)), np.diff(splits))
        t = hits["t_hit"].numpy().astype(np.float64)
        # A crossing at t toggles inside/outside for the grid points beyond it along the line.
        first = np.ceil((t - grid_mm) / grid_mm).astype(np.int64)  # grid index k at lo + k·g
        n = shape[axis]
        keep = first < n
        toggles = np.zeros((len(origins), n + 1), np.int32)
        np.add.at(toggles, (ray[keep], np.clip(first[keep], 0, n)), 1)
        parity = (np.cumsum(toggles[:, :n], axis=1) % 2).astype(np.int8)
        line = parity.reshape(shape[a], shape[b], n)
        votes += np.moveaxis(line, 2, axis) if axis != 2 else line
    return votes >= 2


class _DistanceField:
    """The signed distance (mm; negative inside) to a closed mesh, on a `grid_mm` grid reaching
    `reach_mm` beyond it, and its level sets up to `reach_mm`: each grid point's distance to the
    nearest triangle (open3d), inside by ray parity (`_inside_on_grid`). A level set of a
    distance field does not fold, where moving vertices along their normals does in concave
    places.

    Only the points near the surface get their exact distance (most of a vertebra's grid lies
    farther, and costs open3d more each). A point whose nearest vertex lies farther than `far`
    = `reach_mm` + one grid step + the longest edge is at least `reach_mm` + one grid step from
    every triangle, and so are its neighbours at least `reach_mm` away: no level set up to
    `reach_mm` crosses an edge of the grid that touches it, and any value beyond `reach_mm`
    serves. Which points are near comes from the grid itself: each vertex marks its nearest
    grid point (at most half a cell diagonal, g·√3/2, away), and a point is near when a marked
    point lies within `far` + g·√3/2 (a Euclidean distance transform): every point within
    `far` of a vertex is among them. (On a reconstructed L3: 2.7 ms against 39 ms for a k-d
    tree's query, with 11 078 near points instead of 8 062.) (A far point deep inside that the
    parity vote miscounts as outside would get +far and a small closed bubble inside the bone:
    no smaller margin, a few more triangles.)"""

    def __init__(
        self, vertices: np.ndarray, faces: np.ndarray, reach_mm: float, grid_mm: float
    ) -> None:
        import open3d as o3d

        self.grid_mm = grid_mm
        self.lo = vertices.min(0) - reach_mm - 2 * grid_mm
        hi = vertices.max(0) + reach_mm + 2 * grid_mm
        axes = [np.arange(a, b + grid_mm, grid_mm) for a, b in zip(self.lo, hi, strict=True)]
        shape = [len(a) for a in axes]
        scene = _scene(vertices, faces)
        inside = _inside_on_grid(scene, self.lo, shape, grid_mm)
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        edges = vertices[faces] - vertices[np.roll(faces, 1, axis=1)]
        far = reach_mm + grid_mm + float(np.linalg.norm(edges, axis=-1).max())
        marked = np.zeros(shape, bool)
        nearest = np.rint((vertices - self.lo) / grid_mm).astype(np.int64)
        marked[tuple(np.clip(nearest, 0, np.array(shape) - 1).T)] = True
        to_marked = ndimage.distance_transform_edt(~marked) * grid_mm
        near = (to_marked <= far + grid_mm * np.sqrt(3) / 2).ravel()
        distance = np.full(len(points), far, np.float32)
        distance[near] = scene.compute_distance(
            o3d.core.Tensor(points[near].astype(np.float32))
        ).numpy()
        self.distance = np.where(inside, -1.0, 1.0) * distance.reshape(inside.shape)

    def level_set(self, offset_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """The surface `offset_mm` (> 0) outside, by marching cubes."""
        verts, tris, _, _ = measure.marching_cubes(self.distance, offset_mm, allow_degenerate=False)
        return verts * self.grid_mm + self.lo, tris.astype(np.int64)


def collision_mesh(
    vertices: np.ndarray, faces: np.ndarray, padding_mm: float = 2.0, max_triangles: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """A planner's collision mesh of a vertebra's closed surface (mm), at most `max_triangles`
    (quadric decimation, open3d; 0: no budget) and grown outwards by at least `padding_mm`.
    Under-segmentation is the unsafe direction for a collision object.

    With a padding, the mesh is the level set of the surface's distance field at the padding
    plus an extra (`COLLISION_EXTRA_MM`), decimated, and then checked: every surface vertex
    must lie at least `padding_mm − COLLISION_TOLERANCE_MM` from it, inside (open3d's signed
    distance). If one does not (the decimation cut a corner), the extra grows by 0.5 mm and it
    is made again; after `COLLISION_ATTEMPTS` the convex hull of the surface grown along its
    normals is returned (`padded_hull`: larger than needed, a last resort, with a
    `CollisionFallbackWarning`). So the margin is at least the
    padding (less the tolerance) at every surface vertex, about 1 mm more in the median.
    Padding 0: the surface decimated, which may cut corners by a fraction of a millimetre."""
    v, f, fallback = collision_mesh_and_fallback(vertices, faces, padding_mm, max_triangles)
    _warn_fallback(fallback)
    return v, f


def collision_mesh_and_fallback(
    vertices: np.ndarray, faces: np.ndarray, padding_mm: float = 2.0, max_triangles: int = 2000
) -> tuple[np.ndarray, np.ndarray, Fallback | None]:
    """`collision_mesh` without warnings: the mesh and the fallback taken (None: the level
    set), for callers that report it themselves (warnings are process-global, so catching them
    to classify a fallback can swallow another thread's)."""
    if padding_mm < 0:
        raise ValueError(f"padding_mm must be ≥ 0, not {padding_mm}")
    vertices = np.asarray(vertices, np.float64)
    faces = _wound_outwards(vertices, np.asarray(faces, np.int64))
    if padding_mm == 0:
        return (*_decimated(vertices, faces, max_triangles), None)
    if not _closed(faces):
        raise SurfaceError("the surface is not closed: it has no inside to grow outwards")
    first, step = COLLISION_EXTRA_MM
    offsets = [padding_mm + first + step * attempt for attempt in range(COLLISION_ATTEMPTS)]
    field = _DistanceField(vertices, faces, offsets[-1], COLLISION_GRID_MM)
    for offset in offsets:
        v, f = _decimated(*field.level_set(offset), max_triangles)
        if len(f) and _depth(v, f, vertices).min() >= padding_mm - COLLISION_TOLERANCE_MM:
            return v, f, None
    return _padded_hull(vertices, faces, padding_mm + step, max_triangles)


@dataclass(frozen=True)
class Fallback:
    """A collision mesh larger than needed: "hull" (the padded convex hull) or "box" (the
    padded bounding box), and why."""

    kind: str
    detail: str


def _warn_fallback(fallback: Fallback | None) -> None:
    import warnings

    if fallback is not None:
        category = CollisionBoxWarning if fallback.kind == "box" else CollisionFallbackWarning
        warnings.warn(f"collision mesh: {fallback.detail}", category, stacklevel=3)


class CollisionFallbackWarning(UserWarning):
    """A collision mesh fell back to a convex hull or a box (larger than needed)."""


class CollisionBoxWarning(CollisionFallbackWarning):
    """A collision mesh fell back to the padded bounding box."""


def padded_hull(
    vertices: np.ndarray, faces: np.ndarray, padding_mm: float, max_triangles: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The convex hull of the surface grown `padding_mm` along its normals, decimated to the
    budget and then grown along rays from its centre until every surface vertex lies at least
    `padding_mm` (less the tolerance) inside: a last resort, larger than needed (it fills
    the canal and the gaps between processes), never smaller. Every growth is checked; a
    hull that still fails after `COLLISION_ATTEMPTS` growths gives way to the padded bounding
    box (`CollisionBoxWarning`). Warns (`CollisionFallbackWarning`) so that the caller can
    report it."""
    v, f, fallback = _padded_hull(vertices, faces, padding_mm, max_triangles)
    _warn_fallback(fallback)
    return v, f


def _padded_hull(
    vertices: np.ndarray, faces: np.ndarray, padding_mm: float, max_triangles: int = 0
) -> tuple[np.ndarray, np.ndarray, Fallback]:
    """`padded_hull` without warnings: the mesh and which fallback it is."""
    mesh = _o3d_mesh(vertices, faces)
    mesh.compute_vertex_normals()  # area-weighted, outwards (`faces` wound outwards)
    grown = vertices + padding_mm * np.asarray(mesh.vertex_normals)
    hull, _ = _o3d_mesh(grown, faces).compute_convex_hull()
    v = np.asarray(hull.vertices).copy()
    f = _wound_outwards(v, np.asarray(hull.triangles).astype(np.int64))
    centre = grown.mean(0)
    if max_triangles and len(f) > max_triangles:
        v, f = _decimated(v, f, max_triangles)
        short = max(0.0, -float(_depth(v, f, grown).min()))  # decimation cut inside
        v = v + (short + 0.5) * _unit(v - centre)  # convex: moving out along rays holds it
    # Checked as the level sets are: growing along tilted vertex normals can leave a surface
    # vertex nearer than the padding (1.5 mm of 2 was measured on a reconstructed L4); grown
    # out along rays from the centre until none is.
    directions = _unit(v - centre)
    for _ in range(COLLISION_ATTEMPTS + 1):  # each growth checked, the last one too
        short = padding_mm - COLLISION_TOLERANCE_MM - float(_depth(v, f, vertices).min())
        if short <= 0:
            detail = f"convex hull padded by {padding_mm:.2f} mm (the level set failed its check)"
            return v, f, Fallback("hull", detail)
        v = v + (short + 0.25) * directions
    # Never seen: the box keeps every vertex the padding inside by construction.
    detail = (
        f"the padded hull still holds a vertex {short:.2f} mm short of the padding: padded "
        "bounding box instead"
    )
    return (*padded_box(vertices, padding_mm), Fallback("box", detail))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def padded_box(vertices: np.ndarray, padding_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box around the surface, grown by `padding_mm`: 8 vertices and 12
    triangles wound outwards; the collision object when nothing finer can be made."""
    lo, hi = vertices.min(0) - padding_mm, vertices.max(0) + padding_mm
    corners = np.array([[(lo, hi)[b >> k & 1][k] for k in range(3)] for b in range(8)])
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    tris = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int64)
    return corners, _wound_outwards(corners, tris)


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
    # The transform on the mask's bounding box and one voxel more where the grid goes on: the
    # same distances (the nearest background voxel of a voxel inside the box lies in the box
    # or in that shell) at a fraction of the fine grid's cost.
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    depth = ndimage.distance_transform_edt(mask[box], sampling=spacing)
    core = largest_component(depth >= 0.6 * depth.max())
    return _to_mm(np.argwhere(core).mean(0) + lo, affine)


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
