"""The training loss: cross-entropy (or binary cross-entropy) plus soft Dice, in fp32."""

from __future__ import annotations

import torch


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


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the network's output against a teacher's probabilities (fp32):
    binary with one output channel, over the classes otherwise."""
    logits, teacher_logits = logits.float(), teacher_logits.float()
    if logits.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, teacher_logits.sigmoid()
        )
    return torch.nn.functional.cross_entropy(logits, teacher_logits.softmax(1))
