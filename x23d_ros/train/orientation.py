"""`x23d orientation`: train the network that reads the patient's axes from each shot
(`x23d_ros.orientation`) on synthetic-domain shards.

Every shot of every case is one sample; its target is the patient's superior and posterior
axes projected on its pixel axes (`orientation.targets`; the data engine's volumes are in the
patient's axes, so R_ref_patient is the identity). Each sample is turned by a random angle in
its plane (0–360°), mirrored half of the time, zoomed by 0.85–1.15 and shifted by up to 4 px,
and its target turned and mirrored with it: what the detector's rows do is no cue. Validation:
the axes solved from the first three shots of each validation case (`orientation.solve_axes`),
unturned, as the reconstructor will see them; the angle errors of the superior and posterior
axes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.orientation import (
    INPUT_SIZE,
    ORIENTATION_FORMAT,
    OrientationNet,
    axis_errors_deg,
    normalise,
    solve_axes,
    targets,
    transform,
)

log = logging.getLogger(__name__)


def load_shots(folders: list[Path]) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """All shots of the cases under `folders`: images (N, 1, S, S) normalised, targets (N, 4),
    and per case its poses (V, 4, 4) (cases' shots are consecutive, in order)."""
    images, target_rows, poses = [], [], []
    for folder in folders:
        dataset = ShotDataset(folder, "synthetic")
        for i in range(len(dataset)):
            item = dataset[i]
            T = item["T_ref_source"].numpy().astype(float)
            poses.append(T)
            for v in range(T.shape[0]):
                images.append(normalise(item["images"][v]))
                target_rows.append(targets(T[v], np.eye(3)))
    return (
        torch.stack(images)[:, None],
        torch.tensor(np.stack(target_rows), dtype=torch.float32),
        poses,
    )


def augment(
    images: torch.Tensor, target: torch.Tensor, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn, mirror, zoom and shift a batch (B, 1, S, S) and turn and mirror its targets
    (B, 4) with it. The content at input pixel offset p appears at output offset M⁻¹ p, where
    M = zoom · turn · mirror is what `affine_grid` samples with; so does a direction."""
    b, _, s, _ = images.shape
    theta = torch.rand(b, generator=rng) * 2 * math.pi
    mirror = torch.where(torch.rand(b, generator=rng) < 0.5, -1.0, 1.0)
    zoom = 0.85 + 0.3 * torch.rand(b, generator=rng)
    cos, sin = torch.cos(theta), torch.sin(theta)
    turn = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    flip = torch.diag_embed(torch.stack([mirror, torch.ones(b)], -1))
    M = turn @ flip  # (B, 2, 2), orthogonal
    shift = (torch.rand(b, 2, generator=rng) - 0.5) * (16.0 / s)
    out = transform(images, zoom[:, None, None] * M, shift)
    Minv = M.transpose(1, 2)
    t = target.view(b, 2, 2)  # (axis, uv)
    turned = torch.einsum("bij,bkj->bki", Minv, t).reshape(b, 4)
    return out, turned


@torch.inference_mode()
def validate(
    net: OrientationNet, images: torch.Tensor, poses: list[np.ndarray], views: int = 3
) -> dict:
    """Median and 90th-percentile angle errors (degrees) of the axes solved from the first
    `views` shots of each case, and the share of cases with the superior axis reversed
    (> 90° off)."""
    net.eval()
    answers = net(images).double().numpy()
    sup, post, start = [], [], 0
    for T in poses:
        R, _ = solve_axes(T[:views], answers[start : start + views])
        s, q = axis_errors_deg(R)
        sup.append(s)
        post.append(q)
        start += T.shape[0]
    net.train()
    sup, post = np.array(sup), np.array(post)
    return {
        "superior_median_deg": float(np.median(sup)),
        "superior_p90_deg": float(np.percentile(sup, 90)),
        "posterior_median_deg": float(np.median(post)),
        "posterior_p90_deg": float(np.percentile(post, 90)),
        "reversed": float(np.mean((sup > 90) | (post > 90))),
        "cases": len(poses),
    }


def train(
    data: list[Path], val: list[Path], out: Path, steps: int, batch: int, lr: float, seed: int
) -> dict:
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    images, target, _ = load_shots(data)
    val_images, _, val_poses = load_shots(val)
    log.info("%d training shots, %d validation cases", len(images), len(val_poses))
    net = OrientationNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    history, started, running = [], time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch,), generator=rng)
        x, y = augment(images[idx], target[idx], rng)
        loss = F.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % 250 == 0 or step == steps:
            row = {"step": step, "loss": running / (250 if step % 250 == 0 else step % 250)}
            row |= validate(net, val_images, val_poses)
            row["minutes"] = (time.perf_counter() - started) / 60
            history.append(row)
            running = 0.0
            log.info(json.dumps(row))
    bundle = {
        "format": ORIENTATION_FORMAT,
        "width": net.width,
        "input_size": INPUT_SIZE,
        "state_dict": net.state_dict(),
        "trained_on": [str(p) for p in data],
        "steps": steps,
        "validation": history[-1],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, out)
    (out.with_suffix(".json")).write_text(json.dumps(history, indent=1))
    return history[-1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training shards")
    parser.add_argument("--val", type=Path, nargs="+", required=True, help="validation shards")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = train(args.data, args.val, args.out, args.steps, args.batch, args.lr, args.seed)
    print(json.dumps(result, indent=1))
    return 0
