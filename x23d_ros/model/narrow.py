"""Narrow a trained network's full-resolution level, so that a cheaper network starts from it.

On 2 AVX2 cores the fine stage spends two thirds of its multiply-adds in the 3D U-Net's
full-resolution convolutions (README, "Latency"). `NetConfig.channels_full` makes that level
narrower; this keeps, at each of its four places (the two encoder convolutions' outputs, the
upsampling's output and the decoder convolution's output), the channels that the next layer
leans on most (|GroupNorm scale| × the norm of the next layer's weights on that channel), and
copies every other weight as it is. Unlike `model.grow`, this does not keep the function: the
dropped channels' contributions are lost, so the narrowed network is trained on (`x23d train`
with `init`), which starts it far closer than from scratch.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from x23d_ros.model.network import NetConfig, full_groups

_D = "decoder."


def _keep(score: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of the `n` largest scores, in ascending order."""
    return torch.sort(torch.topk(score, n).indices).values


def _in_norm(weight: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-channel norm of a weight over all its dimensions but `dim`."""
    return weight.transpose(0, dim).flatten(1).norm(dim=1)


def narrow_state(
    state: dict[str, torch.Tensor], old: NetConfig, new: NetConfig
) -> dict[str, torch.Tensor]:
    """The state dict of an `X23DNet(new)` made from `X23DNet(old)`'s `state`, `new` differing
    from `old` only in a narrower full-resolution level (`channels_full`)."""
    c_old, c_new = old.full_channels, new.full_channels
    if replace(old, channels_full=0) != replace(new, channels_full=0) or c_new >= c_old:
        raise ValueError(
            f"can only narrow the full-resolution level ({c_old} → fewer channels), "
            f"with the rest of the network alike: {old} → {new}"
        )
    full_groups(new.channels_3d, c_new)  # refuses a width that does not divide into its groups
    s = {k: v.float() for k, v in state.items()}

    def gn(name: str) -> torch.Tensor:  # a GroupNorm's |scale| per channel
        return s[_D + name + ".weight"].abs()

    dec0_w = s[_D + "dec0.0.weight"]  # (c, 2c, k, k, k): inputs up0's c, then enc0's c
    # Conv weights are (out, in, ...); ConvTranspose weights (in, out, ...).
    inner = _keep(gn("enc0.0.1") * _in_norm(s[_D + "enc0.1.0.weight"]), c_new)
    skip = _keep(
        gn("enc0.1.1")
        * torch.sqrt(_in_norm(s[_D + "enc1.0.0.weight"]) ** 2 + _in_norm(dec0_w[:, c_old:]) ** 2),
        c_new,
    )
    up = _keep(_in_norm(dec0_w[:, :c_old]), c_new)
    out = _keep(gn("dec0.1") * _in_norm(s[_D + "head.weight"]), c_new)
    picks = {  # name: [(dim, indices), ...]
        "enc0.0.0.weight": [(0, inner)],
        "enc0.0.1.weight": [(0, inner)],
        "enc0.0.1.bias": [(0, inner)],
        "enc0.1.0.weight": [(0, skip), (1, inner)],
        "enc0.1.1.weight": [(0, skip)],
        "enc0.1.1.bias": [(0, skip)],
        "enc1.0.0.weight": [(1, skip)],
        "up0.weight": [(1, up)],
        "up0.bias": [(0, up)],
        "dec0.0.weight": [(0, out), (1, torch.cat([up, c_old + skip]))],
        "dec0.1.weight": [(0, out)],
        "dec0.1.bias": [(0, out)],
        "head.weight": [(1, out)],
    }
    narrowed = {}
    for name, value in state.items():
        cut = value
        key = name.removeprefix(_D) if name.startswith(_D) else None
        for dim, index in picks.get(key, []):
            cut = cut.index_select(dim, index)
        narrowed[name] = cut.clone()
    return narrowed
