"""The coarse stage's blobs → one per level, stacked like a spine."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros.levels import STEP_MM, Blob, blobs, chain

ORDER = ["L1", "L2", "L3", "L4", "L5"]


def _spine(step=(0.0, 0.0, -35.0), mass=10.0) -> dict[str, list[Blob]]:
    """One blob per level, L1 at the origin, each next level one `step` on."""
    return {n: [Blob(np.array(step) * i, mass)] for i, n in enumerate(ORDER)}


def _picked(result: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {n: p.round(1).tolist() for n, p in result.items()}


def test_a_straight_or_lordotic_spine_keeps_every_level():
    assert _picked(chain(_spine(), ORDER)) == _picked({n: b[0].point for n, b in _spine().items()})
    # Bent by 20° per level (a strong lordosis): still a spine.
    bent = {}
    for i, n in enumerate(ORDER):
        angle = np.radians(20.0 * i)
        bent[n] = [Blob(np.array([0.0, 35.0 * np.sin(angle), -35.0 * i]), 10.0)]
    assert set(chain(bent, ORDER)) == set(ORDER)


def test_a_heavier_decoy_above_l1_loses_to_the_blob_that_continues_the_spine():
    candidates = _spine()
    decoy = Blob(np.array([0.0, 0.0, 70.0]), 25.0)  # "L4" two vertebrae above L1
    right = Blob(np.array([0.0, 0.0, -105.0]), 5.0)
    candidates["L4"] = [decoy, right]
    picked = chain(candidates, ORDER)
    assert picked["L4"].tolist() == right.point.tolist()
    assert set(picked) == set(ORDER)


def test_a_blob_that_cannot_be_part_of_the_spine_is_dropped_and_a_gap_is_allowed():
    candidates = _spine()
    del candidates["L2"]  # not found: L1 and L3 are two steps apart
    candidates["L5"] = [Blob(np.array([0.0, -60.0, 0.0]), 12.0)]  # in front of L1
    picked = chain(candidates, ORDER)
    assert set(picked) == {"L1", "L3", "L4"}


def test_levels_too_close_or_too_far_apart_do_not_stack():
    for gap in (STEP_MM[0] - 2.0, STEP_MM[1] + 2.0):
        candidates = {"L1": [Blob(np.zeros(3), 10.0)], "L2": [Blob(np.array([0, 0, -gap]), 9.0)]}
        assert list(chain(candidates, ORDER)) == ["L1"]
    assert chain({}, ORDER) == {}


def test_a_spine_that_folds_back_is_not_a_spine():
    candidates = _spine()
    candidates["L3"] = [Blob(np.array([0.0, 0.0, -35.0 + 1.0]), 1.0)]  # on top of L2
    candidates["L3"].append(Blob(np.array([0.0, 30.0, -35.0]), 2.0))  # a right angle at L2
    picked = chain(candidates, ORDER)
    assert "L3" not in picked and set(picked) == {"L1", "L2", "L4", "L5"}


def test_blobs_are_the_components_of_the_level_heaviest_first():
    labels = np.zeros((12, 6, 6), int)
    labels[0:2, 0:2, 0:2] = 1  # 8 voxels
    labels[5:10, 0:3, 0:3] = 1  # 45 voxels
    labels[11, 5, 5] = 1  # 1 voxel: under min_voxels
    labels[0:3, 4:6, 4:6] = 2
    prob = np.full(labels.shape, 0.5)
    points = np.stack(np.meshgrid(*[np.arange(n) * 4.0 for n in labels.shape], indexing="ij"), -1)
    found = blobs(labels, prob, points, 1, min_voxels=4, where="box")
    assert [b.mass for b in found] == [22.5, 4.0]
    assert found[0].point.tolist() == [28.0, 4.0, 4.0]
    centroid = blobs(labels, prob, points, 1, min_voxels=4, where="centroid")[1]
    assert centroid.point.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="box or centroid"):
        blobs(labels, prob, points, 1, 4, "middle")
