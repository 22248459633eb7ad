"""Contact sheet of a case: each shot's realistic and synthetic image with the ground-truth
vertebra outlines projected through its P — the quickest check that labels, poses and both
renderers agree."""

from __future__ import annotations

from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from skimage import measure

from x23d_ros import geometry
from x23d_ros.anatomy import LEVELS
from x23d_ros.data.shards import Case, read_case

LEVEL_COLOURS = {
    "L1": "#e6194b",
    "L2": "#3cb44b",
    "L3": "#ffe119",
    "L4": "#4363d8",
    "L5": "#f58231",
}


def outlines(case: Case, view: int, max_points: int = 40_000) -> dict[str, list[np.ndarray]]:
    """Per level, the contours (N, 2) in pixels (u, v) of its projected label voxels."""
    size = case.synthetic.shape[-1]
    P = geometry.projection_matrix(case.K[view], case.T_ref_source[view])
    out = {}
    for name, idx in LEVELS.items():
        ijk = np.argwhere(case.labels == idx)
        if len(ijk) == 0:
            continue
        ijk = ijk[:: max(1, len(ijk) // max_points)]
        mm = ijk @ case.affine[:3, :3].T + case.affine[:3, 3]
        uv, _ = geometry.project(P, mm)
        mask = np.zeros((size, size), bool)
        u, v = np.round(uv).astype(int).T
        keep = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        mask[v[keep], u[keep]] = True
        mask = ndimage.binary_closing(ndimage.binary_dilation(mask), iterations=2)
        out[name] = [c[:, ::-1] for c in measure.find_contours(mask.astype(float), 0.5)]
    return out


def contact_sheet(shard: Path, png: Path, case_name: str | None = None) -> Path:
    """Draw one case of `shard` (the first by default) into `png`."""
    with h5py.File(shard, "r") as h5:
        case = read_case(h5, case_name or sorted(h5)[0])
    views = len(case.view_kinds)
    fig, axes = plt.subplots(2, views, figsize=(2.6 * views, 5.6), squeeze=False)
    for v in range(views):
        contours = outlines(case, v)
        for row, (image, title) in enumerate(
            ((case.realistic[v], "realistic"), (case.synthetic[v], "synthetic"))
        ):
            ax = axes[row, v]
            ax.imshow(image, cmap="gray")
            for name, lines in contours.items():
                for line in lines:
                    ax.plot(line[:, 0], line[:, 1], color=LEVEL_COLOURS[name], linewidth=0.8)
            ax.set_xlim(-0.5, image.shape[1] - 0.5)
            ax.set_ylim(image.shape[0] - 0.5, -0.5)
            ax.set_title(f"{case.view_kinds[v]} · {title}", fontsize=8, pad=2)
            ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in LEVEL_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"{shard.name} / {case.name} ({case.attrs.get('source', '')})", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
