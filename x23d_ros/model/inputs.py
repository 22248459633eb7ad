"""The networks' inputs, built one way for training and for inference (shared/DESIGN.md §3).

`x23d train` and `Reconstructor` both call these functions, so that what a network sees at
inference is what it trained on:

- `Views`: a shot set's images at their own resolution, with K and the poses;
- `coarse_inputs`: every view brought to the coarse stage's working size (K follows), and
  the coarse grid around the shots' isocentre;
- `fine_inputs`: per vertebra, a crop of each view around its projection, cut from the shot
  at its own resolution (an integer area reduction first where the shot is finer than the
  crop needs, so that nothing aliases), with P adjusted, and the vertebra's grid.

Augmentations (pose error, gain, noise, grid jitter) are the training loop's business: they
change the views or the centres before these functions run, never inside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from x23d_ros import geometry
from x23d_ros.model.crops import crop_views
from x23d_ros.model.unproject import voxel_centres


@dataclass
class Views:
    """A shot set's images and geometry. images: V tensors (H_v, W_v) float32 on the model's
    device, at each shot's own resolution; K (V, 3, 3) pixels; T_ref_source (V, 4, 4) mm."""

    images: list[torch.Tensor]
    K: np.ndarray
    T_ref_source: np.ndarray

    @property
    def P(self) -> np.ndarray:
        """(V, 3, 4) float64."""
        return np.stack(
            [
                geometry.projection_matrix(k, t)
                for k, t in zip(self.K, self.T_ref_source, strict=True)
            ]
        )

    @property
    def device(self) -> torch.device:
        return self.images[0].device


def make_views(
    images: Sequence[np.ndarray | torch.Tensor],
    K: np.ndarray,
    T_ref_source: np.ndarray,
    device: torch.device | str = "cpu",
) -> Views:
    """`Views` from V images (H, W), K (V, 3, 3) and poses (V, 4, 4)."""
    tensors = [torch.as_tensor(np.asarray(i, np.float32), device=device) for i in images]
    return Views(tensors, np.asarray(K, float).reshape(-1, 3, 3), np.asarray(T_ref_source, float))


def grid_shape(grid: int | Sequence[int]) -> tuple[int, int, int]:
    """A grid's (X, Y, Z) voxels from a weights file's or a config's `grid`: one side (a cube),
    or three."""
    if isinstance(grid, int | np.integer):
        return (int(grid),) * 3
    shape = tuple(int(g) for g in grid)
    if len(shape) != 3:
        raise ValueError(f"grid must be one side or three, got {grid!r}")
    return shape  # type: ignore[return-value]


def area_resized(image: torch.Tensor, size: int) -> torch.Tensor:
    """`image` (H, W) area-resized so that its longer side is `size` (the aspect kept)."""
    h, w = image.shape
    scale = size / max(h, w)
    out = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None, None], size=out, mode="area")[0, 0]


