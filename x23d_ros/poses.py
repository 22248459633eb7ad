"""Clinically plausible C-arm shots around a lumbar spine (shared/DESIGN.md §4).

The C-arm's two angles, in the patient's LPS frame with the patient prone on the table:
- orbital `alpha` about the long axis (z): 0° = AP, ±90° = lateral from the left/right;
- angular `beta` (cranial/caudal tilt) about the left-right axis (x).
Kinds follow X23D's catalogue (Jecklin et al., J. Imaging 2022, §2.3.2): AP shots with
sagittal deviation, laterals from both sides with coronal deviation, obliques, and
"miscellaneous" shots deviating in both planes. The isocentre is placed near the spine
with a random offset, as a radiographer centres a shot by eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from x23d_ros import geometry

KINDS = ("ap", "lateral", "oblique", "mixed")
#: Named view configurations for benchmarks: the kinds of their shots, in order.
CONFIGURATIONS = {
    "ap_lat": ("ap", "lateral"),
    "ap_lat_oblique": ("ap", "lateral", "oblique"),
}


@dataclass(frozen=True)
class PoseParams:
    """Ranges (low, high) sampled uniformly; single floats are standard deviations."""

    sdd_mm: tuple[float, float] = (950.0, 1050.0)
    source_iso_mm: tuple[float, float] = (530.0, 650.0)  # DeepDRR Cios: 530; xreg Cios Fusion: ≈632
    detector_mm: tuple[float, float] = (280.0, 310.0)  # 30 cm flat panel or a 12" intensifier
    iso_offset_mm: tuple[float, float, float] = (10.0, 10.0, 15.0)  # SD in x, y, z
    strict_sd_deg: float = 2.0  # how well a "strict" AP or lateral is aligned
    deviation_deg: tuple[float, float] = (8.0, 25.0)  # deviated AP/lateral shots
    oblique_deg: tuple[float, float] = (25.0, 55.0)
    mixed_beta_deg: float = 25.0
    detector_roll_sd_deg: float = 3.0
    tube_below_table: float = 0.8  # share of AP shots with the source anterior (prone patient)


@dataclass(frozen=True)
class ShotPose:
    kind: str
    T_ref_source: np.ndarray  # (4, 4)
    sdd_mm: float
    detector_mm: float
    alpha_deg: float
    beta_deg: float

    def intrinsics(self, image_size: int) -> np.ndarray:
        """K (3, 3) of this shot's detector read out at `image_size`² pixels."""
        return geometry.intrinsics(
            self.sdd_mm, self.detector_mm / image_size, image_size, image_size
        )


def sample_pose(
    kind: str, centre_mm: np.ndarray, rng: np.random.Generator, p: PoseParams = PoseParams()
) -> ShotPose:
    """One shot of `kind` (see `KINDS`) centred near `centre_mm` (3,)."""
    if kind not in KINDS:
        raise ValueError(f"unknown view kind {kind!r}; expected one of {KINDS}")

    def strict() -> float:
        return rng.normal(0.0, p.strict_sd_deg)

    def deviated() -> float:  # half the shots deviate on purpose, in either direction
        if rng.random() < 0.5:
            return rng.choice([-1, 1]) * rng.uniform(*p.deviation_deg)
        return strict()

    if kind == "ap":
        alpha, beta = strict(), deviated()
        if rng.random() >= p.tube_below_table:
            alpha += 180.0  # source posterior
    elif kind == "lateral":
        alpha, beta = rng.choice([-90.0, 90.0]) + deviated(), strict()
    elif kind == "oblique":
        alpha, beta = rng.choice([-1, 1]) * rng.uniform(*p.oblique_deg), strict()
    else:
        alpha, beta = rng.uniform(-90.0, 90.0), rng.uniform(-p.mixed_beta_deg, p.mixed_beta_deg)
    iso = np.asarray(centre_mm, float) + rng.normal(0.0, p.iso_offset_mm)
    a, b = np.radians(alpha), np.radians(beta)
    # alpha = 0: source anterior (−y) looking posterior; rotate about z, then tilt about x.
    direction = geometry.rotation_matrix([1, 0, 0], b) @ np.array([np.sin(a), np.cos(a), 0.0])
    source = iso - rng.uniform(*p.source_iso_mm) * direction
    roll = geometry.rotation_matrix(direction, np.radians(rng.normal(0.0, p.detector_roll_sd_deg)))
    T = geometry.look_at(source, iso, roll @ np.array([0.0, 0.0, 1.0]))
    return ShotPose(
        kind,
        T,
        float(rng.uniform(*p.sdd_mm)),
        float(rng.uniform(*p.detector_mm)),
        float(alpha),
        float(beta),
    )


def sample_views(
    n: int,
    centre_mm: np.ndarray,
    rng: np.random.Generator,
    configuration: str = "random",
    p: PoseParams = PoseParams(),
) -> list[ShotPose]:
    """`n` shots: a named configuration's kinds first (see `CONFIGURATIONS`), then random kinds.

    "random" starts with one AP and one lateral, as surgeons do, when n ≥ 2.
    """
    if configuration == "random":
        kinds = ["ap", "lateral"][: min(n, 2)]
    elif configuration in CONFIGURATIONS:
        kinds = list(CONFIGURATIONS[configuration])[:n]
    else:
        raise ValueError(
            f"unknown configuration {configuration!r}; expected random or {sorted(CONFIGURATIONS)}"
        )
    kinds += [KINDS[i] for i in rng.integers(0, len(KINDS), n - len(kinds))]
    return [sample_pose(k, centre_mm, rng, p) for k in kinds]
