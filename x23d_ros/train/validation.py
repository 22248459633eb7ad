"""Validation during training: the stage's metrics on a fixed set, on the training grid."""

from __future__ import annotations

import numpy as np
import torch

from x23d_ros.anatomy import LEVEL_NAMES
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.metrics import level_metrics, summarise, vertebra_metrics
from x23d_ros.model.network import X23DNet
from x23d_ros.train.batches import make_batch
from x23d_ros.train.config import TrainConfig


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
