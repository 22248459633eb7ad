"""Overfit check: can the fine stage's real training path fit a handful of cases?

    .venv/bin/python bench/overfit_fine.py [--steps 1200] [--cases 8] [--init default|none]

Before buying capacity, a model's own training path (its batch builder, loss and crops)
must be able to memorise a few cases with its augmentations off; one that cannot is telling
about a bug or a noise source (shared/DESIGN.md §6). This script:

1. renders `--cases` procedural cases (4 views, shots centred on a random level, 320² so
   that a crop pixel is ≤ 0.7 mm at the vertebra) into bench/cache/, once;
2. trains the fine stage on exactly those cases through `x23d train`'s own code
   (`x23d_ros.train.train`: `make_batch`, `model.inputs`, `loss_fn`), with pose jitter,
   grid-centre jitter, gain and noise off (view dropout stays: it is no label noise);
3. exports it behind the shipped coarse stage and scores the fine stage alone on the same
   cases (`x23d evaluate --placement truth`, 3 views), as the README's overfit figure.

Writes bench/results/overfit.json and .md (with the loss curve's start and end).
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
from x23d_ros.evaluate import evaluate_folder
from x23d_ros.model.network import NetConfig
from x23d_ros.pipeline import DEFAULT_WEIGHTS, Reconstructor
from x23d_ros.train import TrainConfig, export_weights, train

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CACHE = HERE / "cache"
SEED = 2020  # not a held-out seed (777–779), not a training seed of the shipped weights
IMAGE_SIZE = 320
#: The fine stage's inputs at the shots' own resolution: 160 px over 112 mm = 0.7 mm a crop
#: pixel at the vertebra's depth (1.4 mm encoder features), a 64 × 64 × 48 grid of 1.5 mm.
FINE = {
    "grid": (64, 64, 48),
    "spacing_mm": 1.5,
    "crop_mm": 112.0,
    "crop_px": 160,
    "crop_source": "native",
}


def overfit_config(data: Path, out: Path, steps: int, init: str | None) -> TrainConfig:
    """The fine stage's training run on `data` with every augmentation that moves the target
    relative to the images (pose, grid centre) or the images themselves (gain, noise) off."""
    return TrainConfig(
        data=str(data),
        out=str(out),
        val=str(data),
        stage="fine",
        steps=steps,
        lr=5e-4,
        decay_from=steps // 2,
        views=(3, 4),
        centre_jitter_mm=0.0,
        pose_jitter_deg=0.0,
        pose_jitter_mm=0.0,
        intensity_gain=(1.0, 1.0),
        noise_sd=0.0,
        image_size=IMAGE_SIZE,
        levels_per_step=2,
        val_every=max(steps // 4, 1),
        log_every=20,
        bf16=torch.backends.mkldnn.is_available() and _has_amx(),
        # The shipped fine stage's network (16 channels, 3 U-Net levels), so it can start there.
        net=NetConfig(features_2d=16, channels_3d=16, classes=1, image_norm=2.0, levels=3),
        init=init,
        **FINE,
    )


def overfit_cases(cases: int) -> Path:
    """The overfit check's first `cases` cases (seed `SEED`, 4 level-centred views of 320²),
    rendered into bench/cache/ once; their folder."""
    data = CACHE / f"overfit_s{SEED}_n{cases}_{IMAGE_SIZE}px_level_v4"
    simulate(
        SimulateConfig(
            out=data,
            cases=cases,
            views=4,
            seed=SEED,
            image_size=IMAGE_SIZE,
            spacing_mm=1.0,
            centring="level",
            cases_per_shard=4,
        ),
        workers=os.cpu_count() or 1,
    )
    return data


def _has_amx() -> bool:
    """bf16 autocast pays on the CPU only with AMX (shared/DESIGN.md §6)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--init", default="default", help="default (shipped fine stage) or none")
    parser.add_argument("--out", type=Path, default=CACHE / "overfit_run")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = overfit_cases(args.cases)
    init = (
        None
        if args.init == "none"
        else str(DEFAULT_WEIGHTS if args.init == "default" else args.init)
    )
    cfg = overfit_config(data, args.out, args.steps, init)
    start = time.perf_counter()
    run = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    weights = args.out / "overfit.pt"
    export_weights(DEFAULT_WEIGHTS, run, weights, Reconstructor(DEFAULT_WEIGHTS).image_size)
    result = evaluate_folder(
        Reconstructor(weights, device="cpu"), data, [0, 1, 2], "synthetic", placement="truth"
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    report = {
        "cases": args.cases,
        "seed": SEED,
        "steps": args.steps,
        "init": args.init,
        "train_minutes": round(minutes, 1),
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "bf16": cfg.bf16,
        "fine": {k: list(v) if isinstance(v, tuple) else v for k, v in FINE.items()},
        "loss_first_100": sum(losses[:5]) / max(len(losses[:5]), 1),
        "loss_last_100": sum(losses[-5:]) / max(len(losses[-5:]), 1),
        "validation": [{"step": r["step"], "f1": r["val"]["f1"]} for r in log if "val" in r],
        "true_boxes_3_views": {
            k: result["mean"][k] for k in ("f1", "assd_mm", "surface_2mm") if k in result["mean"]
        },
        "per_level_f1": {k: v["f1"] for k, v in result.get("per_level", {}).items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overfit.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "overfit.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    t = r["true_boxes_3_views"]
    lines = [
        "# Overfit check: the fine stage on the cases it trains on",
        "",
        f"{r['cases']} cases (seed {r['seed']}), {r['steps']} steps from `{r['init']}` in "
        f"{r['train_minutes']} min ({r['host']}, bf16 {r['bf16']}); augmentations off. "
        f"Inputs: {r['fine']}.",
        "",
        "| | value |",
        "|---|---:|",
        f"| F1, true boxes, 3 views (target ≥ 0.95) | {t['f1']:.3f} |",
        f"| ASSD (mm) | {t.get('assd_mm', float('nan')):.2f} |",
        f"| loss, first / last 100 steps | {r['loss_first_100']:.3f} / {r['loss_last_100']:.3f} |",
    ]
    lines += [
        f"| validation F1 at step {v['step']} (training grid) | {v['f1']:.3f} |"
        for v in r["validation"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
