"""`x23d train`: resumable training of the X23D network on shards.

Two stages, as X23D (Jecklin et al. 2022) and shared/DESIGN.md §1:

- `coarse`: a multi-class grid (background, L1..L5) centred at the isocentre estimated from the
  shots' principal rays, as the Reconstructor places it; it localises the levels.
- `fine`: per vertebra, a grid centred on the vertebra's bounding box (plus a random offset
  the size of the coarse stage's error), fed by crops of each view around the vertebra's
  projection with P adjusted by the crop; binary occupancy of that vertebra. Several levels
  of one case form one batch, as at inference.

Each step draws a case, a random subset of its shots (view dropout), and augments:
intensity (gain), noise, and a small pose error added to each P (calibration error).

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
from x23d_ros.metrics import level_metrics, summarise, vertebra_metrics
from x23d_ros.model.crops import crop_views
from x23d_ros.model.grow import grow_state
from x23d_ros.model.network import NetConfig, X23DNet
from x23d_ros.model.unproject import voxel_centres
from x23d_ros.surface import box_centre

log = logging.getLogger(__name__)
LEVEL_NAMES = list(LEVELS)

STAGES = ("coarse", "fine")


def default_net(stage: str) -> NetConfig:
    """The network of a stage: L1..L5 classes (coarse) or one vertebra's occupancy (fine)."""
    return NetConfig(classes=1 if stage == "fine" else len(LEVELS) + 1, image_norm=2.0)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    stage: str = "coarse"  # coarse | fine
    domain: str = "synthetic"
    steps: int = 2000
    lr: float = 2e-3
    # Learning rate: constant, then from step `decay_from` (if set) a cosine down to `lr_min`
    # at `steps` (warmup-free "stable, then decay" schedule).
    decay_from: int | None = None
    lr_min: float = 1e-5
    grid: int = 48
    spacing_mm: float = 4.0
    views: tuple[int, int] = (2, 4)  # shots drawn per step, inclusive
    centre_jitter_mm: float = 10.0
    # With probability `centre_jitter_wide_p`, a grid's centre is jittered by
    # `centre_jitter_wide_mm` (sd per axis) instead: heavier tails, so that the network finds
    # the vertebra in the images rather than trusting the grid's centre (a vertebra whose
    # proportions differ from the training population otherwise lands where the grid puts it).
    centre_jitter_wide_mm: float = 0.0
    centre_jitter_wide_p: float = 0.0
    pose_jitter_deg: float = 0.5
    pose_jitter_mm: float = 1.0
    intensity_gain: tuple[float, float] = (0.8, 1.25)
    noise_sd: float = 0.02
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 200
    seed: int = 0
    crop_mm: float = 120.0  # fine stage: side of each view's crop at the vertebra's depth
    crop_px: int = 128  # fine stage: crops are resampled to crop_px²
    levels_per_step: int = 2  # fine stage: vertebrae of one case per step
    net: NetConfig = field(default_factory=lambda: default_net("coarse"))
    # Where a new run starts from (no checkpoint yet): a run's checkpoint.pt, or a weights
    # file (its network of this stage); grown to `net` if that is larger (`model.grow`).
    init: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "fine" and self.net.classes != 1:
            raise ValueError("the fine stage predicts one vertebra's occupancy: net.classes = 1")
        if self.stage == "coarse" and self.net.classes != len(LEVELS) + 1:
            raise ValueError(f"the coarse stage has {len(LEVELS) + 1} classes (background, L1..L5)")

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        net = default_net(raw.get("stage", "coarse")).as_dict()
        raw["net"] = NetConfig(**{**net, **raw.get("net", {})})
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


def _jittered_P(
    K: np.ndarray, T: np.ndarray, rng: np.random.Generator, deg: float, mm: float
) -> np.ndarray:
    """P of a pose perturbed by a small random rotation and translation (calibration error)."""
    R = geometry.rotation_matrix(rng.normal(size=3), np.radians(rng.normal(0.0, deg)))
    T = T.copy()
    T[:3, :3] = R @ T[:3, :3]
    T[:3, 3] += rng.normal(0.0, mm, 3)
    return geometry.projection_matrix(K, T)


