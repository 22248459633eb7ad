"""Counting landmarks (`x23d_ros.landmarks`): where the sacrum and T12 should be, and whether
the shots show bone there."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros import geometry, landmarks, levels
from x23d_ros.anatomy import LEVELS
from x23d_ros.model.inputs import pixel_mm_at
from x23d_ros.poses import sample_views

UP = np.array([0.0, 0.0, 1.0])
#: One level caudal (mm), and where L4 is (the sacrum well inside the test's shots).
STEP = np.array([0.0, 2.0, -34.0])
L4 = np.array([0.0, 0.0, 20.0])


def _spine(names: list[str]) -> dict[str, np.ndarray]:
    """Level centres (mm) one `STEP` apart."""
    return {n: L4 + (LEVELS[n] - 4) * STEP for n in names}


def test_the_landmarks_lie_beyond_the_ends_of_the_line_through_the_found_levels():
    # L2 and L4 only (L3 missed): the step is per level index, not per level found.
    points = landmarks.expected_points(_spine(["L2", "L4"]), UP)
    np.testing.assert_allclose(points["T12"], L4 + (1 - landmarks.REACH - 4) * STEP, atol=1e-9)
    np.testing.assert_allclose(points["sacrum"], L4 + (5 + landmarks.REACH - 4) * STEP, atol=1e-9)
    # A level off the line (an end cut by the field's edge) moves the fit, not the whole step.
    centres = _spine(["L2", "L3", "L4"]) | {"L5": STEP + np.array([0.0, 0.0, 10.0])}
    origin, step = levels.fit_line(centres, list(LEVELS))
    np.testing.assert_allclose(
        landmarks.expected_points(centres, UP)["sacrum"], origin + 5.75 * step
    )


def test_one_level_found_steps_along_the_superior_axis():
    points = landmarks.expected_points({"L5": np.zeros(3)}, UP)
    np.testing.assert_allclose(points["sacrum"], [0, 0, -landmarks.REACH * levels.MEAN_STEP_MM])
    np.testing.assert_allclose(points["T12"], [0, 0, (4 + landmarks.REACH) * levels.MEAN_STEP_MM])
    assert landmarks.expected_points({}, UP) == {}


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
    sacrum = landmarks.expected_points(centres, UP)["sacrum"]
    images = [_image(p, size, [*centres.values(), *([sacrum] if sacrum_bone else [])]) for p in P]
    shown = landmarks.landmark_shots(centres, UP, images, P)
    assert shown["sacrum"] == expected
    # T12 is 1.75 steps above L3, 114 mm above the isocentre: outside these shots.
    assert shown["T12"] == 0
    assert landmarks.in_view(shown) == (["sacrum"] if expected else [])


def test_fluoroscopy_values_are_not_read_so_in_view_is_enough():
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    blank = [np.zeros((size, size), np.float32) for _ in P]
    shown = landmarks.landmark_shots(centres, UP, blank, P, bone_values=False)
    assert shown == {"sacrum": 3, "T12": 0}


def test_faint_bone_at_a_landmark_does_not_count():
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    sacrum = landmarks.expected_points(centres, UP)["sacrum"]
    faint = [_image(p, size, list(centres.values())) + _image(p, size, [sacrum], 0.3) for p in P]
    assert landmarks.landmark_shots(centres, UP, faint, P)["sacrum"] == 0


def test_one_shot_alone_does_not_put_a_landmark_in_view():
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    sacrum = landmarks.expected_points(centres, UP)["sacrum"]
    bones = list(centres.values())
    images = [_image(p, size, [*bones, sacrum] if i == 0 else bones) for i, p in enumerate(P)]
    shown = landmarks.landmark_shots(centres, UP, images, P)
    assert shown["sacrum"] == 1 and landmarks.in_view(shown) == []


def test_a_landmark_at_the_image_edge_or_with_no_found_level_in_the_shot_does_not_count():
    P, size = _views()
    centres = _spine(["L3", "L4", "L5"])
    sacrum = landmarks.expected_points(centres, UP)["sacrum"]
    uv, _ = geometry.project(P[0], sacrum[None])
    radius_px = landmarks.RADIUS_MM / pixel_mm_at(P[:1], sacrum)[0]
    image = _image(P[0], size, [*centres.values(), sacrum])
    # The same image cropped so that the point lies a third of the radius inside its bottom.
    bottom = int(uv[0, 1] + radius_px / 3)
    assert landmarks.shots_showing(sacrum, list(centres.values()), [image[:bottom]], P[:1]) == 0
    assert landmarks.shots_showing(sacrum, list(centres.values()), [image], P[:1]) == 1
    # Bone at the landmark, but no found level in the image to compare it with.
    far = [c + np.array([0.0, 0.0, 500.0]) for c in centres.values()]
    assert landmarks.shots_showing(sacrum, far, [image], P[:1]) == 0


def test_disc_mean_reads_the_part_inside_the_image():
    image = np.zeros((10, 10), np.float32)
    image[:, :5] = 2.0
    assert landmarks.disc_mean(image, np.array([0.5, 5.0]), 3.0) == pytest.approx(2.0)
    assert np.isnan(landmarks.disc_mean(image, np.array([-1.0, 5.0]), 3.0))
