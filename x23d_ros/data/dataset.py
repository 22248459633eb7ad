"""A torch Dataset over shards: one item per case, all its shots in one domain."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from x23d_ros.data.shards import list_cases

DOMAINS = ("synthetic", "realistic")


class ShotDataset(Dataset):
    """Cases of every shard under `root`.

    An item: images (V, H, W) float32 of `domain` (synthetic: μ·L; realistic: [0, 1]), K (V, 3, 3),
    T_ref_source (V, 4, 4), centres_mm (5, 3) (NaN: level missing), labels (I, J, K) uint8 and
    affine (4, 4) as tensors; `views` picks a subset of the shots by index.
    """

    def __init__(
        self, root: str | Path, domain: str = "synthetic", views: list[int] | None = None
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        self.cases = list_cases(Path(root))
        if not self.cases:
            raise FileNotFoundError(f"no shards (*.h5) under {root}")
        self.domain = domain
        self.views = views
        self._files: dict[Path, h5py.File] = {}  # opened lazily, per worker process

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, name = self.cases[index]
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        g = self._files[path][name]
        if self.domain not in g:
            raise KeyError(
                f"{path} case {name} has no {self.domain} shots (a synthetic-only run?); "
                f"it holds {[d for d in DOMAINS if d in g]}"
            )
        # Any order, repeats allowed: index in numpy (h5py wants increasing indices); a case's
        # shots are about a megabyte.
        pick = slice(None) if self.views is None else np.asarray(self.views)
        images = g[self.domain][()][pick].astype(np.float32)
        if self.domain == "realistic":
            images /= 255.0
        return {
            "images": torch.from_numpy(images),
            "K": torch.from_numpy(g["K"][()][pick]),
            "T_ref_source": torch.from_numpy(g["T_ref_source"][()][pick]),
            "centres_mm": torch.from_numpy(g["centres_mm"][()]),
            "labels": torch.from_numpy(g["labels"][()]),
            "affine": torch.from_numpy(g["labels"].attrs["affine"]),
        }
