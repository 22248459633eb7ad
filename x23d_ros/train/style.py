"""`x23d style`: train the fluoroscopy → synthetic style transfer (`model.style.StyleNet`) on
paired shots, resumably.

Pairs come from shards that hold both domains of the same shots (`x23d simulate` without
`--synthetic-only`, or a site's own paired data written through `data.shards.write_case`: real
fluoroscopy in `realistic`, the DRRs of the same patient's CT from the same poses in
`synthetic`). Shots rendered with image-intensifier distortion are not pixel-aligned with
their DRRs; render the pairs with `--no-distortion` (the listener undoes a C-arm's distortion
before the style transfer sees a shot).

A training sample is a random crop of one pair, turned by a multiple of 90° and mirrored at
random (`augment`); with probability `identity_share` the input is the synthetic shot
itself (the network then learns to leave the synthetic domain alone). The U-Net learns from
frames turned bone-bright by the shard's own inversion flag; the bone-dark classifier learns
that flag (cross-entropy, weight `polarity_weight`). The target is the synthetic shot inside the
collimated field (known from the shard's effects; the whole image without them) and 0 outside
it. Loss: L1 on μ·L, plus `edge_weight` × L1 on its differences between neighbouring pixels
(`style_loss`; off in the shipped configuration). The run folder holds config.json,
checkpoint.pt (atomic), log.jsonl and, at the end, `style.pt`, the file the reconstructor loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from x23d_ros.data.shards import list_cases
from x23d_ros.model.style import STYLE_FORMAT, StyleConfig, StyleNet
from x23d_ros.train.export import save_atomically
from x23d_ros.train.loop import use_bf16
from x23d_ros.train.style_validation import (
    best_so_far,
    check_validation_through_reconstruction,
    evaluate_style,
    evaluate_through_reconstruction,
)
from x23d_ros.xray.realistic import field_mask

log = logging.getLogger(__name__)


@dataclass
class StyleTrainConfig:
    data: str
    out: str
    val: str | None = None
    net: StyleConfig = field(default_factory=StyleConfig)
    steps: int = 3000
    batch: int = 8
    crop: int = 160
    lr: float = 1e-3
    lr_final: float = 1e-5
    identity_share: float = 0.15
    augment: bool = True  # turns by 90° and mirroring (off: the overfit check)
    polarity_weight: float = 0.1  # the bone-dark classifier's cross-entropy in the loss
    # L1 on the differences between neighbouring pixels, beside L1 on the pixels: a network
    # that blurs an edge it is unsure of pays for the lost edge, not only for its half-height.
    edge_weight: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 20
    val_every: int = 250
    bf16: bool = False  # autocast on the CPU (AMX hosts)
    # Reconstruction weights to validate through ("default", a file, or None): each validation
    # also reconstructs the validation cases' fluoroscopy (views 0-2) through the network being
    # trained into these weights, the whole product (coarse stage, fine stage, gate), and logs
    # their F1 (`val.recon`); the run keeps the style transfer of the best one as
    # `style_best.pt`. Pixel error does not rank style transfers for the reconstruction.
    val_weights: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> StyleTrainConfig:
        d = dict(d)
        d["net"] = StyleConfig(**d.get("net", {}))
        return cls(**d)


class PairedShots:
    """Every shot of the shards under `root` that has both domains: (N, H, W) float32 arrays
    `realistic` ([0, 1]), `synthetic` (μ·L, 0 outside the collimated field), `field` (bool);
    all in memory (a 320² pair is under a megabyte)."""

    def __init__(self, root: str | Path) -> None:
        cases = list_cases(Path(root))
        if not cases:
            raise FileNotFoundError(f"no shards (*.h5) under {root}")
        real, syn, fields, inverted, sizes = [], [], [], [], set()
        for path, name in cases:
            with h5py.File(path, "r") as h5:
                g = h5[name]
                if "realistic" not in g:
                    raise KeyError(f"{path} case {name} holds no realistic shots: no pairs")
                r = g["realistic"][()].astype(np.float32) / 255.0
                s = g["synthetic"][()].astype(np.float32)
                effects = [json.loads(e) for e in g["effects"][()]] if "effects" in g else []
            for v in range(len(r)):
                fx = effects[v] if v < len(effects) else {}
                mask = field_mask(fx, r[v].shape)
                inverted.append(bool(fx.get("invert", False)))
                real.append(r[v])
                syn.append(np.where(mask, s[v], 0.0).astype(np.float32))
                fields.append(mask)
                sizes.add(r[v].shape)
        if len(sizes) != 1:
            raise ValueError(f"{root}: shots of several sizes {sorted(sizes)}; use one")
        self.realistic, self.synthetic = np.stack(real), np.stack(syn)
        self.field = np.stack(fields)
        # Whether each display frame is shown bone dark (the C-arm's inversion); from the
        # effects, False without them.
        self.inverted = np.array(inverted, bool)
        self.size = sizes.pop()
        self.cases = len(cases)

    def __len__(self) -> int:
        return len(self.realistic)


def sample_batch(
    pairs: PairedShots, cfg: StyleTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, crop, crop) inputs and targets, and (B,) whether each input shows bone dark
    (see the module's docstring)."""
    h, w = pairs.size
    c = min(cfg.crop, h, w)
    xs, ys, dark = [], [], []
    for _ in range(cfg.batch):
        i = int(rng.integers(len(pairs)))
        top, left = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        window = (slice(top, top + c), slice(left, left + c))
        target = pairs.synthetic[i][window]
        if rng.random() < cfg.identity_share:
            x, y = target, target
            dark.append(False)
        else:
            x, y = pairs.realistic[i][window], target
            dark.append(bool(pairs.inverted[i]))
        if cfg.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            x, y = np.rot90(x, k), np.rot90(y, k)
            if flip:
                x, y = x[:, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    x, y = torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]
    return x, y, torch.tensor(dark)


