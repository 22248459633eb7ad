"""One vertebra as a signed distance field in its own frame.

Local frame (mm): origin at the body centre, x towards the patient's left, y posterior,
z superior (along the body's axis). The parts and their placement follow textbook lumbar
anatomy; their sizes come from `LevelShape` (see `morphometry` for the sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from x23d_ros.anatomy import sdf
from x23d_ros.anatomy.morphometry import LevelShape

# Medial convergence of the pedicles, L1..L5 (degrees), estimate: it grows caudally.
_PEDICLE_CONVERGENCE_DEG = {"L1": 10.0, "L2": 12.0, "L3": 15.0, "L4": 19.0, "L5": 25.0}


@dataclass
class VertebraShape:
    """A level's dimensions plus the per-patient details drawn for it."""

    level: LevelShape
    lamina_thickness: float = 6.0
    osteophytes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    transverse_scale: float = 1.0

    @property
    def half_extent(self) -> np.ndarray:
        """Half size (3,) of a local box that holds the whole vertebra."""
        s = self.level
        half_x = max(s.transverse_span / 2, s.width / 2) + 8
        back = s.depth / 2 + s.spinous_length + 10
        half_z = s.height / 2 + 14
        return np.array([half_x, max(back, s.depth / 2 + 8), half_z])

    @property
    def centre_offset(self) -> np.ndarray:
        """Centre of that box relative to the body centre (the arch makes it lopsided)."""
        s = self.level
        back = s.depth / 2 + s.spinous_length + 10
        front = s.depth / 2 + 8
        return np.array([0.0, (back - front) / 2, 0.0])


def draw_details(level: LevelShape, rng: np.random.Generator, degeneration: float) -> VertebraShape:
    """Per-patient details: lamina thickness, osteophytes at the endplate rims."""
    osteophytes = []
    if rng.random() < degeneration:
        for _ in range(rng.integers(1, 5)):
            angle = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)  # anterior and lateral rims
            top = rng.choice([-1.0, 1.0])
            centre = np.array(
                [
                    0.5 * level.width * np.cos(angle),
                    0.5 * level.depth * np.sin(angle),
                    top * (level.height / 2 - 1.0),
                ]
            )
            radii = np.array([rng.uniform(2, 5), rng.uniform(2, 4), rng.uniform(1.5, 3.5)])
            osteophytes.append((centre, radii))
    return VertebraShape(
        level=level,
        lamina_thickness=rng.uniform(5.0, 7.5),
        osteophytes=osteophytes,
        transverse_scale=1.35 if level.name == "L5" else 1.0,
    )


def _body(p: np.ndarray, s: LevelShape) -> np.ndarray:
    rx, ry = s.width / 2, s.depth / 2
    # Anterior and posterior heights differ (the wedge that contributes to lordosis).
    t = np.clip((p[..., 1] + ry) / (2 * ry), 0.0, 1.0)
    half_h = 0.5 * (s.height_anterior + t * (s.height_posterior - s.height_anterior))
    zn = np.clip(p[..., 2] / half_h, -1.0, 1.0)
    waist = 1.0 - 0.07 * (1.0 - zn**2)  # concave sides
    radial = np.sqrt((p[..., 0] / (rx * waist)) ** 2 + (p[..., 1] / (ry * waist)) ** 2)
    concavity = 1.5 * (1.0 - np.clip(radial, 0.0, 1.0) ** 2)  # endplates dip in the middle
    d_radial = (radial - 1.0) * min(rx, ry)
    d_axial = np.abs(p[..., 2]) - (half_h - concavity)
    d = np.maximum(d_radial, d_axial)
    # Flattened, slightly concave posterior wall facing the canal.
    d = np.maximum(d, p[..., 1] - 0.86 * ry)
    wall = np.stack([p[..., 0], p[..., 1] - (0.86 * ry + 14.0)], axis=-1)
    return np.maximum(d, 16.0 - np.linalg.norm(wall, axis=-1))


