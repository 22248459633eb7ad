"""Draw docs/style-transfer.png: held-out simulated fluoroscopy (top), what the shipped style
transfer makes of it (middle) and the synthetic shot of the same pose (bottom).

    .venv/bin/python tools/style_figure.py --data data/paired2/val --out docs/style-transfer.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.model.style import DEFAULT_STYLE, StyleTransfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="paired shards (both domains)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--views", type=int, default=2, help="shots per case")
    args = parser.parse_args()
    real = ShotDataset(args.data, "realistic")
    synthetic = ShotDataset(args.data, "synthetic")
    style = StyleTransfer(DEFAULT_STYLE, "cpu")
    columns = []
    for case in range(args.cases):
        fluoro, drr = real[case]["images"], synthetic[case]["images"]
        styled, bone_dark = style([f.numpy() for f in fluoro[: args.views]], "auto")
        for v in range(args.views):
            columns.append((fluoro[v].numpy(), styled[v], drr[v].numpy(), bone_dark[v]))
    fig, axes = plt.subplots(3, len(columns), figsize=(2.4 * len(columns), 7.4))
    rows = ("simulated fluoroscopy", "style transfer", "synthetic (target)")
    for c, (fluoro, styled, drr, p) in enumerate(columns):
        top = float(np.percentile(drr, 99.5))
        for r, (image, vmax) in enumerate(((fluoro, 1.0), (styled, top), (drr, top))):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(rows[r])
        axes[0, c].set_title(f"p(bone dark) {p:.2f}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
