"""Real-shapes generator checks: a contact sheet beside procedural-2, overlap of neighbouring
bones, and seconds per spine.

    python bench/real_shapes.py [--seeds 1 2 3] [--spacing 1.0] [--out docs/real-shapes.png]

The contact sheet shows, per seed, a bone-only AP and lateral projection (the sum of HU above
150 along y and along x) and the mid-sagittal HU slice through the lumbar labels' centre,
for `real-shapes-1` (scan range uncut) and for `procedural-2` of the same seed. Overlap:
voxels inside two bones at once (each bone's own signed distance < 0), for each pair of
neighbours T12/L1 … L5/sacrum; the label map cannot show it (the nearer surface wins).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from x23d_ros.anatomy import procedural

NEIGHBOURS = (
    ("T12", "L1"),
    ("L1", "L2"),
    ("L2", "L3"),
    ("L3", "L4"),
    ("L4", "L5"),
    ("L5", "sacrum"),
)


def generate_with_overlap(seed: int, spacing_mm: float, generator: str):
    """The anatomy, and {"A/B": voxels inside both} for neighbouring bones."""
    inside: dict[str, set] = {}
    rasterise = procedural._rasterise

    def recording(bone, bone_d, labels, cancellous, affine):
        box_centre = bone.centre + bone.R @ bone.offset
        slices, grid = procedural.sdf.grid_block(
            affine, bone_d.shape, box_centre, bone.R, bone.half
        )
        if slices is not None:
            local = procedural.sdf.transform(grid, bone.R, bone.centre).astype(np.float32)
            d = bone.fn(local)
            ijk = np.argwhere(d < 0) + np.array([s.start for s in slices])
            inside[bone.name] = set(map(tuple, ijk))
        rasterise(bone, bone_d, labels, cancellous, affine)

    procedural._rasterise = recording
    try:
        anatomy = procedural.generate(seed, spacing_mm=spacing_mm, generator=generator)
    finally:
        procedural._rasterise = rasterise
    overlap = {f"{a}/{b}": len(inside.get(a, set()) & inside.get(b, set())) for a, b in NEIGHBOURS}
    return anatomy, overlap


def _views(anatomy):
    hu, labels = anatomy.hu, anatomy.labels
    bone = np.clip(hu - 150.0, 0.0, None)
    ijk = np.argwhere(labels > 0)
    i = round(float(ijk[:, 0].mean()))
    lo, hi = np.maximum(ijk.min(0) - 30, 0), ijk.max(0) + 30  # the lumbar spine and around
    x, y, z = (slice(a, b) for a, b in zip(lo, hi, strict=True))
    return bone[x, :, z].sum(1).T, bone[:, y, z].sum(0).T, hu[i, y, z].T


def contact_sheet(seeds, spacing_mm: float, path: Path) -> None:
    fig, axes = plt.subplots(len(seeds), 6, figsize=(13, 6.5 * len(seeds)), squeeze=False)
    for r, seed in enumerate(seeds):
        for c, generator in enumerate(("real-shapes-1", "procedural-2")):
            p = replace(procedural.spine_params(generator), scan_cut_p=0.0)
            anatomy = procedural.generate(
                seed, spacing_mm=spacing_mm, params=p, generator=generator
            )
            titles = ("AP bone sum", "lateral bone sum", "mid-sagittal HU")
            for k, (view, title) in enumerate(zip(_views(anatomy), titles, strict=True)):
                ax = axes[r, 3 * c + k]
                kw = dict(cmap="gray", vmin=-200, vmax=1200) if k == 2 else dict(cmap="gray")
                ax.imshow(view, origin="lower", **kw)
                # lateral and sagittal: y runs right = posterior
                ax.set_title(f"{generator} seed {seed}\n{title}", fontsize=8)
                ax.axis("off")
            if generator.startswith("real"):
                people = {n: s["person"] for n, s in anatomy.meta["shapes"].items()}
                axes[r, 0].text(
                    0,
                    -0.08,
                    " ".join(f"{n}:{p}" for n, p in people.items()),
                    transform=axes[r, 0].transAxes,
                    fontsize=6,
                    va="top",
                )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.02, wspace=0.05, hspace=0.12)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("docs/real-shapes.png"))
    parser.add_argument("--overlap-seeds", type=int, default=6)
    args = parser.parse_args()
    contact_sheet(args.seeds, args.spacing, args.out)
    results = {"spacing_mm": args.spacing, "seconds": {}, "overlap_voxels": {}}
    for generator in ("procedural-2", "real-shapes-1", "real-shapes-1-val"):
        times = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            procedural.generate(seed, spacing_mm=args.spacing, generator=generator)
            times.append(time.perf_counter() - t0)
        results["seconds"][generator] = [round(t, 2) for t in times]
    for generator in ("procedural-2", "real-shapes-1", "real-shapes-1-val"):
        per_seed = {}
        for seed in range(100, 100 + args.overlap_seeds):
            _, overlap = generate_with_overlap(seed, args.spacing, generator)
            per_seed[seed] = overlap
        results["overlap_voxels"][generator] = per_seed
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
