"""`x23d train`: resumable training of the X23D network on shards.

Stage `coarse` (this module so far): a multi-class grid (background, L1..L5) centred at the
isocentre estimated from the shots' principal rays, as the Reconstructor will place it.
Each step draws a case, a random subset of its shots (view dropout), and augments:
intensity (gain, gamma), noise, and a small pose error added to each P (calibration error).

The run folder holds `config.json`, `checkpoint.pt` (model, optimiser, step, RNG state; written
atomically every `checkpoint_every` steps), `log.jsonl` (one line per logged step) and
`curve.png`. Starting again with the same folder continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from x23d_ros import geometry
from x23d_ros.anatomy import LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.metrics import level_metrics, summarise
from x23d_ros.model.network import NetConfig, X23DNet
from x23d_ros.model.unproject import voxel_centres

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    domain: str = "synthetic"
    steps: int = 2000
    lr: float = 2e-3
    grid: int = 48
    spacing_mm: float = 4.0
    views: tuple[int, int] = (2, 4)  # shots drawn per step, inclusive
    centre_jitter_mm: float = 10.0
    pose_jitter_deg: float = 0.5
    pose_jitter_mm: float = 1.0
    intensity_gain: tuple[float, float] = (0.8, 1.25)
    noise_sd: float = 0.02
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 200
    seed: int = 0
    net: NetConfig = field(
        default_factory=lambda: NetConfig(classes=len(LEVELS) + 1, image_norm=2.0)
    )

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        raw["net"] = NetConfig(**raw.get("net", {}))
        for key in ("views", "intensity_gain"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def device_auto() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def grid_labels(labels: np.ndarray, affine: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """Nearest label (X, Y, Z) at each grid point (X, Y, Z, 3); 0 outside the label volume."""
    ijk = (points_mm.reshape(-1, 3) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    out = ndimage.map_coordinates(labels, ijk.T, order=0, mode="constant", cval=0)
    return out.reshape(points_mm.shape[:3]).astype(np.int64)


def isocentre_of(T_ref_source: np.ndarray) -> np.ndarray:
    """Point (3,) closest to the shots' principal rays (a point ahead of them if parallel)."""
    rays = [geometry.principal_ray(T) for T in T_ref_source]
    origins, directions = (np.stack(x) for x in zip(*rays, strict=True))
    try:
        return geometry.isocentre(origins, directions)
    except geometry.GeometryError:
        return origins.mean(0) + 600.0 * directions.mean(0)


def _jittered_P(
    K: np.ndarray, T: np.ndarray, rng: np.random.Generator, deg: float, mm: float
) -> np.ndarray:
    """P of a pose perturbed by a small random rotation and translation (calibration error)."""
    R = geometry.rotation_matrix(rng.normal(size=3), np.radians(rng.normal(0.0, deg)))
    T = T.copy()
    T[:3, :3] = R @ T[:3, :3]
    T[:3, 3] += rng.normal(0.0, mm, 3)
    return geometry.projection_matrix(K, T)


