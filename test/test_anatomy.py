"""The procedural lumbar spine: deterministic, varied, labelled, with CT-like intensities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from x23d_ros.anatomy import LEVELS
from x23d_ros.anatomy.procedural import generate


@pytest.fixture(scope="module")
def spine():
    return generate(3, spacing_mm=2.0)


def test_same_seed_gives_the_same_volume_bit_for_bit(spine):
    again = generate(3, spacing_mm=2.0)
    assert again.hu.tobytes() == spine.hu.tobytes()
    assert again.labels.tobytes() == spine.labels.tobytes()
    np.testing.assert_array_equal(again.affine, spine.affine)


def test_different_seeds_give_different_spines(spine):
    other = generate(4, spacing_mm=2.0)
    assert other.hu.shape != spine.hu.shape or not np.array_equal(other.labels, spine.labels)
    a, b = spine.centres_mm(), other.centres_mm()
    assert max(np.linalg.norm(a[n] - b[n]) for n in LEVELS) > 1.0


def test_all_five_levels_are_labelled_in_order_from_l5_up(spine):
    assert spine.present_levels == ["L1", "L2", "L3", "L4", "L5"]
    z = [spine.centres_mm()[n][2] for n in ("L5", "L4", "L3", "L2", "L1")]
    assert np.all(np.diff(z) > 20.0), z  # superior is +z, one vertebra ≈ 25–35 mm apart
    assert np.all(np.diff(z) < 50.0), z


def test_each_vertebra_has_a_plausible_volume(spine):
    voxel_ml = np.prod(spine.spacing_mm) / 1000.0
    for name, idx in LEVELS.items():
        ml = (spine.labels == idx).sum() * voxel_ml
        assert 20.0 < ml < 90.0, f"{name}: {ml:.1f} ml"  # adult lumbar vertebrae ≈ 30–70 ml


def test_intensities_span_air_fat_soft_tissue_and_bone(spine):
    hu, bone = spine.hu, spine.labels > 0
    assert hu.min() < -900  # air around the body and bowel gas
    assert np.percentile(hu[~bone], 99) < 400
    assert -150 < np.median(hu[(hu > -200) & (hu < 0)]) < -50  # fat
    core = ndimage.binary_erosion(bone, iterations=2)
    shell = bone & ~ndimage.binary_erosion(bone)
    assert hu[shell].mean() > hu[core].mean() + 100  # cortex brighter than cancellous core
    assert 100 < np.median(hu[core]) < 500


def test_forty_seeds_all_make_a_complete_spine():
    for seed in range(40):
        spine = generate(1000 + seed, spacing_mm=5.0)
        assert spine.present_levels == ["L1", "L2", "L3", "L4", "L5"], seed
