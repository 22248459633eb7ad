"""Metrics against hand-computed values on cubes and spheres."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros.metrics import (
    level_metrics,
    summarise,
    vertebra_metrics,
    wrong_level,
    wrong_vertebra,
)


def _cube(shape=(30, 30, 30), lo=(10, 10, 10), size=10) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def _ball(radius_vox: float, n: int = 48) -> np.ndarray:
    c = (n - 1) / 2
    i, j, k = np.indices((n, n, n))
    return (i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2 <= radius_vox**2


def test_identical_masks_score_perfectly():
    m = vertebra_metrics(_cube(), _cube(), 1.0)
    assert m["f1"] == 1.0 and m["surface_1mm"] == 1.0
    assert m["assd_mm"] == 0.0 and m["hd95_mm"] == 0.0 and m["centre_err_mm"] == 0.0


def test_cube_shifted_by_one_voxel_has_dice_0_9_and_centre_error_one_voxel():
    m = vertebra_metrics(_cube(lo=(11, 10, 10)), _cube(), np.array([0.8, 1.0, 1.0]))
    assert m["f1"] == pytest.approx(2 * 900 / 2000)  # 9 of 10 slices overlap
    assert m["centre_err_mm"] == pytest.approx(0.8)  # one voxel along i, 0.8 mm
    assert m["hd95_mm"] == pytest.approx(0.8)


def test_concentric_spheres_one_voxel_apart_are_one_mm_apart_on_the_surface():
    m = vertebra_metrics(_ball(15.0), _ball(16.0), 1.0)
    assert m["assd_mm"] == pytest.approx(1.0, abs=0.25)
    assert m["hd95_mm"] == pytest.approx(1.0, abs=0.5)
    assert m["centre_err_mm"] == pytest.approx(0.0, abs=1e-9)


def test_surface_score_counts_surface_within_the_tolerance():
    near = vertebra_metrics(_ball(15.0), _ball(15.5), 1.0)
    far = vertebra_metrics(_ball(12.0), _ball(16.0), 1.0)
    assert near["surface_1mm"] > 0.95 and near["surface_2mm"] > 0.99
    assert far["surface_1mm"] < 0.05 and far["surface_2mm"] < 0.05  # 4 mm apart everywhere


def test_on_a_grid_coarser_than_both_tolerances_they_score_alike():
    # Surfaces one voxel apart: 1.5 mm on a 1.5 mm grid (within 2 mm, not within 1 mm), but
    # 2.1 mm on a 2.1 mm grid, where any non-zero distance exceeds both tolerances (the fine
    # stage's validation grid), so surface_1mm equals surface_2mm there.
    fine = vertebra_metrics(_ball(15.0), _ball(16.0), 1.5)
    assert fine["surface_1mm"] < fine["surface_2mm"]
    coarse = vertebra_metrics(_ball(15.0), _ball(16.0), 2.1)
    assert coarse["surface_1mm"] == coarse["surface_2mm"] < 1.0


def test_a_mask_over_the_next_vertebra_is_the_wrong_level():
    labels = np.zeros((30, 30, 60), np.int64)
    labels[10:20, 10:20, 40:50] = 1  # L1
    labels[10:20, 10:20, 20:30] = 2  # L2
    own = np.zeros(labels.shape, bool)
    own[10:20, 10:20, 38:52] = True  # L1 and some background around it
    assert wrong_level(own, labels, 1) == 0.0
    slipped = np.zeros(labels.shape, bool)
    slipped[10:20, 10:20, 25:42] = True  # half of L2, two slices of L1
    assert wrong_level(slipped, labels, 1) == 1.0
    assert wrong_level(slipped, labels, 2) == 0.0
    assert np.isnan(wrong_level(np.zeros(labels.shape, bool), labels, 1))
    rows = [{"L1": {**vertebra_metrics(own, labels == 1, 1.0), "wrong_level": 0.0}}]
    rows.append({"L1": {**vertebra_metrics(slipped, labels == 1, 1.0), "wrong_level": 1.0}})
    assert summarise(rows)["mean"]["wrong_level"] == pytest.approx(0.5)
    # Rows that do not carry it (training's validation) are summarised without it.
    assert "wrong_level" not in summarise([{"L1": vertebra_metrics(own, labels == 1, 1.0)}])["mean"]


def test_a_level_on_the_next_vertebra_or_on_t12_is_the_wrong_vertebra():
    """`wrong_vertebra` (the level names' benchmark): what a wrong level lies on, including
    vertebrae outside L1–L5 (background in the labels), which `wrong_level` cannot see."""
    labels = np.zeros((30, 30, 60), np.int64)
    labels[10:20, 10:20, 40:50] = 1  # L1; T12 would be above it, at 52..60 (background)
    labels[10:20, 10:20, 20:30] = 2  # L2
    own = np.zeros(labels.shape, bool)
    own[10:20, 10:20, 38:52] = True  # L1 and some background around it
    assert wrong_vertebra(own, labels, 1) is None
    slipped = np.zeros(labels.shape, bool)
    slipped[10:20, 10:20, 25:42] = True  # half of L2, two slices of L1
    assert wrong_vertebra(slipped, labels, 1) == 2 and wrong_vertebra(slipped, labels, 2) is None
    on_t12 = np.zeros(labels.shape, bool)
    on_t12[10:20, 10:20, 48:60] = True  # 2 slices of L1 in 12: under a quarter on its own
    assert wrong_level(on_t12, labels, 1) == 0.0 and wrong_vertebra(on_t12, labels, 1) == 0
    assert wrong_vertebra(on_t12, labels, 1, own_share=0.1) is None
    assert wrong_vertebra(np.zeros(labels.shape, bool), labels, 1) == 0


def test_empty_prediction_scores_zero_and_is_counted_as_missed():
    empty = vertebra_metrics(np.zeros((30, 30, 30), bool), _cube(), 1.0)
    assert empty["f1"] == 0.0 and np.isnan(empty["assd_mm"])
    gt = _cube().astype(np.uint8) * 2  # L2
    summary = summarise([level_metrics(gt, gt, 1.0), level_metrics(np.zeros_like(gt), gt, 1.0)])
    assert summary["mean"]["f1"] == pytest.approx(0.5)
    assert summary["mean"]["missed"] == 1
    assert set(summary["per_level"]) == {"L2"}
    assert summary["cases"] == 2