def _resized(image: torch.Tensor, K: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """`image` (H, W) area-resized so that its longer side is `size`, on a zero size² canvas
    (top left), and its K."""
    h, w = image.shape
    resized = area_resized(image, size)
    out = resized.shape
    canvas = torch.zeros(size, size, dtype=image.dtype, device=image.device)
    canvas[: out[0], : out[1]] = resized
    return canvas, _scaled_K(K, out[1] / w, out[0] / h)


def _scaled_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of the image resized by sx, sy: u → (u + 0.5)·s − 0.5 per axis (pixel centres at
    integers)."""
    K = np.asarray(K, float).copy()
    K[0] *= sx
    K[0, 2] += 0.5 * sx - 0.5
    K[1] *= sy
    K[1, 2] += 0.5 * sy - 0.5
    return K


def working_views(views: Views, size: int) -> Views:
    """Every view resized to `size`² (longer side; K follows)."""
    pairs = [_resized(i, k, size) for i, k in zip(views.images, views.K, strict=True)]
    return Views([p[0] for p in pairs], np.stack([p[1] for p in pairs]), views.T_ref_source)


def coarse_inputs(
    views: Views,
    image_size: int,
    grid: int | Sequence[int],
    spacing_mm: float,
    centre_mm: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """The coarse stage's batch of one: images (1, V, S, S) at the working size `image_size`,
    P (1, V, 3, 4) float32 and points (1, X, Y, Z, 3) float32 of the grid centred at
    `centre_mm` (default: the shots' isocentre)."""
    work = working_views(views, image_size)
    if centre_mm is None:
        centre_mm = geometry.isocentre_of_poses(views.T_ref_source)
    centre = torch.tensor(np.asarray(centre_mm, float), dtype=torch.float32, device=views.device)
    return {
        "images": torch.stack(work.images)[None],
        "P": torch.tensor(work.P, dtype=torch.float32, device=views.device)[None],
        "points": voxel_centres(centre[None], grid_shape(grid), spacing_mm),
    }


def pixel_mm_at(P: np.ndarray, point_mm: np.ndarray) -> np.ndarray:
    """(V,) the width (mm) of one pixel of each view (P (V, 3, 4)) at the depth of `point_mm`."""
    M = P[:, :, :3]
    depth = (M @ point_mm + P[:, :, 3])[:, 2]  # z·‖P₃‖: P's scale cancels below
    fx = np.linalg.norm(np.cross(M[:, 0], M[:, 2]), axis=-1) / np.linalg.norm(M[:, 2], axis=-1) ** 2
    return depth / (fx * np.linalg.norm(M[:, 2], axis=-1))


def fine_inputs(
    views: Views,
    centres_mm: np.ndarray,
    grid: int | Sequence[int],
    spacing_mm: float,
    crop_mm: float,
    crop_px: int,
    source_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """The fine stage's batch, one row per vertebra: images (L, V, c, c), P (L, V, 3, 4) and
    points (L, X, Y, Z, 3), float32, for centres (L, 3) mm; c = `crop_px`.

    Each view's crop is cut from the shot at its own resolution. Where a shot's pixel is
    finer than the crop's by a factor of two or more, the shot is first area-reduced by the
    largest integer factor that keeps it at least as fine (the prefilter a resampling needs).
    `source_size` (weights trained before native crops): crops are cut from the shot resized
    to that working size instead, as those weights saw them.
    """
    centres = np.asarray(centres_mm, float).reshape(-1, 3)
    if source_size is not None:
        views = working_views(views, source_size)
    P_all = views.P
    device = views.device
    crops, Ps = [], []
    for image, P in zip(views.images, P_all, strict=True):
        crop_pixel_mm = crop_mm / crop_px
        native_mm = min(pixel_mm_at(P[None], c)[0] for c in centres)
        factor = max(1, math.floor(crop_pixel_mm / native_mm + 1e-6))
        K_scale = np.eye(3)
        if factor > 1:
            image = F.avg_pool2d(image[None, None], factor)[0, 0]
            K_scale = geometry.crop_resize_intrinsics(np.eye(3), 0.0, 0.0, 1.0 / factor)
        P_t = torch.tensor(K_scale @ P, dtype=torch.float64, device=device)[None]
        per_level = [
            crop_views(
                image[None],
                P_t,
                torch.tensor(c, dtype=torch.float64, device=device),
                crop_mm,
                crop_px,
            )
            for c in centres
        ]
        crops.append(torch.stack([c[0][0] for c in per_level]))
        Ps.append(torch.stack([c[1][0] for c in per_level]))
    centres_t = torch.tensor(centres, dtype=torch.float32, device=device)
    return {
        "images": torch.stack(crops, dim=1).float(),
        "P": torch.stack(Ps, dim=1).float(),
        "points": voxel_centres(centres_t, grid_shape(grid), spacing_mm),
    }
