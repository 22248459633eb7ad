"""Build the real-vertebra shape bank (`x23d_ros/anatomy/shapes/real_vertebrae.npz`).

Reads the real lumbar vertebrae gathered in `shared/data/real-vertebrae/` (see its SOURCES.md),
puts each into the canonical local frame of `x23d_ros.anatomy.vertebra` (origin at the body
centre, x to the patient's left, y posterior, z along the body's axis: LPS), and stores its
signed distance on a 1 mm grid there, quantised to int8 and clipped near the surface.

    python tools/build_shape_bank.py [--data ../shared/data/real-vertebrae] [--check]

The canonical frame of each vertebra:
1. the source's patient axes, turned into LPS (each source's convention below);
2. the body: the largest part left by a morphological opening of the voxelised bone with a
   7.5 mm ball (pedicles, laminae and processes are thinner than 15 mm; the body is not);
3. z: the direction, within 40° of the source's superior, along which the body is shortest
   (the normal of the endplates; for a wedged body, their bisector);
4. y: from the body's centroid to the posterior elements' centroid, made normal to z;
   x = y × z (right-handed, as LPS is: no mirror);
5. origin: the middle of the body's extent along x, y and z.
`--check` also writes mid-sagittal and mid-axial slices of every shape to a PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import open3d as o3d
from scipy import ndimage
from skimage import measure

log = logging.getLogger("build_shape_bank")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "x23d_ros" / "anatomy" / "shapes" / "real_vertebrae.npz"
GRID_MM = 1.0
MARGIN_MM = 5.0
SDF_CLIP_MM = 4.0  # the field is kept within ±4 mm of the surface, as int8
SDF_STEP_MM = SDF_CLIP_MM / 127
# Population mean body height (mm, mean of anterior and posterior) per level, Bonczar et al.
# 2024 (as in `morphometry`): a body whose tallest column is under 75 % of it has collapsed
# (a Genant grade 2–3 fracture), and is left out of the bank.
MEAN_HEIGHT_MM = {"L1": 25.55, "L2": 26.4, "L3": 26.75, "L4": 26.35, "L5": 25.75}
COLLAPSED_BELOW = 0.75

# BSEL spines: their connected components sorted from the lowest up are L5, L4, ... (checked
# by size and position: the lowest five are the widest, the sixth is the first narrow thoracic).
BSEL_LUMBAR_FROM_BOTTOM = ("L5", "L4", "L3", "L2", "L1")
# Morphable lumbar mean: its components from the highest down are L2..L5.
MEAN_LEVELS_FROM_TOP = ("L2", "L3", "L4", "L5")


def _mesh(vertices: np.ndarray, triangles: np.ndarray) -> o3d.geometry.TriangleMesh:
    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
        o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)),
    )


def _components(mesh: o3d.geometry.TriangleMesh) -> list[o3d.geometry.TriangleMesh]:
    """Connected components of a mesh, each as its own mesh."""
    # OBJ readers split a vertex per normal index: weld them back, or every triangle is apart.
    mesh = mesh.merge_close_vertices(1e-6)
    tri, _, _ = mesh.cluster_connected_triangles()
    tri = np.asarray(tri)
    V, F = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    out = []
    for c in np.unique(tri):
        faces = F[tri == c]
        used, inverse = np.unique(faces, return_inverse=True)
        out.append(_mesh(V[used], inverse.reshape(-1, 3)))
    return out


def _largest(mesh: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    """The largest component (drops stray fragments)."""
    return max(_components(mesh), key=lambda m: len(m.triangles))


def load_sources(data: Path) -> list[dict]:
    """Every real lumbar vertebra as a mesh in LPS mm, with its level, person and source."""
    shapes = []
    for ply in sorted((data / "verse-l1-meshes").glob("*.ply")):
        person = ply.name.split("_")[0]
        mesh = _largest(o3d.io.read_triangle_mesh(str(ply)))  # comment SPACE=LPS
        shapes.append(dict(level="L1", person=person, source="verse-l1-meshes", mesh=mesh))

    img = nib.load(str(data / "verse004" / "sub-verse004_seg-vert_msk.nii.gz"))
    labels = np.asarray(img.dataobj)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    for label, level in zip(range(20, 25), ("L1", "L2", "L3", "L4", "L5"), strict=True):
        smooth = ndimage.gaussian_filter((labels == label).astype(np.float32), 0.6)
        verts, faces, _, _ = measure.marching_cubes(smooth, 0.5)
        mm = (verts @ img.affine[:3, :3].T + img.affine[:3, 3]) @ ras_to_lps.T
        mesh = _largest(_mesh(mm, faces[:, ::-1]))
        shapes.append(dict(level=level, person="sub-verse004", source="verse004", mesh=mesh))

    for obj in sorted((data / "bsel-spines").glob("*.obj")):
        parts = _components(o3d.io.read_triangle_mesh(str(obj)))  # 3D Slicer, SPACE=LPS
        parts.sort(key=lambda m: np.asarray(m.vertices)[:, 2].mean())
        person = f"bsel-{obj.name.split('-')[0]}"
        for level, mesh in zip(BSEL_LUMBAR_FROM_BOTTOM, parts, strict=False):
            shapes.append(dict(level=level, person=person, source="bsel-spines", mesh=mesh))

    # ArtiSynth: metres; x anterior, y left, z superior (checked: the arch lies at -x).
    to_lps = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)
    for level in ("L1", "L2", "L3", "L4", "L5"):
        mesh = o3d.io.read_triangle_mesh(str(data / "artisynth-vhm" / f"{level}.obj"))
        mm = 1000.0 * np.asarray(mesh.vertices) @ to_lps.T
        mesh = _largest(_mesh(mm, np.asarray(mesh.triangles)))
        shapes.append(dict(level=level, person="vhm-male", source="artisynth-vhm", mesh=mesh))

    # Morphable mean: mm; x anterior, y left, z superior, like ArtiSynth (checked the same way).
    root = data / "morphable-lumbar-mean"
    verts = np.loadtxt(root / "meanMesh_vertices.csv", delimiter=",") @ to_lps.T
    faces = np.loadtxt(root / "meanMesh_faces.csv", delimiter=",").astype(np.int64) - 1
    parts = _components(_mesh(verts, faces))
    parts.sort(key=lambda m: -np.asarray(m.vertices)[:, 2].mean())
    for level, mesh in zip(MEAN_LEVELS_FROM_TOP, parts, strict=True):
        shapes.append(
            dict(level=level, person="mean-87", source="morphable-lumbar-mean", mesh=mesh)
        )
    return shapes


def signed_distance(mesh: o3d.geometry.TriangleMesh, points: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) of points (*, 3) to a closed mesh."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    q = o3d.core.Tensor(points.reshape(-1, 3).astype(np.float32))
    dist = scene.compute_distance(q).numpy()
    inside = scene.compute_occupancy(q, nsamples=3).numpy() > 0.5
    return np.where(inside, -dist, dist).reshape(points.shape[:-1])


def _grid(lo: np.ndarray, hi: np.ndarray, step: float) -> np.ndarray:
    axes = [np.arange(a, b + step / 2, step) for a, b in zip(lo, hi, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def canonical_frame(mesh: o3d.geometry.TriangleMesh) -> tuple[np.ndarray, np.ndarray, dict]:
    """(R, centre, body): the vertebra's canonical axes as R's columns and its body centre,
    both in the source's LPS mm, and the body's measures (mm) in that frame."""
    V = np.asarray(mesh.vertices)
    lo, hi = V.min(0) - 2, V.max(0) + 2
    pts = _grid(lo, hi, 1.0)
    inside = signed_distance(mesh, pts) < 0
    depth = ndimage.distance_transform_edt(inside)
    # A collapsed (fractured) body may be thinner than 15 mm: open with a smaller ball then.
    radius = min(7.5, 0.75 * depth.max())
    lab, n = ndimage.label(depth > radius)
    biggest = np.argmax(ndimage.sum(depth > radius, lab, range(1, n + 1))) + 1
    body = (ndimage.distance_transform_edt(lab != biggest) <= radius) & inside
    body_pts, arch_pts = pts[body], pts[inside & ~body]
    c = body_pts.mean(0)

    # z: the shortest extent of the body, within 40° of the superior axis.
    best = None
    for tilt_y in np.radians(np.arange(-40, 41, 2.0)):
        for tilt_x in np.radians(np.arange(-40, 41, 2.0)):
            z = np.array([np.sin(tilt_x), -np.sin(tilt_y), 1.0])
            z /= np.linalg.norm(z)
            proj = (body_pts - c) @ z
            extent = np.percentile(proj, 99) - np.percentile(proj, 1)
            if best is None or extent < best[0]:
                best = (extent, z)
    z = best[1]
    y = arch_pts.mean(0) - c
    y -= (y @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    R = np.stack([x, y, z], axis=1)
    # Measures along the body's midlines, where the canal parts it from the arch (the body mask
    # of a heavy L5 also holds the roots of its transverse processes).
    local = (body_pts - c) @ R

    def extent(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(values, [1, 99])
        return float(hi - lo), float((hi + lo) / 2)

    mid_z = np.abs(local[:, 2]) < 20  # the whole body: its widest is at the endplates' rims
    depth, yc = extent(local[mid_z & (np.abs(local[:, 0]) < 4), 1])
    # across its middle (a body is widest there and behind; a heavy L5's transverse processes
    # spring from further back still)
    width, xc = extent(local[mid_z & (np.abs(local[:, 1] - yc) < 4), 0])
    column = np.abs(local[:, 0] - xc) < 5

    def height(y_lo: float, y_hi: float) -> tuple[float, float]:
        return extent(local[column & (local[:, 1] > yc + y_lo) & (local[:, 1] < yc + y_hi), 2])

    height_middle, zc = height(-depth / 8, depth / 8)
    centre = c + R @ np.array([xc, yc, zc])
    measures = dict(
        width=width,
        depth=depth,
        height_anterior=height(-depth / 2, -depth / 4)[0],
        height_posterior=height(depth / 4, depth / 2)[0],
        height_middle=height_middle,
    )
    return R, centre, measures


def build(data: Path) -> dict:
    shapes = load_sources(data)
    arrays, index = {}, []
    for s in shapes:
        R, centre, measures = canonical_frame(s["mesh"])
        tallest = max(measures[k] for k in measures if k.startswith("height"))
        if tallest < COLLAPSED_BELOW * MEAN_HEIGHT_MM[s["level"]]:
            log.info("left out %s %s: collapsed body, %s", s["level"], s["person"], measures)
            continue
        i = len(index)
        local_verts = (np.asarray(s["mesh"].vertices) - centre) @ R
        lo = np.floor(local_verts.min(0) - MARGIN_MM)
        hi = np.ceil(local_verts.max(0) + MARGIN_MM)
        local = _grid(lo, hi, GRID_MM)
        d = signed_distance(s["mesh"], local @ R.T + centre)
        q = np.round(np.clip(d, -SDF_CLIP_MM, SDF_CLIP_MM) / SDF_STEP_MM).astype(np.int8)
        arrays[f"sdf_{i}"] = q
        arrays[f"origin_{i}"] = lo.astype(np.float32)
        entry = {k: s[k] for k in ("level", "person", "source")}
        entry.update({k: round(v, 2) for k, v in measures.items()})
        entry["volume_ml"] = round(float((d < 0).sum() * GRID_MM**3 / 1000), 1)
        # canonical → source: p_source = centre + R @ p_local (source LPS mm, see load_sources)
        entry["R"] = np.round(R, 6).tolist()
        entry["centre"] = np.round(centre, 4).tolist()
        index.append(entry)
        log.info("%2d %s", i, {k: v for k, v in entry.items() if k not in ("R", "centre")})
    arrays["index"] = np.array(json.dumps(index))
    arrays["grid_mm"] = np.float32(GRID_MM)
    arrays["sdf_step_mm"] = np.float32(SDF_STEP_MM)
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "real-vertebrae"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", type=Path, help="write a PNG of every shape's slices here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays = build(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    log.info("wrote %s (%.2f MB)", args.out, args.out.stat().st_size / 1e6)
    if args.check:
        _check_sheet(arrays, args.check)


def _check_sheet(arrays: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = json.loads(str(arrays["index"]))
    fig, axes = plt.subplots(len(index), 3, figsize=(7, 2.2 * len(index)))
    for i, entry in enumerate(index):
        inside = arrays[f"sdf_{i}"] < 0
        o = -arrays[f"origin_{i}"].astype(int)  # the body centre's voxel
        views = (
            inside[o[0]].T,  # sagittal: y right (posterior), z up
            inside[:, :, o[2]].T,  # axial: x right (left), y up (posterior)
            inside.sum(1).T,  # coronal projection: x right, z up
        )
        for ax, v, name in zip(axes[i], views, ("sagittal", "axial", "AP sum"), strict=True):
            ax.imshow(v, origin="lower", cmap="gray")
            ax.set_title(f"{entry['level']} {entry['person']} {name}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)


if __name__ == "__main__":
    main()
