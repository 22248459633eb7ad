"""One training or validation step's batch, from a `ShotDataset` item.

The augmentations act on the shots and the grid centres; the networks' inputs are then built
by `model.inputs`, the same functions `Reconstructor` calls, so training sees what inference
sees. Each step draws a random subset of the case's shots (view dropout); when training it
also draws a pose error per view (a tracked C-arm's calibration error), a gain and noise per
view, and a jitter of each grid's centre (the coarse stage's placement error).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from x23d_ros import geometry
from x23d_ros.anatomy import LEVELS
from x23d_ros.model import inputs
from x23d_ros.surface import box_centre
from x23d_ros.train.config import TrainConfig


def grid_labels(labels: np.ndarray, affine: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """Nearest label (X, Y, Z) at each grid point (X, Y, Z, 3); 0 outside the label volume."""
    ijk = (points_mm.reshape(-1, 3) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    out = ndimage.map_coordinates(labels, ijk.T, order=0, mode="constant", cval=0)
    return out.reshape(points_mm.shape[:3]).astype(np.int64)


def jittered_pose(
    T: np.ndarray, rng: np.random.Generator, deg: float, mm: float, pivot_mm: np.ndarray
) -> np.ndarray:
    """The pose (4, 4) a tracked C-arm reports when its true pose is `T`: the truth turned
    about `pivot_mm` (3,) (the anatomy the shots centre on) by a normal angle (SD `deg`, about
    a random axis), then shifted (normal, SD `mm` per axis).

    The pivot matters: a tracking or calibration error is an error of the C-arm's pose
    relative to the patient, measured where the anatomy is. The same angle about the source
    would swing every ray by 600 mm × its tangent at the spine (0.5° → 5 mm), which no
    tracked C-arm does and which makes the labels noise."""
    R = geometry.rotation_matrix(rng.normal(size=3), np.radians(rng.normal(0.0, deg)))
    T = np.asarray(T, float).copy()
    pivot = np.asarray(pivot_mm, float)
    T[:3, :3] = R @ T[:3, :3]
    T[:3, 3] = R @ (T[:3, 3] - pivot) + pivot + rng.normal(0.0, mm, 3)
    return T


def draw_views(n_all: int, views: tuple[int, int], rng: np.random.Generator) -> list[int]:
    """A random subset of a case's `n_all` shots, its size drawn from `views` (inclusive,
    capped at n_all), in ascending order (view dropout)."""
    n = int(rng.integers(min(views[0], n_all), min(views[1], n_all) + 1))
    return sorted(rng.choice(n_all, size=n, replace=False).tolist())


def case_views(item: dict, cfg: TrainConfig, rng: np.random.Generator, train: bool) -> inputs.Views:
    """The shots of one step: a random subset, augmented (training); the first
    `cfg.views[1]` as they are (validation)."""
    n_all = item["images"].shape[0]
    pick = (
        np.array(draw_views(n_all, cfg.views, rng))
        if train
        else np.arange(min(cfg.views[1], n_all))
    )
    K, T = item["K"].numpy()[pick], item["T_ref_source"].numpy()[pick]
    images = item["images"][pick].clone()
    if train:
        iso = geometry.isocentre_of_poses(T)
        T = np.stack(
            [
                jittered_pose(
                    t,
                    rng,
                    cfg.pose_jitter_deg,
                    cfg.pose_jitter_mm,
                    iso if cfg.pose_jitter_pivot == "anatomy" else t[:3, 3],
                )
                for t in T
            ]
        )
        gain = torch.tensor(
            rng.uniform(*cfg.intensity_gain, size=(len(pick), 1, 1)), dtype=images.dtype
        )
        images = images * gain + cfg.noise_sd * images.abs().mean() * torch.from_numpy(
            rng.standard_normal(images.shape).astype(np.float32)
        )
    return inputs.make_views(list(images), K, T)


def centre_offset(cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """The training jitter (3,) mm of a grid's centre: normal with sd `centre_jitter_mm`, or
    `centre_jitter_wide_mm` with probability `centre_jitter_wide_p`."""
    wide = cfg.centre_jitter_wide_p > 0 and rng.random() < cfg.centre_jitter_wide_p
    return rng.normal(0.0, cfg.centre_jitter_wide_mm if wide else cfg.centre_jitter_mm, 3)


def make_batch(
    item: dict, cfg: TrainConfig, rng: np.random.Generator, train: bool
) -> dict[str, torch.Tensor]:
    """One step's input: images (B, V, H, W), P (B, V, 3, 4), grid points (B, X, Y, Z, 3),
    target (B, X, Y, Z): class indices (coarse) or 0/1 occupancy (fine, one row per level);
    fine batches also carry `levels` (B,) indices 1..5."""
    views = case_views(item, cfg, rng, train)
    labels, affine = item["labels"].numpy(), item["affine"].numpy()
    if cfg.stage == "fine":
        return _fine_batch(views, labels, affine, cfg, rng, train)
    centre = geometry.isocentre_of_poses(views.T_ref_source)
    if train:
        centre = centre + centre_offset(cfg, rng)
    batch = inputs.coarse_inputs(views, cfg.image_size, cfg.grid, cfg.spacing_mm, centre)
    target = grid_labels(labels, affine, batch["points"][0].double().numpy())
    return batch | {"target": torch.from_numpy(target)[None]}


def _fine_batch(
    views: inputs.Views,
    labels: np.ndarray,
    affine: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    train: bool,
) -> dict[str, torch.Tensor]:
    present = [i for i in range(len(LEVELS)) if (labels == i + 1).any()]
    if train:
        k = min(cfg.levels_per_step, len(present))
        present = sorted(rng.choice(present, size=k, replace=False).tolist())
    centres = []
    for i in present:
        centre = box_centre(labels == i + 1, affine)
        centres.append(centre + centre_offset(cfg, rng) if train else centre)
    batch = inputs.fine_inputs(
        views,
        np.stack(centres),
        cfg.grid,
        cfg.spacing_mm,
        cfg.crop_mm,
        cfg.crop_px,
        cfg.source_size,
    )
    target = [
        grid_labels(labels, affine, points.double().numpy()) == i + 1
        for points, i in zip(batch["points"], present, strict=True)
    ]
    batch["target"] = torch.from_numpy(np.stack(target).astype(np.int64))
    batch["levels"] = torch.tensor([i + 1 for i in present])
    return batch
