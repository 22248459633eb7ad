"""How much label noise each size of pose-error augmentation puts into the fine stage's batches.

    .venv/bin/python bench/pose_noise.py --weights W --data D [--draws 4]

A fixed network (weights W, e.g. the overfit check's) scores its own training batches
(`x23d_ros.train.make_batch`, the fine stage, true boxes, 3 views, no other augmentation)
with three pose errors: none; a tracked C-arm's (the default, 0.65° about the anatomy and
0.3 mm); and the one weights before trained with (0.5° about the source and 1 mm: 3.1 mm per
axis at the isocentre). A network that has fitted the cases scores them well without pose
error; what each size takes away is the noise it adds against the fixed labels. The
Monte-Carlo displacement of the anatomy (a point 50 mm from the isocentre) is reported beside.

Writes bench/results/pose_noise.json and .md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from x23d_ros import geometry
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.metrics import vertebra_metrics
from x23d_ros.pipeline import Reconstructor
from x23d_ros.train import TrainConfig, make_batch
from x23d_ros.train.batches import jittered_pose
from x23d_ros.train.loss import loss_fn

RESULTS = Path(__file__).parent / "results"


SETTINGS = {
    "none": (0.0, 0.0, "anatomy"),
    "tracked C-arm (0.65° about the anatomy, 0.3 mm)": (0.65, 0.3, "anatomy"),
    "before (0.5° about the source, 1 mm)": (0.5, 1.0, "source"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--draws", type=int, default=4)
    args = parser.parse_args()
    reconstructor = Reconstructor(args.weights, device="cpu")
    fine = reconstructor.fine_cfg
    base = TrainConfig(
        data=args.data,
        out="-",
        stage="fine",
        views=(3, 3),
        grid=tuple(fine["grid"]) if not isinstance(fine["grid"], int) else fine["grid"],
        spacing_mm=fine["spacing_mm"],
        crop_mm=fine["crop_mm"],
        crop_px=fine["crop_px"],
        crop_source=fine.get("crop_source", "working"),
        image_size=reconstructor.image_size,
        centre_jitter_mm=0.0,
        intensity_gain=(1.0, 1.0),
        noise_sd=0.0,
        levels_per_step=5,
        net=reconstructor.fine.config,
    )
    dataset = ShotDataset(args.data)
    out = {}
    for name, (deg, mm, pivot) in SETTINGS.items():
        cfg = replace(base, pose_jitter_deg=deg, pose_jitter_mm=mm, pose_jitter_pivot=pivot)
        rng = np.random.default_rng(0)
        losses, f1s = [], []
        with torch.inference_mode():
            for _ in range(args.draws):
                for i in range(len(dataset)):
                    batch = make_batch(dataset[i], cfg, rng, train=True)
                    logits = reconstructor.fine(batch["images"], batch["P"], batch["points"])
                    losses.append(float(loss_fn(logits, batch["target"])))
                    for p, t in zip(logits[:, 0] > 0, batch["target"], strict=True):
                        f1s.append(vertebra_metrics(p.numpy(), t.numpy(), cfg.spacing_mm)["f1"])
        rng = np.random.default_rng(1)
        T = geometry.look_at(np.array([0.0, -600.0, 0.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
        point = np.array([30.0, 0.0, 40.0, 1.0])
        moved = [
            np.linalg.norm(
                jittered_pose(T, rng, deg, mm, T[:3, 3] if pivot == "source" else np.zeros(3))
                @ np.linalg.inv(T)
                @ point
                - point
            )
            for _ in range(2000)
        ]
        out[name] = {
            "loss": float(np.mean(losses)),
            "f1": float(np.mean(f1s)),
            "anatomy_moved_rms_mm": float(np.sqrt(np.mean(np.square(moved)))),
        }
        print(name, out[name], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pose_noise.json").write_text(
        json.dumps(
            {"weights": args.weights, "data": args.data, "draws": args.draws, "settings": out},
            indent=2,
        )
    )
    lines = [
        "# Pose-error augmentation: the label noise it adds",
        "",
        f"Fine stage of `{Path(args.weights).name}` on its own training cases "
        f"(`{Path(args.data).name}`), true boxes, 3 views, {args.draws} draws per case; "
        "grid F1 and loss of `make_batch`'s batches.",
        "",
        "| pose error | anatomy 50 mm from the isocentre moves (RMS) | loss | F1 |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['anatomy_moved_rms_mm']:.2f} mm | {v['loss']:.3f} | {v['f1']:.3f} |"
        for k, v in out.items()
    ]
    (RESULTS / "pose_noise.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
