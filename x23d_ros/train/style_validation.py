"""How a style transfer (`model.style.StyleNet`) is validated while `x23d style` trains it: its
pixel error on paired shots (`evaluate_style`) and, with `--val-weights`, the reconstruction of
the validation cases' fluoroscopy through it (`evaluate_through_reconstruction`; the pixel
error alone did not rank style transfers for the reconstruction)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from x23d_ros.data.shards import list_cases
from x23d_ros.evaluate import evaluate_folder
from x23d_ros.model.style import StyleNet
from x23d_ros.pipeline import Reconstructor

if TYPE_CHECKING:
    from x23d_ros.train.style import PairedShots

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_style(net: StyleNet, pairs: PairedShots) -> dict[str, float]:
    """Whole shots: mean absolute error of μ·L inside the field (fluoroscopy in, and the
    identity: synthetic in), and the same share of the target's mean."""
    net.eval()
    err, ident, scale, right = [], [], [], []
    for i in range(len(pairs)):
        m = pairs.field[i]
        y = pairs.synthetic[i]
        x = torch.from_numpy(pairs.realistic[i])[None, None]
        right.append(bool(net.bone_dark_logit(x)[0] > 0) == bool(pairs.inverted[i]))
        out = net(x)[0, 0].numpy()
        same = net(torch.from_numpy(y)[None, None])[0, 0].numpy()
        err.append(np.abs(out - y)[m].mean())
        ident.append(np.abs(same - y)[m].mean())
        scale.append(np.abs(y[m]).mean())
    net.train()
    return {
        "mae": float(np.mean(err)),
        "identity_mae": float(np.mean(ident)),
        "relative_mae": float(np.mean(err) / max(np.mean(scale), 1e-9)),
        "polarity_accuracy": float(np.mean(right)),
        "shots": len(pairs),
    }


VAL_VIEWS = [0, 1, 2]  # the validation through the reconstruction: 3 views, as the benchmark


def evaluate_through_reconstruction(style_path: Path, weights: str, val: str) -> dict[str, float]:
    """The validation cases' fluoroscopy (`VAL_VIEWS`) through the style transfer at
    `style_path` into `weights` (weights that read synthetic shots): mean F1, ASSD, levels
    missed and shot sets refused."""
    reconstructor = Reconstructor(weights, device="cpu", points_per_vertebra=200, style=style_path)
    if reconstructor.style is None or reconstructor.style.path != Path(style_path):
        raise ValueError(
            f"weights {weights!r} read {reconstructor.domain!r} shots: no style transfer runs "
            "in front of them, so they cannot validate one (use weights of the synthetic domain)"
        )
    result = evaluate_folder(reconstructor, Path(val), VAL_VIEWS, "realistic")
    return {
        "f1": float(result["mean"]["f1"]),
        "assd_mm": float(result["mean"]["assd_mm"]),
        "missed": int(result["mean"]["missed"]),
        "refused": int(result["refused"]),
    }


def check_validation_through_reconstruction(weights: str, val: str | None) -> None:
    """Before any training step: `weights` exist and read synthetic shots, and every case
    under `val` has the shots `VAL_VIEWS` asks for."""
    if not val:
        raise ValueError(f"val_weights {weights!r} needs validation cases (val)")
    reconstructor = Reconstructor(weights, device="cpu", style=None)
    if reconstructor.domain != "synthetic":
        raise ValueError(
            f"val_weights {weights!r} read {reconstructor.domain!r} shots: no style "
            "transfer runs in front of them (use weights of the synthetic domain)"
        )
    for path, name in list_cases(Path(val)):
        with h5py.File(path, "r") as h5:
            shots = h5[name]["realistic"].shape[0] if "realistic" in h5[name] else 0
        if shots < len(VAL_VIEWS):
            raise ValueError(
                f"{path} case {name}: {shots} fluoroscopy shots; the validation through the "
                f"reconstruction needs {len(VAL_VIEWS)}"
            )


def best_so_far(best_path: Path, weights: str | None, val: str | None) -> float:
    """The reconstruction F1 of `best_path` (a run's `style_best.pt`), when it was measured as
    this run measures (through the same `weights`, on the same `val`); −1 otherwise."""
    if not best_path.exists():
        return -1.0
    kept = torch.load(best_path, map_location="cpu", weights_only=True)
    measure = json.loads(kept.get("validated_through", "{}"))
    if measure != {"weights": weights, "val": val}:
        log.warning("%s was validated otherwise (%s): a new best is kept", best_path, measure)
        return -1.0
    return float(json.loads(kept["metrics"])["recon"]["f1"])


__all__ = [
    "VAL_VIEWS",
    "best_so_far",
    "check_validation_through_reconstruction",
    "evaluate_style",
    "evaluate_through_reconstruction",
]