def _extruded_segment(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, z_lo: float, z_hi: float
) -> np.ndarray:
    """A plate: the 2D capsule a→b in the xy plane, extruded between z_lo and z_hi."""
    flat = p.copy()
    flat[..., 2] = 0.0
    d2 = sdf.capsule(flat, np.array([a[0], a[1], 0.0]), np.array([b[0], b[1], 0.0]), radius)
    dz = np.maximum(z_lo - p[..., 2], p[..., 2] - z_hi)
    return np.maximum(d2, dz)


def vertebra_sdf(p: np.ndarray, v: VertebraShape) -> np.ndarray:
    """Signed distance (*,) in mm of local points (*, 3) to the vertebra's surface."""
    s = v.level
    ry = s.depth / 2
    d = _body(p, s)
    k = 2.5  # blend radius where processes grow out of one another
    z_ped = 0.12 * s.height
    x_ped = s.canal_width / 2 + s.pedicle_width / 2
    y0, y1 = 0.55 * ry, ry + 0.55 * s.canal_depth
    spread = np.tan(np.radians(_PEDICLE_CONVERGENCE_DEG.get(s.name, 12.0))) * (y1 - y0)
    squash = np.array([1.0, 1.0, s.pedicle_width / s.pedicle_height])
    y_lamina = ry + s.canal_depth + v.lamina_thickness / 2
    lamina_lo, lamina_hi = -0.42 * s.height, 0.3 * s.height
    for side in (-1.0, 1.0):
        # Pedicle: an elliptic rod, wider apart posteriorly (medial convergence).
        a = np.array([side * x_ped, y0, z_ped])
        b = np.array([side * (x_ped + spread), y1, z_ped])
        ped = sdf.capsule(p * squash, a * squash, b * squash, s.pedicle_width / 2)
        d = sdf.smooth_union(d, ped, k)
        # Lamina: from the pedicle's end to the midline, roofing the canal.
        lam = _extruded_segment(
            p, b, np.array([0.0, y_lamina, 0.0]), v.lamina_thickness / 2, lamina_lo, lamina_hi
        )
        d = sdf.smooth_union(d, lam, k)
        # Transverse process: lateral and slightly posterior from the pedicle-lamina junction.
        tip = np.array([side * s.transverse_span / 2, y1 + 6.0, z_ped + 1.0])
        tp = sdf.capsule(p, b, tip, np.array([5.0, 3.2]) * v.transverse_scale)
        d = sdf.smooth_union(d, tp, k)
        # Superior articular process: up from the junction, facing medially.
        sap = sdf.capsule(
            p,
            b + np.array([0, 0, 2.0]),
            np.array([side * (x_ped + spread + 1.5), y1 + 3, s.height / 2 + 7]),
            4.5,
        )
        d = sdf.smooth_union(d, sap, k)
        # Inferior articular process: down from the lamina, medial to the next level's SAP.
        iap = sdf.capsule(
            p,
            np.array([side * (s.canal_width / 2 - 1), y_lamina, lamina_lo + 4]),
            np.array([side * (s.canal_width / 2 + 1), y_lamina - 2, -s.height / 2 - 9]),
            4.0,
        )
        d = sdf.smooth_union(d, iap, k)
    # Spinous process: a blade from the laminae's junction, back and a little down.
    base = np.array([0.0, y_lamina, -0.05 * s.height])
    tip = np.array([0.0, ry + s.spinous_length, -0.2 * s.height])
    blade = sdf.capsule(
        p * np.array([0.0, 1.0, 1.0]),
        base,
        tip,
        np.array([0.3 * s.spinous_height, 0.5 * s.spinous_height]),
    )
    d = sdf.smooth_union(d, np.maximum(blade, np.abs(p[..., 0]) - 3.5), k)
    for centre, radii in v.osteophytes:
        d = sdf.smooth_union(d, sdf.ellipsoid(p, centre, radii), 1.5)
    # The canal stays open whatever the blends did.
    canal = sdf.elliptic_cylinder(
        p - np.array([0.0, ry + s.canal_depth / 2, 0.0]), s.canal_width / 2, s.canal_depth / 2, 1e3
    )
    return np.maximum(d, -canal)
