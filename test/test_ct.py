"""The real-CT loader: both label layouts, LPS resampling, refusal of mismatched grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from x23d_ros.anatomy import AnatomyError
from x23d_ros.anatomy.ct import TOTALSEGMENTATOR_IDS, load_ct

# A small CT in RAS with 2 mm voxels, i flipped (as many scanners store it).
AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -30.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])
SHAPE = (30, 30, 40)


def _blocks() -> np.ndarray:
    """L1..L5 as boxes stacked along k (superior), L5 lowest; L1 touches the top slice."""
    ids = np.zeros(SHAPE, np.int16)
    for i, name in enumerate(("L5", "L4", "L3", "L2", "L1")):
        ids[10:20, 12:22, 2 + 8 * i : 8 + 8 * i + (2 if name == "L1" else 0)] = (
            TOTALSEGMENTATOR_IDS[name]
        )
    return ids


@pytest.fixture
def ct_files(tmp_path):
    ids = _blocks()
    hu = np.where(ids > 0, 700, -50).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, AFFINE), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(ids, AFFINE), tmp_path / "multilabel.nii.gz")
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for name, idx in TOTALSEGMENTATOR_IDS.items():
        if name != "L4":  # one level missing from the folder
            nib.save(
                nib.Nifti1Image((ids == idx).astype(np.uint8), AFFINE),
                folder / f"vertebrae_{name}.nii.gz",
            )
    return tmp_path


def test_multilabel_file_with_totalsegmentator_ids_gives_all_levels(ct_files):
    anatomy = load_ct(ct_files / "ct.nii.gz", ct_files / "multilabel.nii.gz", spacing_mm=2.0)
    assert anatomy.present_levels == ["L1", "L2", "L3", "L4", "L5"]
    z = [anatomy.centres_mm()[n][2] for n in ("L5", "L4", "L3", "L2", "L1")]
    assert np.all(np.diff(z) > 0)  # superior stays +z
    # RAS → LPS: the CT's i axis pointed to the patient's left in RAS (x = 40 − 2i) = +x in LPS.
    centre_x_ras = 40.0 - 2.0 * 14.5
    assert anatomy.centres_mm()["L3"][0] == pytest.approx(-centre_x_ras, abs=1.0)
    assert anatomy.meta["partial"] == ["L1"]  # it reaches the scan's top slice
    assert anatomy.hu.max() == pytest.approx(700, abs=1)


def test_folder_of_per_level_files_reports_the_missing_level(ct_files):
    anatomy = load_ct(ct_files / "ct.nii.gz", ct_files / "segmentations", spacing_mm=2.0)
    assert anatomy.present_levels == ["L1", "L2", "L3", "L5"]
    assert anatomy.meta["missing"] == ["L4"]


def test_labels_on_another_grid_are_refused(tmp_path, ct_files):
    shifted = AFFINE.copy()
    shifted[2, 3] += 5.0
    nib.save(nib.Nifti1Image(_blocks(), shifted), tmp_path / "shifted.nii.gz")
    with pytest.raises(AnatomyError, match=r"not on the CT's grid: .* 5\.0 mm"):
        load_ct(ct_files / "ct.nii.gz", tmp_path / "shifted.nii.gz")


def test_labels_of_another_shape_are_refused(tmp_path, ct_files):
    nib.save(nib.Nifti1Image(_blocks()[:, :, :30], AFFINE), tmp_path / "short.nii.gz")
    with pytest.raises(AnatomyError, match="shape"):
        load_ct(ct_files / "ct.nii.gz", tmp_path / "short.nii.gz")
