"""How far along the spine the coarse stage looks when it names a level.

    .venv/bin/python bench/coarse_reach.py [--weights default ...] [--cases 12]

A level is named by counting from the sacrum or from T12, 35–140 mm away. For each label the
coarse stage gives (L1..L5, at least 20 voxels; all voxels of that label, which may be more
than one blob, unlike the pipeline's `levels.blobs`/`levels.chain`), the gradient of the sum of
its log-probability over its voxels with respect to the fused 3D input (the U-Net's input: the
views' unprojected features), |gradient| summed over channels; per label, the share of that
mass at each distance along the spine (|z − the label's mean z|, the patient's superior axis);
then the mean (and SD) over the labels of all cases. A descriptive measure, not a cause.

The grid (48³ at 4 mm around the shots' isocentre) reaches 96 mm from its centre, so no
landmark farther than that from a level can be in it at all, and every share is bounded by the
grid's geometry: the "uniform" row gives the share of the grid's voxels at each distance from
the same labels, what a network that weighed every voxel alike would show.

The held-out set of bench_landmarks.py and bench_model.py whose shots centre on a random level
(procedural-2, seed 778), 3 views (AP + lateral + oblique), synthetic domain. Writes
bench/results/coarse_reach.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import RESULTS, heldout, shot_size

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.pipeline import Reconstructor, shot_set_from_case

#: Edges (mm) of the distance bins along the spine.
EDGES_MM = (0, 20, 40, 60, 80, 100, 120, 140, 160, 200)
#: The fewest voxels a label must have to be measured.
MIN_VOXELS = 20


def reach(reconstructor: Reconstructor, data: Path, cases: int) -> dict[str, np.ndarray]:
    """Per label measured (rows), the share of the gradient per distance bin ("gradient") and
    of the grid's voxels ("uniform"), each (labels, len(EDGES_MM) - 1)."""
    captured: dict[str, torch.Tensor] = {}

    def keep_input(module, args):
        x = args[0].detach().clone().requires_grad_(True)
        captured["x"] = x
        return (x,)

    hook = reconstructor.coarse.decoder.register_forward_pre_hook(keep_input)
    dataset = ShotDataset(data, "synthetic")
    rows: dict[str, list] = {"gradient": [], "uniform": []}
    try:
        for i in range(min(cases, len(dataset))):
            shot_set = shot_set_from_case(dataset[i], [0, 1, 2], "synthetic")
            batch = reconstructor.coarse_batch(reconstructor.prepare(shot_set))
            # The reconstructor's own calls run under inference_mode; this one needs the graph.
            with torch.enable_grad():
                logits = reconstructor.coarse(batch["images"], batch["P"], batch["points"])
                logp = logits.float().log_softmax(1)[0]
            labels = logp.argmax(0)
            z = batch["points"][0, ..., 2]
            for k in range(1, logp.shape[0]):
                mine = labels == k
                if int(mine.sum()) < MIN_VOXELS:
                    continue
                (grad,) = torch.autograd.grad(logp[k][mine].sum(), captured["x"], retain_graph=True)
                mass = grad[0].abs().sum(0).numpy().ravel()
                dz = (z - z[mine].mean()).abs().numpy().ravel()
                for key, weights in (("gradient", mass), ("uniform", np.ones_like(mass))):
                    hist, _ = np.histogram(dz, bins=EDGES_MM, weights=weights)
                    rows[key].append(hist / hist.sum())
    finally:
        hook.remove()
    return {key: np.array(value) for key, value in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["default"])
    parser.add_argument("--cases", type=int, default=12, help="at most the set's 24")
    parser.add_argument("--out", type=Path, default=RESULTS / "coarse_reach")
    args = parser.parse_args()
    far60, far100 = EDGES_MM.index(60), EDGES_MM.index(100)
    result: dict = {"edges_mm": list(EDGES_MM), "weights": {}}
    for weights in args.weights:
        reconstructor = Reconstructor(weights, device="cpu")
        data = heldout(24, shot_size(reconstructor), "level", 3, "procedural-2")
        rows = reach(reconstructor, data, args.cases)
        result["cases"] = min(args.cases, len(ShotDataset(data, "synthetic")))
        result["data"] = str(data)
        result["weights"][weights] = {
            "sha256": reconstructor.weights_sha256,
            "coarse_levels": reconstructor.coarse_cfg["net"].get("levels", 2),
            "labels_measured": len(rows["gradient"]),
            **{
                key: {
                    "share": [round(float(v), 4) for v in r.mean(0)],
                    "beyond_60mm": [
                        round(float(v), 4)
                        for v in (r[:, far60:].sum(1).mean(), r[:, far60:].sum(1).std())
                    ],
                    "beyond_100mm": [
                        round(float(v), 4)
                        for v in (r[:, far100:].sum(1).mean(), r[:, far100:].sum(1).std())
                    ],
                }
                for key, r in rows.items()
            },
        }
    lines = [
        "# How far along the spine the coarse stage looks",
        "",
        f"`bench/coarse_reach.py`; {result['cases']} held-out `procedural-2` cases, "
        "level-centred, 3 views. Share of the gradient of a label's log-probability (over its "
        "voxels) with respect to the fused 3D input, by distance along the spine from the "
        "label's mean; mean over the labels (beyond 60 and 100 mm: mean ± SD over the labels). "
        "`uniform`: the share of the grid's voxels at those distances from the same labels. "
        "The grid reaches 96 mm from its centre. A descriptive measure, not a cause.",
        "",
        "| weights | U-Net levels | labels | row | "
        + " | ".join(f"{a}–{b} mm" for a, b in itertools.pairwise(EDGES_MM))
        + " | beyond 60 mm | beyond 100 mm |",
        "|---|---:|---:|---|" + "---:|" * (len(EDGES_MM) + 1),
    ]
    for name, r in result["weights"].items():
        for key in ("gradient", "uniform"):
            row = r[key]
            lines.append(
                f"| {name} (`{r['sha256'][:12]}…`) | {r['coarse_levels']} | "
                f"{r['labels_measured']} | {key} | "
                + " | ".join(f"{v:.3f}" for v in row["share"])
                + " | {:.3f} ± {:.3f} | {:.3f} ± {:.3f} |".format(
                    *row["beyond_60mm"], *row["beyond_100mm"]
                )
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
