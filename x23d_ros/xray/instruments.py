"""Surgical metal in the field: pedicle screws (titanium), K-wires and retractor blades (steel).

Instruments are placed per case, not per shot, so every view of a case shows the same metal,
as in surgery. They are positioned from each vertebra's labelled centroid in the LPS frame
(posterior = +y), so they work for procedural and real CT alike. Output: partial densities
(g/cm³) of titanium and iron on the anatomy's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from x23d_ros.anatomy import Anatomy, sdf
from x23d_ros.xray.materials import DENSITY


@dataclass(frozen=True)
class InstrumentParams:
    """How much metal a case gets."""

    case_probability: float = 0.5  # share of cases with any metal at all
    screw_level_probability: float = 0.5  # per level, a bilateral pair of screws
    kwire_count: tuple[int, int] = (0, 3)
    retractor_probability: float = 0.25


def instrument_densities(
    anatomy: Anatomy, rng: np.random.Generator, p: InstrumentParams = InstrumentParams()
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(titanium, iron) partial-density volumes and the list of placed instruments."""
    titanium = np.zeros(anatomy.hu.shape, np.float32)
    iron = np.zeros(anatomy.hu.shape, np.float32)
    placed: list[dict] = []
    if rng.random() >= p.case_probability:
        return titanium, iron, placed
    centres = anatomy.centres_mm()
    spacing = float(anatomy.spacing_mm.min())
    for level, c in centres.items():
        if rng.random() < p.screw_level_probability:
            for side in (-1.0, 1.0):
                entry = c + np.array(
                    [side * rng.uniform(18, 24), rng.uniform(32, 40), rng.uniform(-3, 3)]
                )
                tip = c + np.array(
                    [side * rng.uniform(4, 9), rng.uniform(-14, -6), rng.uniform(-3, 3)]
                )
                radius = rng.uniform(2.5, 3.5)
                _paint(titanium, anatomy, spacing, entry, tip, radius, DENSITY["titanium"])
                head = entry + (entry - tip) / np.linalg.norm(entry - tip) * 8
                _paint(titanium, anatomy, spacing, entry, head, 6.0, DENSITY["titanium"])
                placed.append(
                    {
                        "kind": "screw",
                        "level": level,
                        "entry_mm": entry.tolist(),
                        "tip_mm": tip.tolist(),
                    }
                )
    names = list(centres)
    for _ in range(rng.integers(*p.kwire_count, endpoint=True)):
        c = centres[names[rng.integers(len(names))]]
        side = rng.choice([-1.0, 1.0])
        tip = c + np.array([side * rng.uniform(5, 12), rng.uniform(-10, 5), rng.uniform(-8, 8)])
        out = tip + np.array(
            [side * rng.uniform(10, 50), rng.uniform(140, 200), rng.uniform(-40, 40)]
        )
        _paint(iron, anatomy, spacing, tip, out, rng.uniform(0.7, 1.0), DENSITY["iron"])
        placed.append({"kind": "k-wire", "tip_mm": tip.tolist(), "end_mm": out.tolist()})
    if rng.random() < p.retractor_probability:
        c = centres[names[rng.integers(len(names))]]
        for side in (-1.0, 1.0):
            top = c + np.array([side * rng.uniform(25, 35), rng.uniform(40, 55), 0.0])
            bottom = top + np.array([side * rng.uniform(5, 15), rng.uniform(70, 110), 0.0])
            for dz in np.arange(-20.0, 20.1, 2.0):  # a blade: a row of rods ≈ 40 mm wide
                shift = np.array([0.0, 0.0, dz])
                _paint(iron, anatomy, spacing, top + shift, bottom + shift, 1.0, DENSITY["iron"])
            placed.append(
                {"kind": "retractor", "top_mm": top.tolist(), "bottom_mm": bottom.tolist()}
            )
    return titanium, iron, placed


def _paint(volume, anatomy: Anatomy, spacing, a, b, radius, density) -> None:
    mid = (a + b) / 2
    half = np.abs(b - a) / 2 + radius + 2 * spacing
    slices, grid = sdf.grid_block(anatomy.affine, volume.shape, mid, np.eye(3), half)
    if slices is None:
        return
    d = sdf.capsule(grid, a, b, radius)
    occupancy = np.clip(0.5 - d / spacing, 0.0, 1.0).astype(np.float32)
    volume[slices] = np.maximum(volume[slices], occupancy * density)
