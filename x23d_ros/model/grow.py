"""Grow a trained network into a larger one that starts with the same output (Net2Net).

Chen, Goodfellow & Shlens, "Net2Net: accelerating learning via knowledge transfer", ICLR 2016:
a layer is widened by copying its units and dividing the next layer's weights on the copies by
the number of copies, so the wider network computes the same function; a new layer starts as
the identity. Training on 2 CPU cores cannot afford to start a larger network from scratch,
so `x23d train` uses this to continue from a smaller network's weights (`TrainConfig.init`).

What can grow: the 3D decoder's width (`channels_3d`, by an integer factor r: new channel j
copies old channel j // r, which keeps every GroupNorm group's statistics, since a new group
holds whole copies of old groups) and its depth (`levels` 2 → 3: the new level is a residual
branch whose output convolution starts at zero), and the fusion can learn the views'
directions (`view_directions` off → on: its mixing matrices start at zero). The 2D encoder,
the classes and the image normalisation must match.
"""

from __future__ import annotations

import torch
from torch import nn

from x23d_ros.model.network import NetConfig, X23DNet


def grow_state(
    state: dict[str, torch.Tensor],
    old: NetConfig,
    new: NetConfig,
    generator: torch.Generator,
    noise: float = 0.01,
) -> dict[str, torch.Tensor]:
    """The state dict of an `X23DNet(new)` that computes what `X23DNet(old)` with `state` does.

    `noise` × (each copied tensor's standard deviation) of Gaussian noise is added to the
    widened weights, so that the copies receive different gradients and can diverge; with
    noise = 0 the output is unchanged up to rounding. Parameters that only the new network has
    are initialised as `X23DNet` does, seeded from `generator`.
    """
    for key in ("features_2d", "classes", "image_norm"):
        if getattr(old, key) != getattr(new, key):
            raise ValueError(f"cannot grow {key} {getattr(old, key)} → {getattr(new, key)}")
    if new.channels_3d % old.channels_3d or new.levels < old.levels:
        raise ValueError(
            f"can grow channels_3d by an integer factor and add levels, not "
            f"{old.channels_3d}→{new.channels_3d} channels, {old.levels}→{new.levels} levels"
        )
    r = new.channels_3d // old.channels_3d
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        model = X23DNet(new)
    target = model.state_dict()
    # ConvTranspose weights are (in, out, k, k, k); Conv weights are (out, in, k, k, k).
    transposed = {
        f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.ConvTranspose3d)
    }
    for name, value in state.items():
        if name not in target:
            raise ValueError(f"{name} of the old network has no place in the new one")
        grown = value.float()
        for dim in range(value.ndim):
            n_old, n_new = value.shape[dim], target[name].shape[dim]
            if n_new == n_old:
                continue
            if n_new != r * n_old:
                raise ValueError(f"{name}: dim {dim} of {n_old} cannot grow to {n_new}")
            grown = grown.index_select(dim, torch.arange(n_new) // r)
            if value.ndim > 1 and dim == (0 if name in transposed else 1):
                grown = grown / r  # the copies' inputs are summed by the next layer
        if grown.shape != value.shape and grown.ndim > 1:
            grown = grown + noise * value.float().std() * torch.randn(
                grown.shape, generator=generator
            )
        target[name] = grown.to(value.dtype)
    return target
