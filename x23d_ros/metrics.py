"""Reconstruction accuracy per vertebra, computed with MONAI as peers compute theirs.

For a predicted mask P and a ground-truth mask G on the same grid (voxel size s, mm), with
surfaces ∂P and ∂G and d(x, A) the distance from x to the nearest point of A:

- f1 (voxel F1 = Dice) = 2|P ∩ G| / (|P| + |G|).
- surface_1mm, surface_2mm (surface F-score at tolerance τ; MONAI's normalised surface Dice)
  = (|{x ∈ ∂P : d(x, ∂G) ≤ τ}| + |{y ∈ ∂G : d(y, ∂P) ≤ τ}|) / (|∂P| + |∂G|).
- assd_mm (average symmetric surface distance)
  = (Σ_{x∈∂P} d(x, ∂G) + Σ_{y∈∂G} d(y, ∂P)) / (|∂P| + |∂G|).
- hd95_mm: the larger of the two directed 95th-percentile surface distances.
- centre_err_mm = ‖centroid(P) − centroid(G)‖.
- wrong_level (`wrong_level`, scored against the whole label volume L): 1 when P overlaps
  another level's ground truth more than its own, argmax_ℓ |P ∩ {L = ℓ}| ≠ its level, else 0;
  its mean is the share of reconstructed levels that are the wrong vertebra. Vertebrae
  outside L1–L5 (T12, the sacrum) are background in L, so a level slipped onto one of them
  is not counted here; it scores a low F1 and a large centre error instead. `wrong_vertebra`
  also counts it (a level with less than a quarter of it on its own vertebra), for the level
  names' benchmark (bench/bench_landmarks.py).

Distances are between voxel centres, so on a grid coarser than τ (the fine stage's 2.1 mm
grid, in training's validation) every non-zero distance exceeds τ and surface_1mm equals
surface_2mm: score on the ground truth's grid (`x23d evaluate` does) to tell them apart.

An empty prediction scores f1 = 0 and NaN for the distances; `summarise` counts it as missed.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)

from x23d_ros.anatomy import LEVELS

METRICS = ("f1", "surface_1mm", "surface_2mm", "assd_mm", "hd95_mm", "centre_err_mm")
#: What `x23d evaluate` reports per level: METRICS and `wrong_level` (which needs the whole
#: label volume, so training's validation rows lack it).
REPORTED = (*METRICS, "wrong_level")


def vertebra_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing_mm: np.ndarray | float
) -> dict[str, float]:
    """The metrics above for one vertebra: boolean masks (I, J, K) on one grid."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if not gt.any():
        raise ValueError("the ground-truth mask is empty")
    spacing = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    overlap = np.logical_and(pred, gt).sum()
    f1 = 2.0 * overlap / (pred.sum() + gt.sum())
    if not pred.any():
        return {"f1": 0.0, **{m: float("nan") for m in METRICS[1:]}}
    # One-hot (batch 1, background + structure): MONAI's layout.
    y_pred = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([~gt, gt])[None].astype(np.float32))
    sp = spacing.tolist()
    surface = compute_surface_dice(y_pred, y, class_thresholds=[1.0], spacing=sp).item()
    surface2 = compute_surface_dice(y_pred, y, class_thresholds=[2.0], spacing=sp).item()
    assd = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=sp).item()
    hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=sp).item()
    centre = np.linalg.norm((np.argwhere(pred).mean(0) - np.argwhere(gt).mean(0)) * spacing)
    return {
        "f1": float(f1),
        "surface_1mm": float(surface),
        "surface_2mm": float(surface2),
        "assd_mm": float(assd),
        "hd95_mm": float(hd95),
        "centre_err_mm": float(centre),
    }


def wrong_level(pred: np.ndarray, labels: np.ndarray, level: int) -> float:
    """1.0 when the mask `pred` overlaps another level of `labels` (0 background, 1..5
    L1..L5, same grid) more than `level`, else 0.0; NaN for an empty prediction."""
    pred = np.asarray(pred, bool)
    if not pred.any():
        return float("nan")
    counts = np.bincount(np.asarray(labels)[pred].ravel(), minlength=len(LEVELS) + 1)[1:]
    own = counts[level - 1]
    return float(counts.max() > own)


def wrong_vertebra(pred: np.ndarray, labels: np.ndarray, level: int, own_share: float = 0.25):
    """None when the mask `pred` is its own vertebra `level` of `labels` (0 background, 1..5
    L1..L5, same grid), else what it lies on most: another level's index, or 0 (no lumbar
    level: T12, the sacrum, beyond a scan's end, or an empty mask). Stricter than
    `wrong_level`: a mask with less than `own_share` of its voxels on its own vertebra is also
    wrong (a level one off in the count overlaps its own hardly at all, and may lie on T12 or
    the sacrum, which `wrong_level` counts as background)."""
    pred = np.asarray(pred, bool)
    counts = np.bincount(np.asarray(labels)[pred].ravel(), minlength=len(LEVELS) + 1)
    own = counts[level]
    if pred.any() and own >= own_share * pred.sum() and own >= counts[1:].max():
        return None
    most = int(counts[1:].argmax()) + 1
    return most if counts[most] > own else 0


def level_metrics(
    pred_labels: np.ndarray, gt_labels: np.ndarray, spacing_mm
) -> dict[str, dict[str, float]]:
    """`vertebra_metrics` for every level present in the ground truth (labels 1..5)."""
    return {
        name: vertebra_metrics(pred_labels == idx, gt_labels == idx, spacing_mm)
        for name, idx in LEVELS.items()
        if (gt_labels == idx).any()
    }


def summarise(per_case: list[dict[str, dict[str, float]]]) -> dict:
    """Mean over cases and levels, and per level; NaN distances (missed levels) are counted,
    not averaged."""
    per_level: dict[str, dict[str, float]] = {}
    for name in LEVELS:
        rows = [case[name] for case in per_case if name in case]
        if rows:
            per_level[name] = _mean(rows)
    everything = [row for case in per_case for row in case.values()]
    return {"mean": _mean(everything), "per_level": per_level, "cases": len(per_case)}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for m in REPORTED:
        if m not in METRICS and not all(m in r for r in rows):
            continue  # scored only where the whole label volume is known (x23d evaluate)
        values = np.array([r[m] for r in rows], float)
        out[m] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    out["missed"] = int(sum(np.isnan(r["assd_mm"]) for r in rows))
    return out
