"""How far along the spine the coarse stage looks when it names a level.

    .venv/bin/python bench/coarse_reach.py [--weights default ...] [--cases 12]

A level is named by counting from the sacrum or from T12, 35–140 mm away; a network whose
label of a vertebra depends only on what lies near it cannot count. For each level the coarse
stage finds (at least 20 voxels labelled), the gradient of the sum of its log-probability over
its own voxels with respect to the fused 3D input (the U-Net's input: the views' unprojected
features), |gradient| summed over channels; per level, the share of that mass at each distance
along the spine (|z − the level's mean z|, the patient's superior axis), then the mean over the
levels of all cases. The grid (48³ at 4 mm around the shots' isocentre) ends 96 mm from its
centre, so the far shares are cut for a level off the centre, alike for all weights.

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


def reach(reconstructor: Reconstructor, data: Path, cases: int) -> np.ndarray:
    """(len(EDGES_MM) - 1,): the mean share of the gradient per distance bin."""
    captured: dict[str, torch.Tensor] = {}

    def keep_input(module, args):
        x = args[0].detach().clone().requires_grad_(True)
        captured["x"] = x
        return (x,)

    hook = reconstructor.coarse.decoder.register_forward_pre_hook(keep_input)
    dataset = ShotDataset(data, "synthetic")
    shares = []
    try:
        for i in range(min(cases, len(dataset))):
            shot_set = shot_set_from_case(dataset[i], [0, 1, 2], "synthetic")
            batch = reconstructor.coarse_batch(reconstructor.prepare(shot_set))
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
                hist, _ = np.histogram(dz, bins=EDGES_MM, weights=mass)
                shares.append(hist / hist.sum())
    finally:
        hook.remove()
    return np.mean(shares, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["default"])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "coarse_reach")
    args = parser.parse_args()
    result: dict = {"edges_mm": list(EDGES_MM), "cases": args.cases, "weights": {}}
    for weights in args.weights:
        reconstructor = Reconstructor(weights, device="cpu")
        data = heldout(24, shot_size(reconstructor), "level", 3, "procedural-2")
        share = reach(reconstructor, data, args.cases)
        result["weights"][weights] = {
            "sha256": reconstructor.weights_sha256,
            "coarse_levels": reconstructor.coarse_cfg["net"].get("levels", 2),
            "share": [round(float(s), 4) for s in share],
        }
        result["data"] = str(data)
    lines = [
        "# How far along the spine the coarse stage looks",
        "",
        f"`bench/coarse_reach.py`; {args.cases} held-out `procedural-2` cases, level-centred, "
        "3 views. Share of the gradient of a found level's log-probability (over its own "
        "voxels) with respect to the fused 3D input, by distance along the spine from the "
        "level; mean over the levels.",
        "",
        "| weights | U-Net levels | "
        + " | ".join(f"{a}–{b} mm" for a, b in itertools.pairwise(EDGES_MM))
        + " | beyond 60 mm | beyond 100 mm |",
        "|---|---:|" + "---:|" * (len(EDGES_MM) + 1),
    ]
    far60, far100 = EDGES_MM.index(60), EDGES_MM.index(100)
    for name, r in result["weights"].items():
        s = r["share"]
        lines.append(
            f"| {name} (`{r['sha256'][:12]}…`) | {r['coarse_levels']} | "
            + " | ".join(f"{v:.3f}" for v in s)
            + f" | {sum(s[far60:]):.3f} | {sum(s[far100:]):.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
