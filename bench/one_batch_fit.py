"""One-batch fit: how fast the fine stage's network, from a random start, fits one fixed batch.

    .venv/bin/python bench/one_batch_fit.py [--steps 100] [--seed 0]

The brief's check before blaming size, on the narrower full-resolution level of run `k7`
(model card): the same batch (one case of `bench/overfit_fine.py`'s cached set, one level,
its training path's `make_batch` with every augmentation off) and the same optimiser (Adam,
lr 1e-3) for four networks that differ only at the 3D U-Net's full resolution: 16 or 8
channels, normalised in pairs (the shipped network's `GroupNorm(8, 16)`, and
`model.network.full_groups`) or one channel a group (`GroupNorm(min(8, c), c)` at 8 channels,
as `k7` was built). Same seed, so the same initial weights wherever the shapes agree.

Writes bench/results/one_batch_fit.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from overfit_fine import CACHE, overfit_cases, overfit_config
from torch import nn

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.model.network import X23DNet
from x23d_ros.train.batches import make_batch
from x23d_ros.train.loss import loss_fn

RESULTS = Path(__file__).parent / "results"
#: (label, full-resolution channels, channels a GroupNorm group there)
VARIANTS = (
    ("16 channels, in pairs (the shipped network)", 16, 2),
    ("16 channels, one a group", 16, 1),
    ("8 channels, one a group (as k7 was built)", 8, 1),
    ("8 channels, in pairs (full_groups)", 8, 2),
)


def network(channels: int, per_group: int, net) -> X23DNet:
    model = X23DNet(replace(net, channels_full=0 if channels == net.channels_3d else channels))
    d = model.decoder
    for block in (d.enc0[0], d.enc0[1], d.dec0):
        block[1] = nn.GroupNorm(channels // per_group, channels)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = overfit_cases(1)
    cfg = overfit_config(data, CACHE / "unused", args.steps, None)
    whole = make_batch(ShotDataset(data)[0], cfg, np.random.default_rng(11), train=False)
    # One level (L3, the case's middle one): a batch of five costs five times the time.
    batch = {k: v[2:3] for k, v in whole.items() if k in ("images", "P", "points", "target")}
    rows = []
    for label, channels, per_group in VARIANTS:
        torch.manual_seed(args.seed)
        model = network(channels, per_group, cfg.net).train()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses, start = [], time.perf_counter()
        for _ in range(args.steps):
            logits = model(batch["images"], batch["P"], batch["points"])
            loss = loss_fn(logits, batch["target"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        rows.append({"network": label, "losses": losses, "seconds": round(seconds, 1)})
        print(label, [round(x, 3) for x in losses[:: max(args.steps // 10, 1)]], flush=True)
    report = {
        "steps": args.steps,
        "seed": args.seed,
        "case": f"{data.name}, case 0, one level",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "one_batch_fit.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "one_batch_fit.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    half = r["steps"] // 2
    lines = [
        "# One-batch fit from a random start: the fine stage's full-resolution level",
        "",
        f"{r['case']}; augmentations off; Adam lr 1e-3; seed {r['seed']}; {r['host']}. "
        "Label loss (`train.loss.loss_fn`) at the start, half way and the end.",
        "",
        f"| full-resolution level | step 0 | step {half} | step {r['steps'] - 1} | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        x = row["losses"]
        lines.append(
            f"| {row['network']} | {x[0]:.3f} | {x[half]:.3f} | {x[-1]:.3f} | {row['seconds']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