def make_batch(
    item: dict, cfg: TrainConfig, rng: np.random.Generator, train: bool
) -> dict[str, torch.Tensor]:
    """One sample: images (1, V, H, W), P (1, V, 3, 4), grid points, target (1, X, Y, Z)."""
    n_all = item["images"].shape[0]
    if train:
        n = int(rng.integers(min(cfg.views[0], n_all), min(cfg.views[1], n_all) + 1))
        pick = np.sort(rng.choice(n_all, size=n, replace=False))
    else:
        pick = np.arange(min(cfg.views[1], n_all))
    K, T = item["K"].numpy()[pick], item["T_ref_source"].numpy()[pick]
    images = item["images"][pick].clone()
    if train:
        P = np.stack(
            [
                _jittered_P(k, t, rng, cfg.pose_jitter_deg, cfg.pose_jitter_mm)
                for k, t in zip(K, T, strict=True)
            ]
        )
        gain = torch.tensor(
            rng.uniform(*cfg.intensity_gain, size=(len(pick), 1, 1)), dtype=images.dtype
        )
        images = images * gain + cfg.noise_sd * images.abs().mean() * torch.from_numpy(
            rng.standard_normal(images.shape).astype(np.float32)
        )
    else:
        P = np.stack([geometry.projection_matrix(k, t) for k, t in zip(K, T, strict=True)])
    centre = isocentre_of(T)
    if train:
        centre = centre + rng.normal(0.0, cfg.centre_jitter_mm, 3)
    points = voxel_centres(torch.tensor(centre)[None], cfg.grid, cfg.spacing_mm)
    target = grid_labels(item["labels"].numpy(), item["affine"].numpy(), points[0].numpy())
    return {
        "images": images[None].float(),
        "P": torch.tensor(P, dtype=torch.float32)[None],
        "points": points.float(),
        "target": torch.from_numpy(target)[None],
    }


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the vertebra classes (fp32)."""
    logits = logits.float()
    ce = torch.nn.functional.cross_entropy(logits, target)
    prob = logits.softmax(1)[:, 1:]
    onehot = (
        torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    )
    dims = (0, 2, 3, 4)
    dice = (2 * (prob * onehot).sum(dims) + 1) / (prob.sum(dims) + onehot.sum(dims) + 1)
    return ce + (1 - dice).mean()


def validate(model: X23DNet, dataset: ShotDataset, cfg: TrainConfig, device: torch.device) -> dict:
    model.eval()
    cases = []
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = make_batch(dataset[i], cfg, rng, train=False)
            logits = model(
                batch["images"].to(device), batch["P"].to(device), batch["points"].to(device)
            )
            pred = logits.argmax(1)[0].cpu().numpy()
            cases.append(level_metrics(pred, batch["target"][0].numpy(), cfg.spacing_mm))
    model.train()
    return summarise(cases)


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) training; return the run folder."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    device = device_auto()
    torch.manual_seed(cfg.seed)
    model = X23DNet(cfg.net).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    step = 0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        log.info("resuming %s at step %d", out, step)
    dataset = ShotDataset(cfg.data, cfg.domain)
    val = ShotDataset(cfg.val, cfg.domain) if cfg.val else None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    start = time.perf_counter()
    with open(out / "log.jsonl", "a") as log_file:
        while step < cfg.steps:
            batch = make_batch(dataset[int(rng.integers(len(dataset)))], cfg, rng, train=True)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
            with autocast:
                logits = model(
                    batch["images"].to(device), batch["P"].to(device), batch["points"].to(device)
                )
            loss = loss_fn(logits, batch["target"].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            bar.update()
            record: dict = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                record = {**record, "step": step, "val": validate(model, val, cfg, device)["mean"]}
            if record:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save(checkpoint, model, optimiser, step, rng)
    bar.close()
    plot_curve(out / "log.jsonl", out / "curve.png")
    return out


def _save(path: Path, model, optimiser, step: int, rng: np.random.Generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "rng": json.dumps(rng.bit_generator.state),
            "net": model.config.as_dict(),
        },
        tmp,
    )
    os.replace(tmp, path)


def plot_curve(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    vals = [(r["step"], r["val"]["f1"]) for r in rows if "val" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot(*zip(*losses, strict=True), label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals, strict=True), "o-", color="tab:green", label="validation F1")
        ax2.set_ylabel("F1")
        ax2.set_ylim(0, 1)
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder of training shards")
    parser.add_argument(
        "--out", required=True, help="run folder (continues if it has a checkpoint)"
    )
    parser.add_argument("--val", help="folder of validation shards")
    parser.add_argument("--config", type=Path, help="JSON TrainConfig overriding the defaults")
    parser.add_argument("--steps", type=int, help="total steps")
    parser.add_argument("--domain", choices=("synthetic", "realistic"))


def run(args: argparse.Namespace) -> int:
    base = {"data": args.data, "out": args.out, "val": args.val}
    if args.config:
        cfg = TrainConfig.from_json(json.dumps({**json.loads(args.config.read_text()), **base}))
    else:
        cfg = TrainConfig(**base)
    if args.steps:
        cfg.steps = args.steps
    if args.domain:
        cfg.domain = args.domain
    train(cfg)
    return 0
