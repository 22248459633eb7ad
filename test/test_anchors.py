"""Counting landmarks (`x23d_ros.anchors`): where the sacrum and T12 should be, and whether the
shots show them."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros import anchors, geometry
from x23d_ros.anatomy import LEVELS
from x23d_ros.model.inputs import pixel_mm_at
from x23d_ros.poses import sample_views

ORDER = list(LEVELS)
UP = np.array([0.0, 0.0, 1.0])


STEP = np.array([0.0, 2.0, -34.0])  # one level caudal (mm)


def _spine(levels: list[str], step: np.ndarray = STEP) -> dict[str, np.ndarray]:
    """Level centres (mm) one `step` (caudal) apart, L4 at the origin."""
    return {n: (ORDER.index(n) - 3) * step for n in levels}


def test_the_landmarks_lie_beyond_the_last_levels_found_along_their_own_steps():
    step = np.array([0.0, 2.0, -34.0])
    points = anchors.expected_points(_spine(["L2", "L3", "L4"], step), ORDER, UP)
    # T12 is 1.75 steps above L2 (REACH 0.75 beyond L1), the sacrum 1.75 steps below L4.
    np.testing.assert_allclose(points["T12"], (-2 - 1 - anchors.REACH) * step)
    np.testing.assert_allclose(points["sacrum"], (1 + anchors.REACH) * step)


def test_one_level_found_steps_along_the_superior_axis():
    points = anchors.expected_points({"L5": np.zeros(3)}, ORDER, UP)
    np.testing.assert_allclose(points["sacrum"], [0, 0, -anchors.REACH * anchors.STEP_MM])
    np.testing.assert_allclose(points["T12"], [0, 0, (4 + anchors.REACH) * anchors.STEP_MM])
    assert anchors.expected_points({}, ORDER, UP) == {}


def _views() -> tuple[np.ndarray, int]:
    """P (3, 3, 4) of C-arm shots around the origin (AP, lateral, oblique) at 256²."""
    size = 256
    poses = sample_views(3, np.zeros(3), np.random.default_rng(0), "ap_lat_oblique")
    P = np.stack([geometry.projection_matrix(p.intrinsics(size), p.T_ref_source) for p in poses])
    return P, size


def _image(P: np.ndarray, size: int, bones: list[np.ndarray], value=1.0) -> np.ndarray:
    """A synthetic-domain image: `value` in a 12 mm disc around each bone's projection."""
    image = np.zeros((size, size), np.float32)
    vv, uu = np.mgrid[0:size, 0:size] + 0.5
    for bone in bones:
        uv, _ = geometry.project(P, bone[None])
        r = 12.0 / pixel_mm_at(P[None], bone)[0]
        image[(uu - uv[0, 0]) ** 2 + (vv - uv[0, 1]) ** 2 <= r * r] = value
    return image


@pytest.mark.parametrize("sacrum_bone, expected", [(True, 3), (False, 0)])
def test_a_landmark_counts_in_the_shots_that_show_bone_there(sacrum_bone, expected):
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    sacrum = anchors.expected_points(centres, ORDER, UP)["sacrum"]
    bones = [*centres.values(), *([sacrum] if sacrum_bone else [])]
    images = [_image(p, size, bones) for p in P]
    shown = anchors.anchors(centres, ORDER, UP, images, P)
    assert shown["sacrum"] == expected
    # T12 is 2.75 steps above L3: outside these shots (a field of about 170 mm).
    assert shown["T12"] == 0
    assert anchors.anchored(shown) == (["sacrum"] if expected else [])
    # Fluoroscopy-domain values are not read: in view is enough.
    assert anchors.anchors(centres, ORDER, UP, images, P, bone_values=False)["sacrum"] == 3


def test_faint_bone_at_a_landmark_or_one_shot_alone_does_not_anchor():
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    sacrum = anchors.expected_points(centres, ORDER, UP)["sacrum"]
    faint = [_image(p, size, list(centres.values())) + _image(p, size, [sacrum], 0.3) for p in P]
    assert anchors.anchors(centres, ORDER, UP, faint, P)["sacrum"] == 0
    one = [
        _image(p, size, [*centres.values(), sacrum] if i == 0 else list(centres.values()))
        for i, p in enumerate(P)
    ]
    shown = anchors.anchors(centres, ORDER, UP, one, P)
    assert shown["sacrum"] == 1 and anchors.anchored(shown) == []


def test_disc_mean_reads_the_part_inside_the_image():
    image = np.zeros((10, 10), np.float32)
    image[:, :5] = 2.0
    assert anchors.disc_mean(image, np.array([0.5, 5.0]), 3.0) == pytest.approx(2.0)
    assert np.isnan(anchors.disc_mean(image, np.array([-1.0, 5.0]), 3.0))
