"""Real CT with vertebra labels → `Anatomy`, resampled to an axis-aligned LPS grid.

Labels come either as one multi-label NIfTI with a level → id map (TotalSegmentator v2's ids by
default: L1 = 31 … L5 = 27) or as a folder with `vertebrae_L1.nii.gz` … `vertebrae_L5.nii.gz`
(TotalSegmentator's per-structure output). Levels that are absent, or that touch the edge of
the scan (cut off), are reported in `meta["missing"]` / `meta["partial"]` and logged; they are
never guessed. A label volume whose grid differs from the CT's is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from x23d_ros.anatomy import LEVELS, Anatomy, AnatomyError

log = logging.getLogger(__name__)

#: TotalSegmentator v2 "total" task ids of the lumbar vertebrae.
TOTALSEGMENTATOR_IDS: dict[str, int] = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27}
#: NIfTI world coordinates are RAS; the project's are LPS.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def load_ct(
    ct_path: str | Path,
    labels_path: str | Path,
    level_ids: dict[str, int] | None = None,
    spacing_mm: float = 1.0,
    tolerance_mm: float = 0.5,
) -> Anatomy:
    """Load a CT and its L1–L5 labels, resampled to isotropic `spacing_mm` in LPS."""
    ct = nib.load(str(ct_path))
    labels_path = Path(labels_path)
    if labels_path.is_dir():
        labels = _labels_from_folder(labels_path, ct, tolerance_mm)
    else:
        img = nib.load(str(labels_path))
        _check_same_grid(ct, img, labels_path, tolerance_mm)
        raw = np.asarray(img.dataobj)
        labels = np.zeros(raw.shape, np.uint8)
        for name, idx in (level_ids or TOTALSEGMENTATOR_IDS).items():
            labels[raw == idx] = LEVELS[name]
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    hu, labels, affine = _resample_lps(hu, labels, _RAS_TO_LPS @ ct.affine, spacing_mm)
    missing = [n for n, i in LEVELS.items() if not (labels == i).any()]
    partial = [n for n, i in LEVELS.items() if n not in missing and _touches_edge(labels == i)]
    if missing or partial:
        log.warning(
            "%s: levels missing %s, cut off at the scan's edge %s", ct_path, missing, partial
        )
    return Anatomy(
        hu=hu,
        labels=labels,
        affine=affine,
        source=f"ct:{Path(ct_path).name}",
        meta={
            "missing": missing,
            "partial": partial,
            "ct": str(ct_path),
            "labels": str(labels_path),
        },
    )


def _labels_from_folder(folder: Path, ct: nib.Nifti1Image, tolerance_mm: float) -> np.ndarray:
    labels = np.zeros(ct.shape[:3], np.uint8)
    for name, idx in LEVELS.items():
        path = folder / f"vertebrae_{name}.nii.gz"
        if not path.is_file():
            continue
        img = nib.load(str(path))
        _check_same_grid(ct, img, path, tolerance_mm)
        labels[np.asarray(img.dataobj) > 0] = idx
    return labels


def _check_same_grid(
    ct: nib.Nifti1Image, other: nib.Nifti1Image, path: Path, tolerance_mm: float
) -> None:
    if other.shape[:3] != ct.shape[:3]:
        raise AnatomyError(f"labels {path} have shape {other.shape[:3]}, the CT {ct.shape[:3]}")
    corners = np.array(
        [[i, j, k, 1] for i in (0, ct.shape[0]) for j in (0, ct.shape[1]) for k in (0, ct.shape[2])]
    )
    offset = np.abs((corners @ ct.affine.T) - (corners @ other.affine.T))[:, :3].max()
    if offset > tolerance_mm:
        raise AnatomyError(
            f"labels {path} are not on the CT's grid: their affine puts the volume's corners up to "
            f"{offset:.1f} mm from the CT's (tolerance {tolerance_mm} mm)"
        )


def _resample_lps(hu: np.ndarray, labels: np.ndarray, affine_lps: np.ndarray, spacing_mm: float):
    """Resample onto an axis-aligned LPS grid covering the scan, at isotropic `spacing_mm`."""
    corners = np.array(
        [
            [i, j, k]
            for i in (0, hu.shape[0] - 1)
            for j in (0, hu.shape[1] - 1)
            for k in (0, hu.shape[2] - 1)
        ]
    )
    mm = corners @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    lo, hi = mm.min(0), mm.max(0)
    shape = np.floor((hi - lo) / spacing_mm).astype(int) + 1
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    to_source = np.linalg.inv(affine_lps) @ affine  # new voxel index → old voxel index
    new_hu = ndimage.affine_transform(
        hu, to_source, output_shape=tuple(shape), order=1, cval=-1000.0
    )
    new_labels = ndimage.affine_transform(
        labels, to_source, output_shape=tuple(shape), order=0, cval=0
    )
    return new_hu.astype(np.float32), new_labels.astype(np.uint8), affine


def _touches_edge(mask: np.ndarray) -> bool:
    """True if the structure reaches the first or last slice along any axis: it is cut off.

    The resampled grid spans the scan's bounding box; for a scan acquired at an oblique
    orientation, a cut can also lie inside the grid, and that is not detected.
    """
    return any(mask.take(0, axis=a).any() or mask.take(-1, axis=a).any() for a in range(3))
