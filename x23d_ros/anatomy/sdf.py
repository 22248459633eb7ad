"""Signed distance functions (mm, negative inside) of the primitives that make up a spine.

Each takes points (*, 3) and returns distances (*,). They are exact or close to it near the
surface, which is where the cortical shell and the smooth unions need them.
"""

from __future__ import annotations

import numpy as np


def _length(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def ellipsoid(p: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate SDF of an axis-aligned ellipsoid (first-order, exact on spheres)."""
    q = (p - centre) / radii
    k = _length(q)
    return (k - 1.0) * np.min(radii)


def capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """SDF of a segment a→b swept by a sphere of `radius` (may vary linearly along it)."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = a + t[..., None] * ab
    r = radius if np.isscalar(radius) else radius[0] + t * (radius[1] - radius[0])
    return _length(p - closest) - r


def elliptic_cylinder(p: np.ndarray, rx: float, ry: float, half_height: float) -> np.ndarray:
    """SDF of an elliptic cylinder along z centred at the origin (approximate on the ellipse)."""
    q = np.stack([p[..., 0] / rx, p[..., 1] / ry], axis=-1)
    d_radial = (_length(q) - 1.0) * min(rx, ry)
    d_axial = np.abs(p[..., 2]) - half_height
    outside = np.linalg.norm(
        np.stack([np.maximum(d_radial, 0), np.maximum(d_axial, 0)], -1), axis=-1
    )
    return outside + np.minimum(np.maximum(d_radial, d_axial), 0.0)


def box(p: np.ndarray, half: np.ndarray, rounding: float = 0.0) -> np.ndarray:
    """SDF of an axis-aligned box centred at the origin with rounded edges."""
    q = np.abs(p) - (half - rounding)
    outside = _length(np.maximum(q, 0.0))
    return outside + np.minimum(q.max(axis=-1), 0.0) - rounding


def smooth_union(d1: np.ndarray, d2: np.ndarray, k: float) -> np.ndarray:
    """Union that blends the two surfaces over about `k` mm, like bone grown together."""
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k, 0.0, 1.0)
    return d2 * (1 - h) + d1 * h - k * h * (1 - h)


def transform(p: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points expressed in a local frame whose axes are R's columns, at origin t."""
    return (p - t) @ R


def grid_block(affine: np.ndarray, shape, centre_mm: np.ndarray, R: np.ndarray, half: np.ndarray):
    """Index slices of the grid that cover a rotated box, and the mm coordinates of its voxels.

    The grid's affine must be axis-aligned (diagonal spacing plus origin), as every volume the
    project builds or resamples is. Returns (None, None) if the box misses the grid.
    """
    if np.count_nonzero(affine[:3, :3] - np.diag(np.diag(affine[:3, :3]))):
        raise ValueError("grid_block needs an axis-aligned affine")
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    mm = corners @ R.T + centre_mm
    spacing = np.diag(affine)[:3]
    lo = np.maximum(np.floor((mm.min(0) - affine[:3, 3]) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((mm.max(0) - affine[:3, 3]) / spacing).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    axes = [affine[a, 3] + spacing[a] * np.arange(lo[a], hi[a]) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return tuple(slice(lo[a], hi[a]) for a in range(3)), grid
