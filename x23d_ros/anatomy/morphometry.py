"""Lumbar morphometry: the published per-level dimensions the procedural spine is sampled from.

Sources (mean ± SD per level, millimetres unless stated):
- [CTSP] CT cohort of automated segmentations, n ≈ 700–800 per level: endplate width, canal
  width, pedicle width, disc height (mid), trabecular HU. CTSpinoPelvic1K,
  `morphometrics/level_atlas.csv` (Gregory-Schwing-MD-PhD/CTSpinoPelvic1K).
- [Panjabi92] Panjabi et al., Human lumbar vertebrae: quantitative three-dimensional anatomy,
  Spine 17(3):299–306, 1992, Table 3: spinal canal depth SCD (mean ± SEM, n = 12; SD = SEM·√12).
- [Bonczar24] Bonczar et al. 2024 meta-analysis (n = 1481): anterior and posterior vertebral
  body height (means); the SD is taken from [CTSP]'s height rows.
- [Clouthier23] Clouthier et al., J Biomech 146:111421, 2023 (87 patients, mean over L2–L5):
  body depth 35.0 (29.5–42.0) against width 46.7 (39.4–58.8); spinous process length 51.6
  (43–61) and height 23.5 (16.6–31.0).
- Estimates without a source found (marked `estimate`): transverse-process span, pedicle
  height, lamina thickness, articular-process size, lumbar lordosis and sacral slope ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUMBAR = ("L1", "L2", "L3", "L4", "L5")

# (mean, sd) per level L1..L5
ENDPLATE_WIDTH = ((40.96, 4.72), (42.39, 4.58), (44.61, 5.19), (47.05, 5.61), (51.42, 8.13))  # CTSP
CANAL_WIDTH = ((24.11, 2.46), (24.36, 2.40), (25.19, 2.61), (26.44, 3.02), (30.27, 3.75))  # CTSP
CANAL_DEPTH = ((19.0, 2.32), (18.2, 1.84), (17.5, 1.84), (18.6, 2.46), (19.7, 1.70))  # Panjabi92
PEDICLE_WIDTH = ((7.07, 2.18), (7.08, 2.19), (9.18, 2.60), (12.47, 2.91), (20.82, 4.77))  # CTSP
HEIGHT_ANTERIOR = (
    (24.5, 2.80),
    (25.8, 2.40),
    (26.8, 2.12),
    (26.9, 2.20),
    (27.4, 2.64),
)  # Bonczar24
HEIGHT_POSTERIOR = (
    (26.6, 2.52),
    (27.0, 2.07),
    (26.7, 2.04),
    (25.8, 2.14),
    (24.1, 3.29),
)  # Bonczar24
# Disc below each level: L1L2 .. L5S1
DISC_HEIGHT = ((8.88, 1.62), (9.74, 2.14), (10.19, 2.11), (10.20, 2.57), (9.53, 3.33))  # CTSP
CANCELLOUS_HU = (
    (160.5, 42.5),
    (161.0, 43.3),
    (157.9, 44.1),
    (163.5, 45.0),
    (163.5, 45.0),
)  # CTSP (L5 = L4)
DEPTH_OVER_WIDTH = (35.0 / 46.7, 0.04)  # Clouthier23 means; sd estimate
SPINOUS_LENGTH = (51.6, 4.5)  # Clouthier23, measured from the body's posterior wall (range/4 as sd)
SPINOUS_HEIGHT = (23.5, 3.6)  # Clouthier23
TRANSVERSE_SPAN = (72.0, 80.0, 88.0, 84.0, 86.0)  # estimate: tip-to-tip, L3 longest
PEDICLE_HEIGHT = (15.5, 15.0, 14.5, 13.5, 13.0)  # estimate


@dataclass(frozen=True)
class LevelShape:
    """Sampled dimensions (mm) of one lumbar vertebra and the disc below it."""

    name: str
    width: float
    depth: float
    height_anterior: float
    height_posterior: float
    canal_width: float
    canal_depth: float
    pedicle_width: float
    pedicle_height: float
    spinous_length: float
    spinous_height: float
    transverse_span: float
    disc_below: float
    cancellous_hu: float

    @property
    def height(self) -> float:
        return 0.5 * (self.height_anterior + self.height_posterior)


def sample_levels(
    rng: np.random.Generator, size: float = 1.0, spread: float = 0.6
) -> list[LevelShape]:
    """Sample L1..L5 for one patient.

    `size` scales every length (the patient's overall build); each measure then varies by
    `spread` × its published SD. Levels share the build, so a patient's vertebrae stay
    consistent with one another, as in real spines.
    """

    def draw(mean_sd: tuple[float, float], lo: float) -> float:
        mean, sd = mean_sd
        return max(lo, size * (mean + spread * sd * rng.standard_normal()))

    depth_ratio = DEPTH_OVER_WIDTH[0] + DEPTH_OVER_WIDTH[1] * rng.standard_normal()
    spinous = draw(SPINOUS_LENGTH, 38.0)
    spinous_h = draw(SPINOUS_HEIGHT, 14.0)
    levels = []
    for i, name in enumerate(LUMBAR):
        width = draw(ENDPLATE_WIDTH[i], 32.0)
        levels.append(
            LevelShape(
                name=name,
                width=width,
                depth=width * depth_ratio,
                height_anterior=draw(HEIGHT_ANTERIOR[i], 18.0),
                height_posterior=draw(HEIGHT_POSTERIOR[i], 18.0),
                canal_width=draw(CANAL_WIDTH[i], 17.0),
                canal_depth=draw(CANAL_DEPTH[i], 12.0),
                pedicle_width=draw(PEDICLE_WIDTH[i], 5.0),
                pedicle_height=size * PEDICLE_HEIGHT[i] * (1 + 0.06 * rng.standard_normal()),
                spinous_length=spinous * (1 + 0.05 * rng.standard_normal()),
                spinous_height=spinous_h * (1 + 0.06 * rng.standard_normal()),
                transverse_span=size * TRANSVERSE_SPAN[i] * (1 + 0.07 * rng.standard_normal()),
                disc_below=draw(DISC_HEIGHT[i], 3.0),
                cancellous_hu=max(
                    60.0, CANCELLOUS_HU[i][0] + spread * CANCELLOUS_HU[i][1] * rng.standard_normal()
                ),
            )
        )
    return levels
