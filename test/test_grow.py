"""A trained network grows wider and deeper without changing its output (Net2Net)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from x23d_ros import geometry as g
from x23d_ros.model.grow import grow_state
from x23d_ros.model.network import NetConfig, X23DNet
from x23d_ros.model.unproject import voxel_centres


def _inputs():
    K = g.intrinsics(1000.0, 1.6, 32, 32)
    poses = [
        g.look_at(600 * np.array([np.sin(a), -np.cos(a), 0.0]), np.zeros(3), np.array([0, 0, 1.0]))
        for a in np.radians([0.0, 90.0, 40.0])
    ]
    P = torch.tensor(np.stack([g.projection_matrix(K, T) for T in poses]), dtype=torch.float32)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return images, P[None], voxel_centres(torch.zeros(1, 3), 8, 6.0)


def _trained_like(config: NetConfig) -> dict[str, torch.Tensor]:
    """Random weights with non-trivial norms, as after training (not the constructor's 1 and 0)."""
    torch.manual_seed(3)
    state = X23DNet(config).state_dict()
    return {
        k: v + 0.2 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (NetConfig(features_2d=4, channels_3d=4), NetConfig(features_2d=4, channels_3d=8)),
        (NetConfig(features_2d=4, channels_3d=8), NetConfig(features_2d=4, channels_3d=16)),
        (
            NetConfig(features_2d=4, channels_3d=8),
            NetConfig(features_2d=4, channels_3d=8, levels=3),
        ),
        (
            NetConfig(features_2d=4, channels_3d=8, levels=3),
            NetConfig(features_2d=4, channels_3d=24, levels=3),
        ),
        (
            NetConfig(features_2d=4, channels_3d=8, levels=3),
            NetConfig(features_2d=4, channels_3d=8, levels=3, view_directions=True),
        ),
    ],
)
def test_the_grown_network_computes_what_the_trained_one_did(old, new):
    images, P, points = _inputs()
    state = _trained_like(old)
    small, large = X23DNet(old).eval(), X23DNet(new).eval()
    small.load_state_dict(state)
    large.load_state_dict(grow_state(state, old, new, torch.Generator().manual_seed(0), noise=0.0))
    assert sum(p.numel() for p in large.parameters()) > sum(p.numel() for p in small.parameters())
    with torch.no_grad():
        expected = small(images, P, points)
        torch.testing.assert_close(large(images, P, points), expected, rtol=1e-4, atol=1e-4)


def test_noise_makes_the_copies_differ_so_that_they_can_learn_apart():
    old, new = NetConfig(features_2d=4, channels_3d=4), NetConfig(features_2d=4, channels_3d=8)
    grown = grow_state(_trained_like(old), old, new, torch.Generator().manual_seed(0))
    weight = grown["decoder.enc0.1.0.weight"]  # (8, 8, 3, 3, 3): channels 2k, 2k+1 copy k
    assert not torch.equal(weight[0], weight[1])
    torch.testing.assert_close(weight[0], weight[1], atol=0.05, rtol=0.0)


def test_what_cannot_grow_is_refused():
    old = NetConfig(features_2d=4, channels_3d=8)
    state = X23DNet(old).state_dict()
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="features_2d"):
        grow_state(state, old, NetConfig(features_2d=8, channels_3d=8), generator)
    with pytest.raises(ValueError, match="integer factor"):
        grow_state(state, old, NetConfig(features_2d=4, channels_3d=12), generator)
    with pytest.raises(ValueError, match="levels must be 2 or 3"):
        X23DNet(NetConfig(levels=4))
