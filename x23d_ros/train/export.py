"""`x23d export`: bundle a coarse and a fine stage into one weights file for `Reconstructor`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from x23d_ros.train.config import TrainConfig


def save_atomically(obj: dict, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then moved into place: a process killed
    while writing leaves the previous file whole."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        native = source[stage].get("crop_source") == "native"
        if not native and int(source["image_size"]) != int(image_size):
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
            "grid": cfg.grid if isinstance(cfg.grid, int) else list(cfg.grid),
            "spacing_mm": cfg.spacing_mm,
            "steps": int(state["step"]),
            "data": cfg.data,
            "domain": cfg.domain,
        }
        if stage == "fine":
            if cfg.crop_source == "working" and cfg.image_size != int(image_size):
                raise ValueError(
                    f"{run} cut its crops from {cfg.image_size}² shots, not {image_size}²"
                )
            entry |= {
                "crop_mm": cfg.crop_mm,
                "crop_px": cfg.crop_px,
                "crop_source": cfg.crop_source,
            }
        bundle[stage] = entry
    bundle["domain"] = bundle["fine"]["domain"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(bundle, out)
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
