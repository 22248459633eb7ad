"""Anatomy: a CT-like HU volume with its L1–L5 label map, from a generator or a real CT.

Frame: millimetres in the patient's LPS frame (x towards the patient's left, y posterior,
z superior), the DICOM convention. `affine` maps a voxel index (i, j, k, 1) to that frame;
a volume never travels without it (shared/STYLE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Label ids of the lumbar levels in every label map of the project (TotalSegmentator order).
LEVELS: dict[str, int] = {"L1": 1, "L2": 2, "L3": 3, "L4": 4, "L5": 5}
#: The levels' names, from cranial to caudal.
LEVEL_NAMES: list[str] = list(LEVELS)


class AnatomyError(ValueError):
    """An anatomy that cannot be used as given; the message says what is wrong."""


@dataclass
class Anatomy:
    """A CT-like volume of the lumbar spine and its labels.

    hu: (I, J, K) float32 Hounsfield units.
    labels: (I, J, K) uint8, 0 = background, `LEVELS[name]` for each vertebra.
    affine: (4, 4) voxel index → mm (LPS).
    """

    hu: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    source: str
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.shape != self.labels.shape:
            raise AnatomyError(f"hu {self.hu.shape} and labels {self.labels.shape} differ in shape")
        if self.affine.shape != (4, 4):
            raise AnatomyError(f"affine must be (4, 4), got {self.affine.shape}")

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size (3,) along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def present_levels(self) -> list[str]:
        present = set(np.unique(self.labels).tolist())
        return [name for name, idx in LEVELS.items() if idx in present]

    def centres_mm(self) -> dict[str, np.ndarray]:
        """Centroid (3,) in mm of each present level's voxels."""
        centres = {}
        for name in self.present_levels:
            ijk = np.argwhere(self.labels == LEVELS[name]).mean(axis=0)
            centres[name] = self.affine[:3, :3] @ ijk + self.affine[:3, 3]
        return centres

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corners (3,) of the volume's box in mm (voxel centres)."""
        corners = np.array(
            [
                [i, j, k]
                for i in (0, self.hu.shape[0] - 1)
                for j in (0, self.hu.shape[1] - 1)
                for k in (0, self.hu.shape[2] - 1)
            ]
        )
        mm = corners @ self.affine[:3, :3].T + self.affine[:3, 3]
        return mm.min(axis=0), mm.max(axis=0)
