"""Shots are undistorted before they join a session: CameraInfo's models, a dewarp map, and a
refusal for models this package cannot undo."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros import geometry
from x23d_ros.distortion import (
    DewarpMap,
    DistortionError,
    distort_normalised,
    undistort,
)

K = geometry.intrinsics(1000.0, 4.0, 200, 160)  # 250 px focal length, 200 wide, 160 high


def _scene(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A smooth test pattern, as the ideal pinhole camera sees it at pixel (u, v)."""
    return np.sin(u / 7.0) * np.cos(v / 9.0) + 0.01 * u


def _distorted_frame(model: str, d) -> np.ndarray:
    """What the distorting camera records: at raw pixel (ud, vd), the scene at the ideal pixel
    that the model sends there (the model inverted by fixed-point iteration)."""
    vd, ud = np.mgrid[0:160, 0:200].astype(float)
    yd = (vd - K[1, 2]) / K[1, 1]
    xd = (ud - K[0, 2]) / K[0, 0]
    x, y = xd.copy(), yd.copy()
    for _ in range(50):
        fx, fy = distort_normalised(x, y, model, d)
        x, y = x + (xd - fx), y + (yd - fy)
    return _scene(K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]).astype(np.float32)


@pytest.mark.parametrize(
    "model, d",
    [
        ("plumb_bob", [-0.25, 0.08, 0.002, -0.001, 0.0]),  # barrel, with a tangential part
        ("rational_polynomial", [0.3, 0.05, 0.0, 0.001, 0.0, 0.1, 0.0, 0.0]),  # pincushion
    ],
)
def test_a_distorted_shot_is_brought_back_to_the_pinhole_image(model, d):
    raw = _distorted_frame(model, d)
    v, u = np.mgrid[0:160, 0:200].astype(float)
    ideal = _scene(u, v)
    inner = (slice(20, 140), slice(25, 175))
    before = np.abs(raw - ideal)[inner].max()
    after = np.abs(undistort(raw, K, model, d) - ideal)[inner].max()
    assert before > 0.2  # the distortion moves the pattern by pixels
    assert after < 0.02, (before, after)


def test_no_coefficients_means_no_resampling_and_unknown_models_are_refused():
    image = np.random.default_rng(0).random((160, 200)).astype(np.float32)
    assert undistort(image, K, "plumb_bob", []) is image
    assert undistort(image, K, "equidistant", [0.0, 0.0, 0.0, 0.0]) is image  # nothing to undo
    with pytest.raises(DistortionError, match="equidistant"):
        undistort(image, K, "equidistant", [0.1, 0.0, 0.0, 0.0])
    with pytest.raises(DistortionError, match="5 coefficients"):
        undistort(image, K, "plumb_bob", [0.1] * 6)


def test_a_dewarp_map_moves_each_pixel_from_where_the_map_says(tmp_path):
    image = np.random.default_rng(1).random((160, 200)).astype(np.float32)
    rows, columns = np.mgrid[0:160, 0:200].astype(float)
    path = tmp_path / "carm7.npz"
    np.savez(path, map_x=columns + 3.0, map_y=rows - 2.0)  # the raw frame is shifted
    dewarp = DewarpMap.load(path)
    out = dewarp.apply(image)
    np.testing.assert_allclose(out[2:, :-3], image[:-2, 3:], atol=1e-6)
    with pytest.raises(DistortionError, match="one frame size"):
        dewarp.apply(image[:100])
    np.savez(tmp_path / "bad.npz", map_x=columns)
    with pytest.raises(DistortionError, match="map_x and map_y"):
        DewarpMap.load(tmp_path / "bad.npz")


def test_the_undistortion_map_is_made_once_per_camera_not_per_frame():
    """A 30 Hz stream sends the same K and coefficients with every frame: the map is reused
    (the same arrays, read-only), and a new K makes a new one."""
    from x23d_ros.distortion import undistortion_map

    d = [-0.2, 0.05, 0.001, -0.001, 0.0]
    frame = _distorted_frame("plumb_bob", d)
    first = undistort(frame, K, "plumb_bob", d)
    hits = undistortion_map.cache_info().hits
    np.testing.assert_array_equal(undistort(frame, K, "plumb_bob", d), first)
    assert undistortion_map.cache_info().hits == hits + 1
    key = (160, 200, tuple(np.asarray(K, float).ravel().tolist()), "plumb_bob", tuple(d))
    assert not undistortion_map(*key)[0].flags.writeable
    other = K.copy()
    other[0, 2] += 3.0
    misses = undistortion_map.cache_info().misses
    undistort(frame, other, "plumb_bob", d)
    assert undistortion_map.cache_info().misses == misses + 1
