"""The training loop: resumable, optionally distributed (`torchrun`).

The run folder holds `config.json`, `checkpoint.pt` (model, optimiser, step, RNG state; written
atomically every `checkpoint_every` steps), `log.jsonl` (one line per logged step) and
`curve.png`. Starting again with the same folder continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.model.grow import grow_state
from x23d_ros.model.narrow import narrow_state
from x23d_ros.model.network import NetConfig, X23DNet, load_network
from x23d_ros.train.batches import make_batch
from x23d_ros.train.config import TrainConfig, learning_rate
from x23d_ros.train.curve import plot_curve
from x23d_ros.train.export import save_atomically
from x23d_ros.train.loss import distillation_loss, loss_fn
from x23d_ros.train.validation import validate

log = logging.getLogger(__name__)


def device_auto() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic. Without them torch emulates bf16:
#: a fine-stage step of `train_fine_k6.json` took about 180 s with autocast on an AVX2 EPYC,
#: 3.0 s in fp32 (the model card's run k6).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU does bf16 natively (`BF16_FLAGS` among its flags); True where the flags
    cannot be read (not Linux), leaving the choice to the config."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return any(flag in flags for flag in BF16_FLAGS)


def use_bf16(cfg_bf16: bool, device: torch.device, cpuinfo: str | None = None) -> bool:
    """bf16 autocast: always on a GPU; on the CPU when the config asks and the CPU does bf16
    natively (else logged, and fp32)."""
    if device.type == "cuda":
        return True
    if cfg_bf16 and not cpu_has_bf16(cpuinfo):
        log.warning(
            "bf16 asked for, but this CPU has no native bf16 (%s): training in fp32 "
            "(emulated bf16 measured about 60 times slower)",
            ", ".join(BF16_FLAGS),
        )
        return False
    return cfg_bf16


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
    optimiser = torch.optim.Adam(trainable(model, cfg.train_only), lr=cfg.lr)
    teacher = None
    if cfg.teacher:
        taught_state, taught_net = _stage_state(Path(cfg.teacher), cfg.stage)
        teacher = load_network(taught_net, taught_state, device).requires_grad_(False)
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
    since_log: list[torch.Tensor] = []  # losses of the steps since the last logged line
    bf16 = use_bf16(cfg.bf16, device)
    try:
        while step < cfg.steps:
            batch = make_batch(dataset[int(rng.integers(len(dataset)))], cfg, rng, train=True)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
            inputs = [batch[k].to(device) for k in ("images", "P", "points")]
            with autocast:
                logits = net(*inputs)
            loss = loss_fn(logits, batch["target"].to(device))
            if teacher is not None:
                with torch.no_grad(), autocast:
                    taught = teacher(*inputs)
                loss = loss + cfg.teacher_weight * distillation_loss(logits, taught)
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
            since_log.append(loss.detach())  # no .item() a step: no device sync
            record: dict = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                # One batch's loss is noisy (2 levels, augmented); the mean of the steps since
                # the last line is what shows a trend.
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "loss_mean": torch.stack(since_log).float().mean().item(),
                    "lr": learning_rate(cfg, step - 1),
                    "seconds": round(time.perf_counter() - start, 1),
                    "world_size": world,
                }
                since_log = []
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


def trainable(model: torch.nn.Module, prefixes: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """The parameters whose names start with one of `prefixes` (all when there are none);
    the others stop requiring gradients. A prefix that names no parameter is refused."""
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise ValueError(f"train_only names no parameter: {unknown} (e.g. {names[0]!r})")
    out = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not prefixes or name.startswith(tuple(prefixes)))
        if parameter.requires_grad:
            out.append(parameter)
    return out


def _stage_state(path: Path, stage: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and network config at `path`: a run's checkpoint.pt, or a weights
    file's network of `stage`."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in source:
        return source["model"], source["net"]
    if stage in source:
        return source[stage]["state_dict"], source[stage]["net"]
    raise ValueError(f"{path} is neither a checkpoint nor weights with a {stage} stage")


def initial_state(path: Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a new run of `cfg` starts from: those at `path` (a run's checkpoint.pt, or a
    weights file's network of `cfg.stage`), grown to `cfg.net` when they are smaller, or with
    their full-resolution level narrowed to `cfg.net`'s (`model.narrow`)."""
    state, net = _stage_state(path, cfg.stage)
    old = NetConfig(**net)
    if old.same_network(cfg.net):
        return state
    if cfg.net.full_channels < old.full_channels:  # narrow_state refuses any other difference
        return narrow_state(state, old, cfg.net)
    return grow_state(state, old, cfg.net, torch.Generator().manual_seed(cfg.seed))


def _save(path: Path, model, optimiser, step: int, rngs: list[str]) -> None:
    """Write the checkpoint atomically (temporary file, then rename)."""
    save_atomically(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "rng": rngs[0],
            "rng_ranks": json.dumps(rngs),
            "net": model.config.as_dict(),
        },
        path,
    )
