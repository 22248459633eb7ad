"""Overfit check: can the style transfer's real training path fit a handful of paired shots?

    .venv/bin/python bench/overfit_style.py [--steps 600] [--cases 2]

The style transfer's validation error stayed at half the target's mean (STYLE_CARD.md). Before
blaming its size, its own training path (`x23d style`: `PairedShots`, `sample_batch`, the L1
loss, the network) must memorise a few pairs with the augmentations off; one that cannot says
that its pairs carry noise (a frame that does not show what its target holds) or that the
path has a bug. This script:

1. renders `--cases` paired cases (both domains, 4 level-centred shots, 320², no
   image-intensifier warp, `real-shapes-1` spines) into bench/cache/, once;
2. trains the shipped configuration's network on exactly those shots, whole frames, no turns
   or mirrors, no identity share (`StyleTrainConfig(augment=False, identity_share=0,
   crop=320)`), from scratch;
3. scores it on the same shots (`evaluate_style`: mean absolute error of μ·L inside the
   collimated field, and that error over the target's mean).

Writes bench/results/overfit_style.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.train.style import StyleTrainConfig, train_style

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CACHE = HERE / "cache"
SEED = 2030  # not a seed of any benchmark set (777-790) or of the shipped style transfer's data
IMAGE_SIZE = 320
SHIPPED_CONFIG = HERE.parent / "x23d_ros" / "weights" / "train_style.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--out", type=Path, default=CACHE / "overfit_style_run")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = CACHE / f"overfit_style_s{SEED}_n{args.cases}_{IMAGE_SIZE}px_level_v4"
    simulate(
        SimulateConfig(
            out=data,
            cases=args.cases,
            views=4,
            seed=SEED,
            image_size=IMAGE_SIZE,
            spacing_mm=1.5,
            centring="level",
            generator="real-shapes-1",
            distortion=False,
            cases_per_shard=args.cases,
        ),
        workers=1,
    )
    shipped = json.loads(SHIPPED_CONFIG.read_text())
    cfg = StyleTrainConfig.from_dict(
        shipped
        | {
            "data": str(data),
            "out": str(args.out),
            "val": str(data),
            "steps": args.steps,
            "crop": IMAGE_SIZE,
            "identity_share": 0.0,
            "augment": False,
            "val_every": max(args.steps // 4, 1),
        }
    )
    start = time.perf_counter()
    path = train_style(cfg)
    minutes = (time.perf_counter() - start) / 60
    log = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    bundle = torch.load(path, map_location="cpu", weights_only=True)
    report = {
        "cases": args.cases,
        "shots": bundle["data"]["train_shots"],
        "seed": SEED,
        "steps": args.steps,
        "train_minutes": round(minutes, 1),
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "net": shipped["net"],
        "loss_first": sum(losses[:3]) / max(len(losses[:3]), 1),
        "loss_last": sum(losses[-3:]) / max(len(losses[-3:]), 1),
        "curve": [{"step": r["step"], **r["val"]} for r in log if "val" in r],
        "final": json.loads(bundle["metrics"]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overfit_style.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "overfit_style.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    f = r["final"]
    lines = [
        "# Overfit check: the style transfer on the pairs it trains on",
        "",
        f"{r['cases']} paired cases, {r['shots']} shots (seed {r['seed']}, `real-shapes-1`, "
        f"320², level-centred, whole bodies), {r['steps']} steps from scratch in "
        f"{r['train_minutes']} min ({r['host']}); network {r['net']}; whole frames, no turns "
        "or mirrors, no identity share. Command: `.venv/bin/python bench/overfit_style.py`.",
        "",
        "| step | MAE of μ·L (inside the field) | MAE / target mean | identity MAE |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['step']} | {c['mae']:.3f} | {c['relative_mae']:.3f} | {c['identity_mae']:.3f} |"
        for c in r["curve"]
    ]
    lines += [
        "",
        f"Loss (L1 + polarity), first / last logged: {r['loss_first']:.3f} / "
        f"{r['loss_last']:.3f}. Final MAE / target mean: {f['relative_mae']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
