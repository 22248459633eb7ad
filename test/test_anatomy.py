"""The procedural lumbar spine: deterministic, varied, labelled, with CT-like intensities."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from x23d_ros.anatomy import LEVELS
from x23d_ros.anatomy.procedural import SpineParams, generate, spine_params


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


def _bone_top_above_l1_mm(spine) -> float:
    """How far above L1's centre (mm, along z) the highest bone voxel of the column lies."""
    column = spine.hu > 300
    k = np.nonzero(column.any(axis=(0, 1)))[0].max()
    return float(spine.affine[2, 2] * k + spine.affine[2, 3] - spine.centres_mm()["L1"][2])


def test_the_thoracic_spine_goes_on_above_l1_unlabelled(spine):
    # T12, T11 and T10 (≈ 25–35 mm each, with discs) are bone above L1 but no level's label.
    assert _bone_top_above_l1_mm(spine) > 90.0
    above = spine.centres_mm()["L1"][2] + 25.0
    k0 = int(np.ceil((above - spine.affine[2, 3]) / spine.affine[2, 2]))
    assert (spine.hu[:, :, k0:] > 300).sum() > 1000
    assert not spine.labels[:, :, k0:].any()
    only_t12 = generate(3, spacing_mm=2.0, params=SpineParams(thoracic_levels=1))
    assert _bone_top_above_l1_mm(only_t12) < _bone_top_above_l1_mm(spine) - 50.0
    with pytest.raises(ValueError, match="thoracic_levels"):
        generate(3, spacing_mm=5.0, params=SpineParams(thoracic_levels=9))


def _core_hu(spine, level: str = "L2") -> np.ndarray:
    """HU of a level's voxels two voxels or more inside its surface (cancellous bone)."""
    return spine.hu[ndimage.binary_erosion(spine.labels == LEVELS[level], iterations=2)]


def test_procedural_3_draws_procedural_2s_spine_with_its_own_bone(spine):
    uncut = dict(scan_cut_p=0.0, trabecular_patient_sd_hu=0.0, trabecular_level_sd_hu=0.0)
    three = generate(3, spacing_mm=2.0, params=replace(spine_params("procedural-3"), **uncut))
    np.testing.assert_array_equal(three.labels, spine.labels)  # the same shapes, voxel for voxel
    np.testing.assert_array_equal(three.affine, spine.affine)
    assert not np.array_equal(three.hu, spine.hu)
    # One density for the patient's levels (no spread between them here), set by the age.
    cancellous = {level["cancellous_hu"] for level in three.meta["levels"]}
    assert len(cancellous) == 1
    assert 25.0 <= three.meta["age_years"] <= 85.0
    with pytest.raises(ValueError, match="generator must be one of"):
        generate(3, spacing_mm=5.0, generator="procedural-9")


def test_older_patients_have_bodies_that_the_bone_threshold_leaves_hollow():
    # Jang et al. 2019: ≈ 226 HU at 25 years, ≈ 90 HU at 90; the synthetic DRR keeps > 150 HU.
    def at(age):
        params = SpineParams(
            age_years=(age, age), trabecular_sd_hu=(30.0, 30.0), trabecular_patient_sd_hu=0.0
        )
        return generate(3, spacing_mm=2.0, params=params)

    young, old = _core_hu(at(25.0)), _core_hu(at(85.0))
    assert np.median(young) > 190 and np.mean(young > 150) > 0.75
    assert np.median(old) < 130 and np.mean(old > 150) < 0.35
    # Heterogeneous, in HU: tens of HU from voxel to voxel, not ±10 % of a uniform core.
    assert 15.0 < np.std(old) < 60.0


def test_a_scan_range_that_ends_inside_the_lumbar_spine_drops_what_lies_below(spine):
    cut = generate(3, spacing_mm=2.0, params=SpineParams(scan_cut_p=1.0))
    z_cut = cut.meta["scan_cut_z_mm"]
    centres = spine.centres_mm()
    assert centres["L4"][2] <= z_cut <= centres["L1"][2]
    assert "L1" in cut.present_levels and "L5" not in cut.present_levels
    assert cut.bounds_mm()[0][2] >= z_cut - 1e-6  # nothing below the cut ...
    # ... and above it, the same volume as uncut.
    k = round(float(cut.affine[2, 3] - spine.affine[2, 3]) / 2.0)
    np.testing.assert_array_equal(cut.labels, spine.labels[:, :, k:])
    np.testing.assert_array_equal(cut.hu, spine.hu[:, :, k:])
