"""`x23d adapt`: transfer learning (Jecklin et al. 2024's first adaptation): fine-tune
synthetic-domain weights on a few fluoroscopy-domain cases, so that they read fluoroscopy
directly.

Both stages go on training from the given weights, with their own shipped configurations
(`weights/train_coarse_mix.json`, `weights/train_fine_native.json`) on the realistic shots of
`--data` (the display frames, [0, 1]): the fine stage first (it reads the detail), then the
coarse stage, each resumable in `<out>/fine` and `<out>/coarse`; then `<out>/adapted.pt` is
written, with domain "realistic" and the coarse stage's calibration carried over from the
weights it started from (the calibration places the fine grids; it was fitted on synthetic
shots). Running the same command again continues where it stopped. `--through-style` trains
on the style transfer's answers instead (both adaptations together).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

from x23d_ros.data.shards import open_shard_for_writing, read_case, write_case
from x23d_ros.model.style import StyleTransfer
from x23d_ros.train.config import TrainConfig
from x23d_ros.train.export import export_weights
from x23d_ros.train.loop import train

log = logging.getLogger(__name__)
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CONFIGS = {"coarse": "train_coarse_mix.json", "fine": "train_fine_native.json"}
CARRIED = ("centre_offset_mm", "placement", "centre_offset_fit")


def stage_config(
    stage: str,
    weights: Path,
    data: str,
    out: Path,
    val: str | None,
    steps: int,
    lr_scale: float = 0.1,
):
    """The shipped configuration of `stage`, pointed at the fluoroscopy shards and the weights
    to start from, with `steps` steps of cosine decay from `lr_scale` times its learning
    rate."""
    base = json.loads((WEIGHTS_DIR / CONFIGS[stage]).read_text())
    base |= {
        "data": data,
        "out": str(out / stage),
        "val": val,
        "domain": "realistic",
        "init": str(weights),
        "steps": steps,
        "lr": base["lr"] * lr_scale,
        "decay_from": 0,
        "val_every": max(steps // 2, 1),
        "checkpoint_every": max(min(50, steps), 1),
    }
    return TrainConfig.from_json(json.dumps(base))


def styled_shards(src: str, dst: Path, style: StyleTransfer) -> Path:
    """Copies of the shards under `src` whose synthetic shots are the style transfer's answer
    to their fluoroscopy shots (made once: a shard already in `dst` is kept)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).rglob("*.h5")):
        target = dst / f"{path.parent.name}_{path.name}"
        if target.exists():
            continue
        tmp = target.with_suffix(".tmp")
        with h5py.File(path, "r") as h5, open_shard_for_writing(tmp) as out:
            for name in h5:
                case = read_case(h5, name)
                if case.realistic is None:
                    raise KeyError(f"{path} case {name} holds no fluoroscopy shots")
                styled = np.stack(style(list(case.realistic))[0])
                write_case(out, replace(case, synthetic=styled, realistic=None))
        os.replace(tmp, target)
    return dst


def adapt(
    weights: Path,
    data: str,
    out: Path,
    val: str | None = None,
    fine_steps: int = 300,
    coarse_steps: int = 200,
    fine_lr_scale: float = 0.1,
    coarse_lr_scale: float = 0.1,
    through_style: str | None = None,
) -> Path:
    """Fine-tune both stages of `weights` on the fluoroscopy shots of `data`; return the
    adapted weights file. With `through_style` (a style-transfer file or "default"), they are
    fine-tuned on the style transfer's answers instead (the paper's "both"): the weights then
    stay synthetic-domain weights that expect the style transfer in front of them."""
    out.mkdir(parents=True, exist_ok=True)
    source = torch.load(weights, map_location="cpu", weights_only=True)
    domain = "realistic"
    if through_style is not None:
        style = StyleTransfer(through_style)
        data = str(styled_shards(data, out / "styled" / "train", style))
        if val:
            val = str(styled_shards(val, out / "styled" / "val", style))
        domain = "synthetic"
    runs = {}
    plan = (("fine", fine_steps, fine_lr_scale), ("coarse", coarse_steps, coarse_lr_scale))
    for stage, steps, scale in plan:
        cfg = stage_config(stage, weights, data, out, val, steps, scale)
        cfg.domain = domain
        runs[stage] = train(cfg)
    path = out / "adapted.pt"
    note = f"transfer learning: {weights.name} fine-tuned on the fluoroscopy shots of {data}"
    if through_style is not None:
        note += f", through the style transfer {through_style}"
    bundle = export_weights(runs["coarse"], runs["fine"], path, source["image_size"], note)
    for key in CARRIED:
        if key in source["coarse"]:
            bundle["coarse"][key] = source["coarse"][key]
    bundle["adapted_from_sha256"] = _sha256(weights)
    if through_style is not None:
        bundle["reads_style_transfer"] = str(through_style)
    torch.save(bundle, path)
    return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="shards with fluoroscopy (realistic) shots")
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumes)")
    parser.add_argument("--weights", default="default", help="weights to start from")
    parser.add_argument("--val", help="validation shards (realistic shots)")
    parser.add_argument("--fine-steps", type=int, default=300)
    parser.add_argument("--coarse-steps", type=int, default=200)
    parser.add_argument(
        "--through-style",
        help="fine-tune on the answers of this style transfer (a file, or default) to the "
        "fluoroscopy shots: weights for the style transfer's output (both adaptations)",
    )
    parser.add_argument("--fine-lr-scale", type=float, default=0.1, help="× the config's lr")
    parser.add_argument("--coarse-lr-scale", type=float, default=0.1, help="× the config's lr")


def run(args: argparse.Namespace) -> int:
    from x23d_ros.pipeline import resolve_weights

    path = adapt(
        resolve_weights(args.weights),
        args.data,
        args.out,
        args.val,
        args.fine_steps,
        args.coarse_steps,
        args.fine_lr_scale,
        args.coarse_lr_scale,
        args.through_style,
    )
    print(path)
    return 0


__all__ = ["adapt", "add_arguments", "run", "stage_config"]
