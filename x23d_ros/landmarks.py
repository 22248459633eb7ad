"""Whether the shots reach the ends that lumbar levels are counted from.

Lumbar vertebrae look much alike: a level is named by counting, from the sacrum below L5 or
from T12 (the last rib-bearing vertebra) above L1. Shots that stop short of both ends cannot
support a level's name, for a surgeon or for the networks.

`landmark_shots` says, for a reconstruction, how many shots show bone where each end should be
if the levels are named right: `REACH` of a level step below L5's centre (the top of S1) and
above L1's (the bottom of T12), on the line fitted through the found levels' centres (their
names as the network gave them). A shot shows it when the point projects at least half the
disc radius inside the image (four fifths of the disc of `RADIUS_MM` inside) and, for images in
the synthetic domain, the disc's mean value is at least `BONE_SHARE` of what the found levels
show in the same shot (a shutter, or a CT that ends above it, shows little).

What it cannot tell: when the network's names are one level off, the same bone is there (the
"T12" point lies on the real L1), so a landmark "in view" is no proof that the count is right
(bench/bench_landmarks.py measures how often it is wrong). What it can: with no landmark in view,
the names rest on the vertebrae's shapes alone, and the reconstructor says so.
"""

from __future__ import annotations

import numpy as np

from x23d_ros import geometry, levels
from x23d_ros.anatomy import LEVEL_NAMES, LEVELS
from x23d_ros.model.inputs import pixel_mm_at

#: The counting landmarks: the sacrum (below L5) and T12 (above L1).
LANDMARKS = ("sacrum", "T12")
#: Where a landmark is looked for, in level steps beyond the end level's centre: the upper part
#: of S1 (its centre is about one step below L5's) and the lower part of T12.
REACH = 0.75
#: Radius (mm at the point's depth) of the disc a shot's value is averaged over: about a third
#: of a lumbar body's width.
RADIUS_MM = 15.0
#: Shots that must show a landmark (two make it a point in space).
MIN_SHOTS = 2
#: A shot shows bone at a landmark when its mean value there is at least this share of the
#: median of the found levels' means in the same shot (synthetic domain).
BONE_SHARE = 0.5


def expected_points(centres: dict[str, np.ndarray], superior: np.ndarray) -> dict[str, np.ndarray]:
    """Where each landmark should be (3,) mm if the found levels' `centres` (L1..L5 names)
    are named right: on the line fitted through them against their index (`levels.fit_line`),
    `REACH` of a step above L1 and below L5. With one level found, the step is
    `levels.MEAN_STEP_MM` along `superior` (unit (3,), the patient's)."""
    if not centres:
        return {}
    if len(centres) == 1:
        ((name, centre),) = centres.items()
        step = -levels.MEAN_STEP_MM * np.asarray(superior, float)
        origin = np.asarray(centre, float) - LEVELS[name] * step
    else:
        origin, step = levels.fit_line(centres, LEVEL_NAMES)
    return {
        "T12": origin + (1 - REACH) * step,
        "sacrum": origin + (len(LEVEL_NAMES) + REACH) * step,
    }


def disc_mean(image: np.ndarray, uv: np.ndarray, radius_px: float) -> float:
    """Mean of `image` (H, W) over the image's part of the disc of `radius_px` around `uv`
    (u, v) pixels; NaN where the disc's centre is outside the image."""
    h, w = image.shape
    u, v = float(uv[0]), float(uv[1])
    if not (0.0 <= u < w and 0.0 <= v < h):
        return float("nan")
    r = max(radius_px, 1.0)
    u0, u1 = int(max(0, np.floor(u - r))), int(min(w, np.ceil(u + r) + 1))
    v0, v1 = int(max(0, np.floor(v - r))), int(min(h, np.ceil(v + r) + 1))
    vv, uu = np.mgrid[v0:v1, u0:u1]
    inside = (uu + 0.5 - u) ** 2 + (vv + 0.5 - v) ** 2 <= r * r
    return float(image[v0:v1, u0:u1][inside].mean())


def shots_showing(
    point: np.ndarray,
    references: list[np.ndarray],
    images: list[np.ndarray],
    P: np.ndarray,
    bone_values: bool = True,
) -> int:
    """How many shots (images (H, W), P (V, 3, 4)) show `point` (3,) mm: its projection at
    least half the disc radius (`RADIUS_MM` at its depth) inside the image and, with
    `bone_values` (images in the synthetic domain: bone line integrals, 0 where no bone is),
    the disc's mean at least `BONE_SHARE` of the median of the same disc's means at the
    `references` (3,) mm (the found levels' centres) that lie in the image. Fluoroscopy-domain
    values say nothing so simple about bone: there, in view is enough."""
    count = 0
    pixel_mm = pixel_mm_at(np.asarray(P, float), np.asarray(point, float))
    for image, p, px_mm in zip(images, P, pixel_mm, strict=True):
        uv, _ = geometry.project(p, np.asarray([point, *references], float))
        radius_px = RADIUS_MM / px_mm
        h, w = image.shape
        u, v = uv[0]
        margin = radius_px / 2
        if not (margin <= u <= w - margin and margin <= v <= h - margin):
            continue
        if not bone_values:
            count += 1
            continue
        found = [disc_mean(image, q, radius_px) for q in uv[1:]]
        found = [f for f in found if np.isfinite(f)]
        here = disc_mean(image, uv[0], radius_px)
        if found and here > 0 and here >= BONE_SHARE * float(np.median(found)):
            count += 1
    return count


def landmark_shots(
    centres: dict[str, np.ndarray],
    superior: np.ndarray,
    images: list[np.ndarray],
    P: np.ndarray,
    bone_values: bool = True,
) -> dict[str, int]:
    """Per landmark (`LANDMARKS`), how many shots show it (`expected_points`,
    `shots_showing`), for the found levels' `centres` (name → (3,) mm), the patient's
    `superior` axis (3,), the shots' `images` (H_v, W_v) and `P` (V, 3, 4). Empty when no level
    was found."""
    points = expected_points(centres, superior)
    references = [np.asarray(c, float) for c in centres.values()]
    return {
        name: shots_showing(points[name], references, images, P, bone_values)
        for name in LANDMARKS
        if name in points
    }


def in_view(shots: dict[str, int]) -> list[str]:
    """The landmarks shown by at least `MIN_SHOTS` shots, of `landmark_shots`' answer."""
    return [name for name in LANDMARKS if shots.get(name, 0) >= MIN_SHOTS]
