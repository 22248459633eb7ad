"""Unprojection of per-view 2D feature maps into a 3D voxel grid, and order-free view fusion.

Each voxel centre X (mm, reference frame) is projected by each view's P (3, 4): the view's
feature map is sampled bilinearly at (u, v) = (P X)₁,₂ / (P X)₃, pixel centres at integers as
in `x23d_ros.geometry`. Voxels behind the source or outside the image get a zero feature and
a zero mask, so fusion ignores views that do not see them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def voxel_centres(
    centre_mm: torch.Tensor, size: int | tuple[int, int, int], spacing_mm: float
) -> torch.Tensor:
    """(B, X, Y, Z, 3) mm coordinates of an axis-aligned grid of `size` voxels (one side S for
    S³, or (X, Y, Z)) centred at `centre_mm` (B, 3)."""
    shape = (size,) * 3 if isinstance(size, int) else tuple(size)
    axes = [
        (torch.arange(n, dtype=centre_mm.dtype, device=centre_mm.device) - (n - 1) / 2) * spacing_mm
        for n in shape
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return centre_mm[:, None, None, None, :] + grid[None]


def scale_projection(P: torch.Tensor, scale: float, strided: bool = False) -> torch.Tensor:
    """P (*, 3, 4) of the same view at `scale` times the resolution.

    Resized images (area or bilinear): u → (u + 0.5)·scale − 0.5, as
    `geometry.crop_resize_intrinsics`. Strided convolutions (kernel 3, padding 1) centre output
    pixel j on input pixel j/scale, so `strided=True` gives u → u·scale.
    """
    shift = 0.0 if strided else 0.5 * scale - 0.5
    S = torch.tensor(
        [[scale, 0.0, shift], [0.0, scale, shift], [0.0, 0.0, 1.0]], dtype=P.dtype, device=P.device
    )
    return S @ P


def unproject(
    features: torch.Tensor, P: torch.Tensor, points_mm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample each view's features at the projections of the grid's points.

    features: (B, V, C, H, W); P: (B, V, 3, 4) for that feature resolution;
    points_mm: (B, X, Y, Z, 3). Returns values (B, V, C, X, Y, Z) and mask (B, V, 1, X, Y, Z).
    """
    b, v, c, h, w = features.shape
    grid_shape = points_mm.shape[1:4]
    pts = points_mm.reshape(b, 1, -1, 3).to(P.dtype)
    projected = pts @ P[..., :3].transpose(-1, -2) + P[..., None, :, 3]  # (B, V, N, 3)
    depth = projected[..., 2]
    uv = projected[..., :2] / depth.clamp(min=1e-6)[..., None]
    # align_corners=True: −1 and +1 are the centres of the first and last pixels.
    norm = torch.stack([2 * uv[..., 0] / (w - 1) - 1, 2 * uv[..., 1] / (h - 1) - 1], dim=-1)
    mask = (depth > 0) & (norm.abs() <= 1).all(-1)
    # Unseen voxels sample two image widths outside, where the zero padding gives exactly 0:
    # cheaper than multiplying every channel by the mask.
    norm = torch.where(mask[..., None], norm, torch.full_like(norm, -3.0))
    sampled = F.grid_sample(
        features.reshape(b * v, c, h, w),
        norm.reshape(b * v, 1, -1, 2).to(features.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (B·V, C, 1, N)
    values = sampled.reshape(b, v, c, *grid_shape)
    return values, mask.reshape(b, v, 1, *grid_shape).to(features.dtype)


def fuse(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`values` and `mask` as `unproject` returns them (values 0 where the mask is 0): masked
    mean and variance over the views (dim 1), and the share of views that see each voxel:
    (B, 2C + 1, X, Y, Z), channels-last (oneDNN's 3D convolutions run about 1.6× faster on the
    CPU this way). Symmetric in the views, so their order and number (2–8) do not matter to
    the network."""
    b, v, c = values.shape[:3]
    # In the values' dtype (under bf16 autocast the mask is bf16 and the samples float32):
    # a count of views is exact in either, its reciprocal is not.
    count = mask.sum(dim=1).to(values.dtype)  # (B, 1, X, Y, Z)
    safe = count.clamp(min=1.0)
    # `values` are 0 where the mask is, so the masked sums are plain sums; one pass over the
    # views, accumulated in place (the (B, V, C, X, Y, Z) tensor is hundreds of MB for the
    # fine stage: no temporary of its size), variance = E[v²] − E[v]²; then each part written
    # once into the channels-last result.
    total = values[:, 0].clone()
    squares = values[:, 0] * values[:, 0]
    for i in range(1, v):
        total += values[:, i]
        squares.addcmul_(values[:, i], values[:, i])
    mean = total.div_(safe)
    variance = squares.div_(safe).addcmul_(mean, mean, value=-1.0).clamp_(min=0.0)
    out = torch.empty(
        (b, 2 * c + 1, *values.shape[3:]),
        dtype=values.dtype,
        device=values.device,
        memory_format=torch.channels_last_3d,
    )
    out[:, :c] = mean
    out[:, c : 2 * c] = variance
    out[:, 2 * c :] = count / v
    return out