def style_loss(pred: torch.Tensor, target: torch.Tensor, edge_weight: float = 0.0) -> torch.Tensor:
    """L1 between `pred` and `target` (B, 1, H, W), plus `edge_weight` × L1 between their
    horizontal and vertical neighbour differences (each averaged over its pixels)."""
    d = pred - target
    loss = d.abs().mean()
    if edge_weight:
        loss = loss + edge_weight * (
            (d[..., :, 1:] - d[..., :, :-1]).abs().mean()
            + (d[..., 1:, :] - d[..., :-1, :]).abs().mean()
        )
    return loss


def _lr(cfg: StyleTrainConfig, step: int) -> float:
    """Cosine from `lr` to `lr_final` over the run."""
    t = min(step / max(cfg.steps, 1), 1.0)
    return float(cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + np.cos(np.pi * t)))


def train_style(cfg: StyleTrainConfig) -> Path:
    """Run (or continue) a style-transfer training; return the path of the `style.pt` written."""
    out = Path(cfg.out)
    if cfg.val_weights:
        check_validation_through_reconstruction(cfg.val_weights, cfg.val)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    torch.manual_seed(cfg.seed)
    net = StyleNet(cfg.net)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    step = 0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        log.info("resuming %s at step %d", out, step)
    pairs = PairedShots(cfg.data)
    val = PairedShots(cfg.val) if cfg.val else None
    best = best_so_far(out / "style_best.pt", cfg.val_weights, cfg.val)
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, desc="style", unit="step")
    bf16 = use_bf16(cfg.bf16, torch.device("cpu"))
    with open(out / "log.jsonl", "a") as log_file:
        while step < cfg.steps:
            x, y, dark = sample_batch(pairs, cfg, rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pred = net(x, bone_dark=dark)  # the U-Net learns from the true polarity
                logit = net.bone_dark_logit(x)
            polarity = F.binary_cross_entropy_with_logits(logit.float(), dark.float())
            loss = style_loss(pred.float(), y, cfg.edge_weight) + cfg.polarity_weight * polarity
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = _lr(cfg, step)
            optimiser.step()
            step += 1
            bar.update()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save(checkpoint, net, optimiser, step, rng)
            record: dict = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "lr": _lr(cfg, step - 1),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                record = {**record, "step": step, "val": evaluate_style(net, val)}
                if cfg.val_weights:
                    best = _validate_through_reconstruction(cfg, net, pairs, step, record, best)
            if record:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
    bar.close()
    metrics = evaluate_style(net, val) if val is not None else {}
    path = out / "style.pt"
    _write_style(path, cfg, net, pairs, step, metrics)
    return path


def _write_style(
    path: Path, cfg: StyleTrainConfig, net: StyleNet, pairs: PairedShots, step: int, metrics: dict
) -> None:
    """The file `StyleTransfer` loads (written whole, then moved into place)."""
    save_atomically(
        {
            "format": STYLE_FORMAT,
            "kind": "style",
            "from_domain": "realistic",
            "to_domain": "synthetic",
            "net": cfg.net.as_dict(),
            "state_dict": net.state_dict(),
            "trained_image_size": int(pairs.size[0]),
            "data": {"train": cfg.data, "train_shots": len(pairs), "val": cfg.val},
            "steps": step,
            "metrics": json.dumps(metrics),
            "validated_through": json.dumps({"weights": cfg.val_weights, "val": cfg.val}),
        },
        path,
    )


def _validate_through_reconstruction(
    cfg: StyleTrainConfig, net: StyleNet, pairs: PairedShots, step: int, record: dict, best: float
) -> float:
    """Adds `val.recon` to `record`; writes `style_best.pt` when its F1 beats `best`; returns
    the best F1 so far."""
    out = Path(cfg.out)
    candidate = out / "style_val.pt"
    _write_style(candidate, cfg, net, pairs, step, record["val"])
    try:
        recon = evaluate_through_reconstruction(candidate, str(cfg.val_weights), str(cfg.val))
    finally:
        candidate.unlink()
    record["val"]["recon"] = recon
    if recon["f1"] > best:  # the kept file carries the score it was kept for
        _write_style(out / "style_best.pt", cfg, net, pairs, step, record["val"])
        return recon["f1"]
    return best


def _save(path: Path, net, optimiser, step: int, rng: np.random.Generator) -> None:
    save_atomically(
        {
            "model": net.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "rng": json.dumps(rng.bit_generator.state),
        },
        path,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder of paired shards (both domains)")
    parser.add_argument("--out", required=True, help="run folder (continues from its checkpoint)")
    parser.add_argument("--val", help="folder of paired validation shards")
    parser.add_argument("--config", type=Path, help="JSON StyleTrainConfig overriding defaults")
    parser.add_argument("--steps", type=int, help="total steps")
    parser.add_argument(
        "--val-weights",
        help="reconstruction weights (default, or a file) to validate through: logs the F1 of "
        "the validation cases' fluoroscopy reconstructed through the network, keeps the best "
        "as style_best.pt",
    )


def run(args: argparse.Namespace) -> int:
    base = json.loads(args.config.read_text()) if args.config else {}
    base.update({"data": args.data, "out": args.out})
    if args.val is not None:
        base["val"] = args.val
    if args.steps:
        base["steps"] = args.steps
    if args.val_weights:
        base["val_weights"] = args.val_weights
    path = train_style(StyleTrainConfig.from_dict(base))
    print(path)
    return 0


__all__ = [
    "PairedShots",
    "StyleTrainConfig",
    "add_arguments",
    "run",
    "sample_batch",
    "style_loss",
    "train_style",
]
