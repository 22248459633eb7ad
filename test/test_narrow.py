"""A trained network's full-resolution level narrows to the channels that carry its output."""

from __future__ import annotations

import pytest
import torch
from test_grow import _inputs, _trained_like

from x23d_ros.model.narrow import narrow_state
from x23d_ros.model.network import NetConfig, X23DNet

OLD = NetConfig(features_2d=4, channels_3d=4, levels=3)  # full resolution: 4 channels
NEW = NetConfig(features_2d=4, channels_3d=4, levels=3, channels_full=2)
# Channels that carry nothing, a different pair at each of the four places (so that a mix-up
# of the places keeps a dead channel): enc0's first convolution, its second (the skip), the
# upsampling and dec0.
INNER, SKIP, UP, OUT = (torch.tensor(d) for d in ([0, 2], [1, 2], [0, 3], [1, 3]))


def _with_dead_channels() -> dict[str, torch.Tensor]:
    """Trained-like weights whose full-resolution level has two dead channels at each place:
    a GroupNorm scale and shift of 0 (so 0 after the ReLU) or a zero upsampling output, and
    no weight from them in the next layer. With 4 channels and 4 groups each channel is its
    own group, so the living channels' normalisation does not depend on the dead ones."""
    s = _trained_like(OLD)
    for gn, dead in (("enc0.0.1", INNER), ("enc0.1.1", SKIP), ("dec0.1", OUT)):
        for p in ("weight", "bias"):
            s[f"decoder.{gn}.{p}"][dead] = 0.0
    s["decoder.enc0.1.0.weight"][:, INNER] = 0.0
    s["decoder.enc1.0.0.weight"][:, SKIP] = 0.0
    s["decoder.up0.weight"][:, UP] = 0.0  # ConvTranspose: (in, out, ...)
    s["decoder.up0.bias"][UP] = 0.0
    s["decoder.dec0.0.weight"][:, UP] = 0.0  # its inputs: up0's channels, then enc0's
    s["decoder.dec0.0.weight"][:, 4 + SKIP] = 0.0
    s["decoder.head.weight"][:, OUT] = 0.0
    return s


def test_the_narrowed_network_keeps_the_channels_that_carry_the_output():
    images, P, points = _inputs()
    state = _with_dead_channels()
    wide, narrow = X23DNet(OLD).eval(), X23DNet(NEW).eval()
    wide.load_state_dict(state)
    narrow.load_state_dict(narrow_state(state, OLD, NEW))
    assert narrow.decoder.enc0[0][0].weight.shape[0] == 2
    assert narrow.decoder.dec0[0].weight.shape[:2] == (2, 4)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    with torch.no_grad():
        expected = wide(images, P, points)
        assert expected.std() > 0.01  # the living channels do carry an output
        torch.testing.assert_close(narrow(images, P, points), expected, rtol=1e-4, atol=1e-4)


def test_only_the_full_resolution_level_narrows():
    state = _trained_like(OLD)
    with pytest.raises(ValueError, match="narrow"):
        narrow_state(state, OLD, NetConfig(features_2d=4, channels_3d=4, levels=2, channels_full=2))
    with pytest.raises(ValueError, match="narrow"):
        narrow_state(state, OLD, NetConfig(features_2d=4, channels_3d=4, levels=3, channels_full=8))


def test_a_new_run_starts_from_wider_weights_narrowed(tmp_path):
    from x23d_ros.train import TrainConfig, initial_state

    state = _with_dead_channels()
    bundle = tmp_path / "w.pt"
    torch.save({"fine": {"net": OLD.as_dict(), "state_dict": state}}, bundle)
    cfg = TrainConfig(data="d", out="o", stage="fine", net=NEW)
    started = initial_state(bundle, cfg)
    torch.testing.assert_close(started, narrow_state(state, OLD, NEW))
    X23DNet(NEW).load_state_dict(started)
    # The full width written out (channels_full = channels_3d) is the same network: no change.
    cfg.net = NetConfig(features_2d=4, channels_3d=4, levels=3, channels_full=4)
    torch.testing.assert_close(initial_state(bundle, cfg), state)


def test_weights_of_the_full_width_network_say_nothing_of_channels_full():
    """Files of the full-width network stay readable by code from before channels_full."""
    assert "channels_full" not in OLD.as_dict()
    assert NetConfig(**NEW.as_dict()) == NEW
    assert OLD.same_network(NetConfig(features_2d=4, channels_3d=4, levels=3, channels_full=4))
    assert not OLD.same_network(NEW)


def test_a_narrower_full_resolution_level_keeps_the_channels_a_group_of_its_network():
    """16 channels normalise in pairs (GroupNorm(8, 16)); narrowed to 8 the level keeps pairs
    (4 groups), not one channel a group, which fitted far more slowly (model card, `k7`). The
    full width, and the coarse stage's 8 channels in single groups, are as before."""

    def groups(cfg: NetConfig) -> list[int]:
        d = X23DNet(cfg).decoder
        return [d.enc0[0][1].num_groups, d.enc0[1][1].num_groups, d.dec0[1].num_groups]

    assert groups(NetConfig(channels_3d=16, channels_full=8)) == [4, 4, 4]
    assert groups(NetConfig(channels_3d=16)) == [8, 8, 8]
    assert groups(NetConfig(channels_3d=16, channels_full=16)) == [8, 8, 8]
    assert groups(NetConfig(channels_3d=8)) == [8, 8, 8]
    assert groups(NetConfig(channels_3d=8, channels_full=4)) == [4, 4, 4]
    half = X23DNet(NetConfig(channels_3d=16, channels_full=8)).decoder.enc1[0][1]
    assert half.num_groups == 8 and half.num_channels == 32  # below full resolution: unchanged
    with pytest.raises(ValueError, match="groups of 2"):
        X23DNet(NetConfig(channels_3d=16, channels_full=7))
    with pytest.raises(ValueError, match="groups of 2"):
        narrow_state(
            _trained_like(NetConfig(features_2d=4, channels_3d=16, levels=3)),
            NetConfig(features_2d=4, channels_3d=16, levels=3),
            NetConfig(features_2d=4, channels_3d=16, levels=3, channels_full=5),
        )
