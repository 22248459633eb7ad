"""The X23D network learns: a tiny model overfits one case on the CPU within a minute."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from x23d_ros import geometry as g
from x23d_ros.metrics import vertebra_metrics
from x23d_ros.model.network import NetConfig, OneDNNConv3d, X23DNet, direction_components
from x23d_ros.model.unproject import voxel_centres
from x23d_ros.xray.raycast import line_integrals

GRID, SPACING = 32, 2.0
UP = np.array([0.0, 0.0, 1.0])


def _case():
    """A non-convex bone-like solid (three fused ellipsoids) and its DRRs from three views."""
    centre = torch.zeros(1, 3, dtype=torch.float64)
    pts = voxel_centres(centre, GRID, SPACING)[0].numpy()
    solid = np.zeros(pts.shape[:3], bool)
    for c, r in (([0, 0, 0], [14, 10, 8]), ([0, 14, 4], [4, 12, 5]), ([12, 4, -6], [10, 4, 4])):
        solid |= (((pts - np.array(c)) / np.array(r)) ** 2).sum(-1) <= 1.0
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = pts[0, 0, 0]
    K = g.intrinsics(1000.0, 1.6, 64, 64)
    poses = [
        g.look_at(600 * np.array([np.sin(a), -np.cos(a), 0.0]), np.zeros(3), UP)
        for a in np.radians([0.0, 90.0, 40.0])
    ]
    volume = torch.from_numpy(solid.astype(np.float32))[None] * 0.04
    images = line_integrals(volume, affine, K, np.stack(poses), 64, 64, step_mm=1.0)[:, 0]
    P = torch.tensor(np.stack([g.projection_matrix(K, T) for T in poses]), dtype=torch.float32)
    return images[None], P[None], voxel_centres(centre.float(), GRID, SPACING), solid


def test_a_tiny_model_overfits_one_case_to_f1_above_0_9_within_a_few_hundred_steps():
    """About 20 s on 2 CPU cores; bounded by steps, not by the clock, so a busy machine does
    not fail it."""
    torch.manual_seed(0)
    images, P, points, solid = _case()
    target = torch.from_numpy(solid.astype(np.float32))[None, None]
    net = X23DNet(NetConfig(features_2d=8, channels_3d=8, classes=1))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    start, f1 = time.perf_counter(), 0.0
    for _ in range(40):
        for _ in range(10):
            logits = net(images, P, points)
            prob = torch.sigmoid(logits)
            dice = 1 - 2 * (prob * target).sum() / (prob.sum() + target.sum())
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + dice
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            pred = (net(images, P, points)[0, 0] > 0).numpy()
        f1 = vertebra_metrics(pred, solid, SPACING)["f1"]
        if f1 > 0.9:
            break
    assert f1 > 0.9, f"F1 {f1:.3f} after {time.perf_counter() - start:.0f} s"


@pytest.mark.parametrize("view_directions", [False, True])
def test_the_output_does_not_depend_on_the_order_of_views(view_directions):
    torch.manual_seed(1)
    images, P, points, _ = _case()
    net = X23DNet(NetConfig(features_2d=4, channels_3d=4, view_directions=view_directions)).eval()
    if view_directions:  # trained-like: the mixing matrices start at zero
        torch.nn.init.normal_(net.direction_mix, std=0.3)
    with torch.no_grad():
        a = net(images, P, points)
        b = net(images[:, [2, 0, 1]], P[:, [2, 0, 1]], points)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_direction_components_are_those_of_the_ray_from_the_source_whichever_way_it_points():
    K = g.intrinsics(1000.0, 1.6, 64, 64)
    centre = np.array([5.0, -3.0, 20.0])
    ap = np.array([0.0, 600.0, 0.0])
    sources = [centre - ap, centre + ap, np.array([-500.0, 0.0, 300.0])]
    poses = [g.look_at(s, centre, UP) for s in sources]
    P = torch.tensor(np.stack([g.projection_matrix(K, T) for T in poses]))[None]
    e = direction_components(P, torch.tensor(centre)[None])[0].numpy()
    for s, row in zip(sources, e, strict=True):
        d = (centre - s) / np.linalg.norm(centre - s)
        r2 = np.sqrt(2.0)
        expected = [
            d[0] ** 2,
            d[1] ** 2,
            d[2] ** 2,
            r2 * d[0] * d[1],
            r2 * d[0] * d[2],
            r2 * d[1] * d[2],
        ]
        np.testing.assert_allclose(row, expected, atol=1e-9)
        assert np.linalg.norm(row) == pytest.approx(1.0)  # ‖d dᵀ‖_F = 1
    np.testing.assert_allclose(e[0], e[1], atol=1e-9)  # AP and PA: the same line
    assert np.abs(e[0] - e[2]).max() > 0.3  # an oblique view differs


def test_direction_mixing_starts_as_nothing_and_then_changes_what_the_views_say():
    """Switched on with zero matrices, the network computes what it did without them (so a
    trained network can be grown into it); non-zero matrices change the output."""
    images, P, points, _ = _case()
    torch.manual_seed(2)
    plain = X23DNet(NetConfig(features_2d=4, channels_3d=4)).eval()
    mixed = X23DNet(NetConfig(features_2d=4, channels_3d=4, view_directions=True)).eval()
    mixed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        np.testing.assert_allclose(plain(images, P, points), mixed(images, P, points), atol=1e-5)
        torch.nn.init.normal_(mixed.direction_mix, std=0.3)
        assert (plain(images, P, points) - mixed(images, P, points)).abs().max() > 1e-2


def test_the_inference_convolution_computes_what_pytorchs_own_does_and_training_still_learns():
    """`OneDNNConv3d` takes oneDNN in inference where PyTorch would take its im2col path (a batch of
    one with few channels); the result is the same, and with gradients on, PyTorch's path
    (and autograd) is used."""
    torch.manual_seed(4)
    conv = OneDNNConv3d(4, 6, 3, stride=2, padding=1, bias=True)
    reference = torch.nn.Conv3d(4, 6, 3, stride=2, padding=1, bias=True)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 12, 10, 8)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), reference(x), rtol=1e-4, atol=1e-5)
    x.requires_grad_(True)
    conv(x).sum().backward()
    assert conv.weight.grad is not None and x.grad is not None and x.grad.abs().sum() > 0
