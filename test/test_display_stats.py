"""The realism statistics (`xray.display_stats`) on frames whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from x23d_ros.xray import display_stats

SIZE = 256


def _ramp_with_noise(sd: float, rng: np.random.Generator) -> np.ndarray:
    ramp = np.linspace(60, 190, SIZE)[None, :].repeat(SIZE, 0)
    return ramp + sd * rng.standard_normal((SIZE, SIZE))


def test_noise_sd_recovers_white_noise_on_a_ramp() -> None:
    rng = np.random.default_rng(1)
    mask = np.ones((SIZE, SIZE), bool)
    assert display_stats.noise_sd(_ramp_with_noise(3.0, rng), mask) == pytest.approx(3.0, rel=0.1)


def test_nps_slope_is_flat_for_white_noise_and_steep_for_smoothed_noise() -> None:
    rng = np.random.default_rng(2)
    mask = np.ones((SIZE, SIZE), bool)
    white = _ramp_with_noise(5.0, rng)
    smoothed = 128 + 60 * ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.0)
    assert abs(display_stats.nps_slope(white, mask, rng)) < 0.5
    assert display_stats.nps_slope(smoothed, mask, rng) < -3.0


def _step(sharpen: float, rng: np.random.Generator) -> np.ndarray:
    """A vertical step 80 → 160 (blurred 1.5 px), unsharp-masked by `sharpen`, noise SD 1."""
    image = np.where(np.arange(SIZE)[None, :] < SIZE // 2, 80.0, 160.0).repeat(SIZE, 0)
    image = ndimage.gaussian_filter(image, 1.5)
    image = image + sharpen * (image - ndimage.gaussian_filter(image, 2.0))
    return image + rng.standard_normal(image.shape)


def test_edge_profiles_measure_the_step_and_the_overshoot_of_unsharp_masking() -> None:
    rng = np.random.default_rng(3)
    mask = np.ones((SIZE, SIZE), bool)
    plain = display_stats.edge_profiles(_step(0.0, rng), mask, noise=1.0)
    sharp = display_stats.edge_profiles(_step(2.0, rng), mask, noise=1.0)
    assert plain["edge_cnr"] == pytest.approx(80.0, rel=0.05)
    assert plain["overshoot"] < 0.05 and plain["undershoot"] < 0.05
    assert sharp["overshoot"] > 0.1 and sharp["undershoot"] > 0.1


def test_detail_rms_grows_with_fine_structure_and_ignores_outside_the_field() -> None:
    rng = np.random.default_rng(4)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[32:-32, 32:-32] = True
    flat = 128 + 0.5 * rng.standard_normal((SIZE, SIZE))
    flat[~mask] = 0  # the shutters: black, and not counted
    checks = flat + 20 * ((np.indices((SIZE, SIZE)) // 4).sum(0) % 2)
    assert display_stats.detail_rms(flat, mask, 0.35, 100.0) < 0.01
    assert display_stats.detail_rms(checks, mask, 0.35, 100.0) > 0.05


def test_frame_stats_refuses_a_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match="one \\(H, W\\)"):
        display_stats.frame_stats(
            np.zeros((8, 8)), np.ones((4, 4), bool), 0.35, np.random.default_rng(0)
        )
