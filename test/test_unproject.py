"""Unprojection puts a view's feature where its rays go; fusion ignores the views' order."""

from __future__ import annotations

import numpy as np
import torch

from x23d_ros import geometry as g
from x23d_ros.model.unproject import fuse, scale_projection, unproject, voxel_centres

UP = np.array([0.0, 0.0, 1.0])
SIZE, PIXEL = 64, 0.8


def _views(target: np.ndarray) -> torch.Tensor:
    K = g.intrinsics(1000.0, PIXEL, SIZE, SIZE)
    poses = [
        g.look_at(target + 600 * np.array([np.sin(a), -np.cos(a), 0.3 * np.sin(2 * a)]), target, UP)
        for a in np.radians([0.0, 70.0, 130.0])
    ]
    return torch.tensor(np.stack([g.projection_matrix(K, T) for T in poses]))[None]


def _painted(P: torch.Tensor, point: np.ndarray) -> torch.Tensor:
    """Feature maps (1, V, 1, H, W): a small Gaussian blob at each view's projection of `point`."""
    v, u = np.mgrid[0:SIZE, 0:SIZE]
    maps = []
    for Pv in P[0].numpy():
        (pu, pv), _ = g.project(Pv, point)
        maps.append(np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 2.0**2)))
    return torch.tensor(np.stack(maps), dtype=torch.float32)[None, :, None]


def test_a_feature_painted_at_a_points_projections_is_recovered_at_its_voxel():
    centre = np.array([5.0, -3.0, 12.0])
    P = _views(centre)
    grid = voxel_centres(
        torch.tensor(centre)[None], size=17, spacing_mm=1.0
    )  # point at the middle voxel
    target = np.array([2.0, 1.0, -1.0]) + centre  # on a voxel centre: offsets (−3, +4, −13)+…
    target_index = np.round(target - centre + 8).astype(int)
    values, mask = unproject(_painted(P, target), P, grid)
    fused = fuse(values, mask)[0, 0].numpy()  # mean over views
    assert np.unravel_index(fused.argmax(), fused.shape) == tuple(target_index)
    assert fused[tuple(target_index)] > 0.9
    far = np.linalg.norm(np.indices(fused.shape).transpose(1, 2, 3, 0) - target_index, axis=-1) > 5
    assert fused[far].max() < 0.45  # only one of three views' rays passes elsewhere


def test_points_outside_a_view_are_masked_out():
    centre = np.zeros(3)
    P = _views(centre)
    far_grid = voxel_centres(torch.tensor([[0.0, 0.0, 400.0]]), size=3, spacing_mm=1.0)
    _, mask = unproject(torch.ones(1, 3, 1, SIZE, SIZE), P, far_grid)
    assert mask.sum() == 0


def test_fusion_does_not_depend_on_the_order_of_views():
    torch.manual_seed(0)
    P = _views(np.zeros(3))
    features = torch.randn(1, 3, 4, SIZE, SIZE)
    grid = voxel_centres(torch.zeros(1, 3, dtype=torch.float64), size=9, spacing_mm=2.0)
    order = [2, 0, 1]
    a = fuse(*unproject(features, P, grid))
    b = fuse(*unproject(features[:, order], P[:, order], grid))
    torch.testing.assert_close(a, b)


def test_scaled_projection_samples_a_quarter_resolution_map_where_geometry_says():
    P = _views(np.zeros(3))
    point = np.array([3.0, -2.0, 4.0])
    quarter = torch.nn.functional.avg_pool2d(_painted(P, point)[0], 4)[None]  # (1, V, 1, 16, 16)
    grid = voxel_centres(torch.tensor(point)[None], size=1, spacing_mm=1.0)
    values, _ = unproject(quarter, scale_projection(P, 0.25), grid)
    for view in range(3):
        (u, v), _ = g.project(P[0, view].numpy(), point)
        uq, vq = (u + 0.5) * 0.25 - 0.5, (v + 0.5) * 0.25 - 0.5  # geometry.crop_resize_intrinsics
        img = quarter[0, view, 0].numpy()
        u0, v0 = int(np.floor(uq)), int(np.floor(vq))
        du, dv = uq - u0, vq - v0
        expected = (
            img[v0, u0] * (1 - du) * (1 - dv)
            + img[v0, u0 + 1] * du * (1 - dv)
            + img[v0 + 1, u0] * (1 - du) * dv
            + img[v0 + 1, u0 + 1] * du * dv
        )
        assert abs(float(values[0, view, 0]) - expected) < 1e-5


def test_fusion_is_the_masked_mean_and_variance_over_the_views_that_see_a_voxel():
    """Against a plain reference, with each voxel seen by 0 to 4 of 4 views; the result is
    channels-last (what the 3D convolutions want) and its gradient is the reference's (the
    training path runs through it)."""
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 4, 1, 5, 6, 7, generator=generator) > 0.4).double()
    values = torch.randn(2, 4, 3, 5, 6, 7, generator=generator, dtype=torch.float64) * mask
    values.requires_grad_()
    fused = fuse(values, mask)
    assert fused.shape == (2, 7, 5, 6, 7)
    assert fused.is_contiguous(memory_format=torch.channels_last_3d)
    count = mask.sum(dim=1)
    mean = values.sum(dim=1) / count.clamp(min=1)
    variance = ((values - mean[:, None]) ** 2 * mask).sum(dim=1) / count.clamp(min=1)
    reference = torch.cat([mean, variance, count / 4], dim=1)
    torch.testing.assert_close(fused, reference)
    # Where two or more views see a voxel its variance is not at the clamp's kink, so both
    # gradients are defined and must agree there.
    weight = torch.randn(fused.shape, generator=generator, dtype=torch.float64)
    weight = weight * (count >= 2)
    (grad,) = torch.autograd.grad((fused * weight).sum(), values)
    (expected,) = torch.autograd.grad((reference * weight).sum(), values)
    torch.testing.assert_close(grad * mask, expected * mask)


def test_fusion_under_bf16_autocast_divides_by_the_exact_count():
    """Under bf16 autocast on the CPU the mask comes as bf16 while the sampled values are
    float32: the mean must still be the float32 one (1/3 in bf16 is 0.334)."""
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(1, 3, 2, 4, 4, 4, generator=generator)
    mask = torch.ones(1, 3, 1, 4, 4, 4)
    fused = fuse(values, mask.to(torch.bfloat16))
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused[:, :2], values.mean(dim=1), rtol=1e-6, atol=1e-6)
