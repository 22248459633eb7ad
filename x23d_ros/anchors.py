"""Whether the shots hold a landmark that the lumbar levels are counted from.

Lumbar vertebrae look much alike: a level is told by counting, from the sacrum below L5 or from
the twelfth (last rib-bearing) thoracic vertebra above L1. Wrong-level surgery is the error
this guards against: it happens when the count has no such end in the field of view, and a
softmax margin does not catch it, because a network that labels levels by their shape alone can
be confidently wrong by one.

`anchors` says, for a reconstruction, whether each counting landmark is in the shots: its near
part (`REACH` of a level step beyond L5 or above L1: the top of S1, the bottom of T12, along the
found levels' own steps, extrapolated from the last level found) inside at least `MIN_SHOTS`
shots with bone there (the shot's value around the point at least `BONE_SHARE` of what the found
levels show in the same shot: a shot collimated short of it, or a CT that ends above it, shows
little). It is a statement about the shots, not about the network: a landmark in view does not
prove the count right, but with none in view the labels are a guess from shape, and the
reconstructor says so.
"""

from __future__ import annotations

import numpy as np

from x23d_ros import geometry
from x23d_ros.model.inputs import pixel_mm_at

#: The counting landmarks: the sacrum (one level step below L5) and T12 (one step above L1).
ANCHORS = ("sacrum", "T12")
#: Where a landmark is looked for: this share of a level step above L1 (T12's lower half) or
#: below L5 (the upper part of S1: its centre is about one step below L5's, and its body is
#: about as tall as L5's).
REACH = 0.75
#: Centre-to-centre distance (mm) of consecutive lumbar levels where only one level is found
#: (one body height plus one disc: see `levels`), along the patient's superior axis.
STEP_MM = 35.0
#: Radius (mm at the point's depth) of the disc a shot's value is averaged over: about half a
#: vertebral body's width.
RADIUS_MM = 15.0
#: Shots that must show a landmark (two make it a point in space).
MIN_SHOTS = 2
#: A shot shows bone at a landmark when its mean value there is at least this share of the
#: median of the found levels' means in the same shot.
BONE_SHARE = 0.5


def expected_points(
    centres: dict[str, np.ndarray], order: list[str], superior: np.ndarray
) -> dict[str, np.ndarray]:
    """Where each landmark should be (3,) mm, from the found levels' `centres` (names from
    `order`, cranial to caudal): `REACH` of a mean level step above L1 and below L5, from the
    first and the last found level. With one level found, the step is `STEP_MM` along
    `superior` (unit (3,))."""
    found = [(order.index(n) + 1, np.asarray(c, float)) for n, c in centres.items()]
    if not found:
        return {}
    found.sort(key=lambda item: item[0])
    (first, top), (last, bottom) = found[0], found[-1]
    if last > first:
        step = (bottom - top) / (last - first)  # caudal, per level
    else:
        step = -STEP_MM * np.asarray(superior, float)
    return {
        "T12": top + (1 - REACH - first) * step,
        "sacrum": bottom + (len(order) + REACH - last) * step,
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
    return float(image[v0:v1, u0:u1][inside].mean()) if inside.any() else float("nan")


def shots_showing(
    point: np.ndarray,
    references: list[np.ndarray],
    images: list[np.ndarray],
    P: np.ndarray,
    bone_values: bool = True,
) -> int:
    """How many shots (images (H, W), P (V, 3, 4)) show `point` (3,) mm: its projection lies
    inside the image and, with `bone_values` (images in the synthetic domain: bone line
    integrals, 0 where no bone is), the mean of the image's part of the disc of `RADIUS_MM`
    around it is at least `BONE_SHARE` of the median of the same disc's means at the
    `references` (the found levels' centres). Fluoroscopy-domain values say nothing so simple
    about bone: there, in view is enough."""
    count = 0
    pixel_mm = pixel_mm_at(np.asarray(P, float), np.asarray(point, float))
    for image, p, px_mm in zip(images, P, pixel_mm, strict=True):
        uv, _ = geometry.project(p, np.asarray([point, *references], float))
        radius = RADIUS_MM / px_mm
        here = disc_mean(image, uv[0], radius)
        if not np.isfinite(here):  # outside the image
            continue
        if not bone_values:
            count += 1
            continue
        found = [disc_mean(image, q, radius) for q in uv[1:]]
        found = [f for f in found if np.isfinite(f)]
        if found and here >= BONE_SHARE * float(np.median(found)) and here > 0:
            count += 1
    return count


def anchors(
    centres: dict[str, np.ndarray],
    order: list[str],
    superior: np.ndarray,
    images: list[np.ndarray],
    P: np.ndarray,
    bone_values: bool = True,
) -> dict[str, int]:
    """Per landmark (`ANCHORS`), how many shots show it (`expected_points`, `shots_showing`).
    Empty when no level was found."""
    points = expected_points(centres, order, superior)
    references = [np.asarray(c, float) for c in centres.values()]
    return {
        name: shots_showing(points[name], references, images, P, bone_values)
        for name in ANCHORS
        if name in points
    }


def anchored(shots: dict[str, int]) -> list[str]:
    """The landmarks that anchor the count: those shown by at least `MIN_SHOTS` shots."""
    return [name for name in ANCHORS if shots.get(name, 0) >= MIN_SHOTS]