def draw_views(n_all: int, views: tuple[int, int], rng: np.random.Generator) -> list[int]:
    """A random subset of a case's `n_all` shots, its size drawn from `views` (inclusive,
    capped at n_all), in ascending order (view dropout)."""
    n = int(rng.integers(min(views[0], n_all), min(views[1], n_all) + 1))
    return sorted(rng.choice(n_all, size=n, replace=False).tolist())


def _pick_views(
    item: dict, cfg: TrainConfig, rng: np.random.Generator, train: bool
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images (V, H, W), P (V, 3, 4) and T (V, 4, 4) of the shots used for one step."""
    n_all = item["images"].shape[0]
    if train:
        pick = np.array(draw_views(n_all, cfg.views, rng))
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
    return images, P, T


def centre_offset(cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """The training jitter (3,) mm of a grid's centre: normal with sd `centre_jitter_mm`, or
    `centre_jitter_wide_mm` with probability `centre_jitter_wide_p`."""
    wide = cfg.centre_jitter_wide_p > 0 and rng.random() < cfg.centre_jitter_wide_p
    return rng.normal(0.0, cfg.centre_jitter_wide_mm if wide else cfg.centre_jitter_mm, 3)


def make_batch(
    item: dict, cfg: TrainConfig, rng: np.random.Generator, train: bool
) -> dict[str, torch.Tensor]:
    """One step's input: images (B, V, H, W), P (B, V, 3, 4), grid points (B, X, Y, Z, 3),
    target (B, X, Y, Z): class indices (coarse) or 0/1 occupancy (fine, one row per level);
    fine batches also carry `levels` (B,) indices 1..5."""
    images, P, T = _pick_views(item, cfg, rng, train)
    if cfg.stage == "fine":
        return _fine_batch(item, cfg, rng, train, images, P)
    centre = geometry.isocentre_of_poses(T)
    if train:
        centre = centre + centre_offset(cfg, rng)
    points = voxel_centres(torch.tensor(centre)[None], cfg.grid, cfg.spacing_mm)
    target = grid_labels(item["labels"].numpy(), item["affine"].numpy(), points[0].numpy())
    return {
        "images": images[None].float(),
        "P": torch.tensor(P, dtype=torch.float32)[None],
        "points": points.float(),
        "target": torch.from_numpy(target)[None],
    }


def _fine_batch(
    item: dict,
    cfg: TrainConfig,
    rng: np.random.Generator,
    train: bool,
    images: torch.Tensor,
    P: np.ndarray,
) -> dict[str, torch.Tensor]:
    labels, affine = item["labels"].numpy(), item["affine"].numpy()
    present = [i for i in range(len(LEVELS)) if (labels == i + 1).any()]
    if train:
        k = min(cfg.levels_per_step, len(present))
        present = sorted(rng.choice(present, size=k, replace=False).tolist())
    P_t = torch.tensor(P, dtype=torch.float64)
    out: dict[str, list] = {"images": [], "P": [], "points": [], "target": [], "levels": []}
    for i in present:
        centre = box_centre(labels == i + 1, affine)
        if train:
            centre = centre + centre_offset(cfg, rng)
        centre_t = torch.tensor(centre, dtype=torch.float64)
        crops, P_crop = crop_views(images.double(), P_t, centre_t, cfg.crop_mm, cfg.crop_px)
        points = voxel_centres(centre_t[None], cfg.grid, cfg.spacing_mm)
        on_grid = grid_labels(labels, affine, points[0].numpy())
        out["images"].append(crops.float())
        out["P"].append(P_crop.float())
        out["points"].append(points[0].float())
        out["target"].append(torch.from_numpy((on_grid == i + 1).astype(np.int64)))
        out["levels"].append(i + 1)
    batch = {key: torch.stack(value) for key, value in out.items() if key != "levels"}
    batch["levels"] = torch.tensor(out["levels"])
    return batch


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the vertebra classes (fp32); with one output channel,
    binary cross-entropy plus soft Dice of the occupancy."""
    logits = logits.float()
    if logits.shape[1] == 1:
        logit = logits[:, 0]
        occupied = target.float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, occupied)
        prob = logit.sigmoid()
        dims = (1, 2, 3)
        dice = (2 * (prob * occupied).sum(dims) + 1) / (prob.sum(dims) + occupied.sum(dims) + 1)
        return bce + (1 - dice).mean()
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
            if cfg.stage == "fine":
                pred = (logits[:, 0] > 0).cpu().numpy()
                target = batch["target"].numpy()
                cases.append(
                    {
                        LEVEL_NAMES[int(level) - 1]: vertebra_metrics(p, t, cfg.spacing_mm)
                        for p, t, level in zip(pred, target, batch["levels"], strict=True)
                        if t.any()
                    }
                )
            else:
                pred = logits.argmax(1)[0].cpu().numpy()
                cases.append(level_metrics(pred, batch["target"][0].numpy(), cfg.spacing_mm))
    model.train()
    return summarise(cases)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based) under `cfg`'s schedule."""
    if cfg.decay_from is None or step < cfg.decay_from:
        return cfg.lr
    span = max(cfg.steps - cfg.decay_from, 1)
    t = min((step - cfg.decay_from) / span, 1.0)
    return float(cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + np.cos(np.pi * t)))


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) under `torchrun`; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) training; return the run folder.

    Under `torchrun --nproc_per_node N` (N GPUs, or N CPU processes with gloo) the model is
    wrapped in DistributedDataParallel: each rank draws its own cases, gradients are averaged,
    and rank 0 alone writes the log and the checkpoint (which holds every rank's RNG state).
    """
    rank, local_rank, world = _distributed()
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
    device = device_auto()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    torch.manual_seed(cfg.seed)
    model = X23DNet(cfg.net).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed if world == 1 else [cfg.seed, rank])
    step = 0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        rngs = json.loads(state.get("rng_ranks", "null")) or [state["rng"]]
        if len(rngs) == world:
            rng.bit_generator.state = json.loads(rngs[rank])
        log.info("resuming %s at step %d", out, step)
    elif cfg.init:
        model.load_state_dict(initial_state(Path(cfg.init), cfg))
        log.info("starting %s from %s", out, cfg.init)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None
        )
    dataset = ShotDataset(cfg.data, cfg.domain)
    val = ShotDataset(cfg.val, cfg.domain) if cfg.val and rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=rank != 0)
    start = time.perf_counter()
    log_file = open(out / "log.jsonl", "a") if rank == 0 else None  # noqa: SIM115
    try:
        while step < cfg.steps:
            batch = make_batch(dataset[int(rng.integers(len(dataset)))], cfg, rng, train=True)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
            with autocast:
                logits = net(
                    batch["images"].to(device), batch["P"].to(device), batch["points"].to(device)
                )
            loss = loss_fn(logits, batch["target"].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(cfg, step)
            optimiser.step()
            step += 1
            bar.update()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                rngs = [json.dumps(rng.bit_generator.state)]
                if world > 1:
                    import torch.distributed as dist

                    rngs = [None] * world
                    dist.all_gather_object(rngs, json.dumps(rng.bit_generator.state))
                if rank == 0:
                    _save(checkpoint, model, optimiser, step, rngs)
            if log_file is None:
                continue
            record: dict = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "lr": learning_rate(cfg, step - 1),
                    "seconds": round(time.perf_counter() - start, 1),
                    "world_size": world,
                }
            if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                record = {**record, "step": step, "val": validate(model, val, cfg, device)["mean"]}
            if record:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
    finally:
        if log_file is not None:
            log_file.close()
    bar.close()
    if rank == 0:
        plot_curve(out / "log.jsonl", out / "curve.png")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return out


def initial_state(path: Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a new run of `cfg` starts from: those at `path` (a run's checkpoint.pt, or a
    weights file's network of `cfg.stage`), grown to `cfg.net` when they are smaller."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in source:
        state, net = source["model"], source["net"]
    elif cfg.stage in source:
        state, net = source[cfg.stage]["state_dict"], source[cfg.stage]["net"]
    else:
        raise ValueError(f"{path} is neither a checkpoint nor weights with a {cfg.stage} stage")
    old = NetConfig(**net)
    if old == cfg.net:
        return state
    return grow_state(state, old, cfg.net, torch.Generator().manual_seed(cfg.seed))


def _save(path: Path, model, optimiser, step: int, rngs: list[str]) -> None:
    """Write the checkpoint atomically (temporary file, then rename)."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "rng": rngs[0],
            "rng_ranks": json.dumps(rngs),
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
    parser.add_argument("--stage", choices=STAGES, help="which network to train")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the --config file's, with --data, --out and (when given) --val,
    --steps, --domain from the command line; a config file's `val` stands when --val is not
    given (before, it was silently dropped and the run went without validation)."""
    base = {"data": args.data, "out": args.out}
    if args.val is not None or not args.config:
        base["val"] = args.val
    if args.config:
        cfg = TrainConfig.from_json(json.dumps({**json.loads(args.config.read_text()), **base}))
    else:
        stage = args.stage or "coarse"
        cfg = TrainConfig(**base, stage=stage, net=default_net(stage))
    if args.steps:
        cfg.steps = args.steps
    if args.domain:
        cfg.domain = args.domain
    if args.stage and args.stage != cfg.stage:
        raise SystemExit(f"--stage {args.stage} contradicts the config's stage {cfg.stage!r}")
    return cfg


def run(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0


def export_weights(
    coarse_run: Path, fine_run: Path, out: Path, image_size: int, note: str = ""
) -> dict:
    """Bundle the two stages' trained networks into one weights file for `Reconstructor`.

    The file holds tensors, numbers and strings only (it loads with `weights_only=True`):
    per stage the network's sizes, its state, the grid it was trained on and how long it
    trained, plus the working image size, the domain and where the weights came from.
    """
    bundle: dict = {"format": 1, "image_size": int(image_size), "note": note}
    runs = []
    for stage, path in (("coarse", Path(coarse_run)), ("fine", Path(fine_run))):
        if not path.is_file():
            runs.append((stage, path))
            continue
        # A weights file: keep its network of this stage as it is (the coarse stage with its
        # calibration), so that a retrained stage ships with the other one it runs with.
        source = torch.load(path, map_location="cpu", weights_only=True)
        if int(source["image_size"]) != int(image_size):
            raise ValueError(f"{path} works on {source['image_size']}² images, not {image_size}²")
        bundle[stage] = source[stage]
    for stage, run in runs:
        cfg = TrainConfig.from_json((run / "config.json").read_text())
        if cfg.stage != stage:
            raise ValueError(f"{run} trained the {cfg.stage} stage, not the {stage} stage")
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
        entry = {
            "net": cfg.net.as_dict(),
            "state_dict": {k: v.float().contiguous() for k, v in state["model"].items()},
            "grid": cfg.grid,
            "spacing_mm": cfg.spacing_mm,
            "steps": int(state["step"]),
            "data": cfg.data,
            "domain": cfg.domain,
        }
        if stage == "fine":
            entry |= {"crop_mm": cfg.crop_mm, "crop_px": cfg.crop_px}
        bundle[stage] = entry
    bundle["domain"] = bundle["fine"]["domain"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(bundle, tmp)
    os.replace(tmp, out)
    return bundle


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coarse",
        type=Path,
        required=True,
        help="run folder of the coarse stage, or a weights file whose coarse stage is kept",
    )
    parser.add_argument(
        "--fine",
        type=Path,
        required=True,
        help="run folder of the fine stage, or a weights file whose fine stage is kept",
    )
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument(
        "--image-size", type=int, required=True, help="working image side the stages trained on"
    )
    parser.add_argument("--note", default="", help="free text stored in the file")


def run_export(args: argparse.Namespace) -> int:
    export_weights(args.coarse, args.fine, args.out, args.image_size, args.note)
    print(args.out)
    return 0
