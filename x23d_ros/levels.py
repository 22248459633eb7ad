"""Which blob of the coarse stage is which level: the choice that makes the levels a spine.

The coarse stage labels every voxel independently. On anatomy unlike its training data (a real
CT's thoracic vertebrae, contrast-filled vessels) a level can come out as several blobs, and
the largest is not always the right one: a thoracic vertebra called "L4" above L1, or "L1"
found in front of the spine. `chain` picks at most one blob per level so that the picked
levels stack like vertebrae do, and the most of what the network found is kept.

The stacking rule: consecutive picked levels i < j lie (j − i) × 22..55 mm apart, and the steps
from one picked level to the next keep their direction (cosine > `MIN_COSINE`). Lumbar
centre-to-centre spacing is one body height plus one disc: 24.5–27.4 mm anterior height
(Bonczar et al. 2024) plus 8.9–10.2 mm mid-disc height (CTSpinoPelvic1K) per level, that is
33–38 mm on average; the bounds leave room for small and large patients, discs lost to
degeneration and the coarse grid's 4 mm voxels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Centre-to-centre distance (mm) per level step that a pair of picked levels may have.
STEP_MM = (22.0, 55.0)
#: The usual lumbar centre-to-centre distance (mm): one body and one disc (module docstring).
MEAN_STEP_MM = 35.0
#: Smallest cosine between consecutive steps of the chain (it bends with the lordosis only).
MIN_COSINE = 0.5
#: Blobs kept per level as candidates (largest first): 3 candidates and "absent" per level
#: give 4⁵ = 1024 chains for L1–L5, scored exhaustively.
CANDIDATES = 3


@dataclass(frozen=True)
class Blob:
    """One connected blob of a level: its point (3,) mm and its mass (summed probability)."""

    point: np.ndarray
    mass: float


def blobs(
    labels: np.ndarray,
    prob: np.ndarray,
    points: np.ndarray,
    level: int,
    min_voxels: int,
    where: str,
) -> list[Blob]:
    """The blobs of `level` in the argmax `labels` (X, Y, Z), largest mass first, at most
    `CANDIDATES`. `prob` (X, Y, Z) is the level's probability, `points` (X, Y, Z, 3) mm the
    voxel centres; `where` is "box" (the blob's box centre) or "centroid"."""
    if where not in ("box", "centroid"):
        raise ValueError(f"where must be box or centroid, not {where!r}")
    components, n = ndimage.label(labels == level)
    out = []
    for i in range(1, n + 1):
        inside = components == i
        if inside.sum() < min_voxels:
            continue
        found = points[inside]
        point = (found.min(0) + found.max(0)) / 2 if where == "box" else found.mean(0)
        out.append(Blob(point=point, mass=float(prob[inside].sum())))
    return sorted(out, key=lambda b: -b.mass)[:CANDIDATES]


def chain(candidates: dict[str, list[Blob]], order: list[str]) -> dict[str, np.ndarray]:
    """The point of each level in the best consistent chain: the pick (a blob or nothing per
    level, levels in `order`, cranial to caudal) of largest total mass whose picked levels
    obey the stacking rule (module docstring). Levels with no blob in it are left out."""
    names = [n for n in order if candidates.get(n)]
    options = [[None, *candidates[n]] for n in names]
    best, best_mass = {}, 0.0
    for pick in itertools.product(*options):
        chosen = [(order.index(n), b) for n, b in zip(names, pick, strict=True) if b is not None]
        mass = sum(b.mass for _, b in chosen)
        if mass > best_mass and _stacks(chosen):
            best, best_mass = {order[i]: b.point for i, b in chosen}, mass
    return best


def _stacks(chosen: list[tuple[int, Blob]]) -> bool:
    steps = []
    for (i, a), (j, b) in itertools.pairwise(chosen):
        step = (b.point - a.point) / (j - i)
        if not STEP_MM[0] <= np.linalg.norm(step) <= STEP_MM[1]:
            return False
        steps.append(step)
    for s, t in itertools.pairwise(steps):
        if s @ t < MIN_COSINE * np.linalg.norm(s) * np.linalg.norm(t):
            return False
    return True


def fit_line(centres: dict[str, np.ndarray], order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The straight line through the levels' `centres` (mm) against their index in `order`
    (L1 = 1 … L5 = 5), least squares: the point (3,) at index 0 and the step (3,) per level
    (caudal). At least two levels."""
    names = [n for n in order if n in centres]
    if len(names) < 2:
        raise ValueError(f"a line needs two levels, not {names}")
    index = np.array([order.index(n) + 1 for n in names], float)
    design = np.stack([np.ones_like(index), index], 1)
    solution = np.linalg.lstsq(design, np.stack([centres[n] for n in names]), rcond=None)[0]
    return solution[0], solution[1]
