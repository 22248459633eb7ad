"""Per-vertebra views: crop each shot around a vertebra's projection, with P adjusted.

X23D's fine stage (Jecklin et al. 2022, §2.1) feeds the network crops of each X-ray around one
vertebra and the P matrices that describe those crops. A crop is the window of `out_px`² pixels
whose footprint at the vertebra's depth is `size_mm` wide, centred on the vertebra's projected
centre and resampled bilinearly. With a the window's left edge in input pixel coordinates
(pixel centres at integers) and `scale` output pixels per input pixel, an input u lands at
u' = (u − a)·scale − 0.5, the same convention as `geometry.crop_resize_intrinsics`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_views(
    images: torch.Tensor, P: torch.Tensor, centre_mm: torch.Tensor, size_mm: float, out_px: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (V, out_px, out_px) of images (V, H, W) around centre_mm (3,), and their P (V, 3, 4).

    The window's side in pixels is size_mm × (magnification at the centre's depth); pixels
    outside the image read as 0.
    """
    v, h, w = images.shape
    centre = torch.cat([centre_mm.to(P.dtype), centre_mm.new_ones(1).to(P.dtype)])
    projected = P @ centre  # (V, 3)
    u, vv, depth = (
        projected[:, 0] / projected[:, 2],
        projected[:, 1] / projected[:, 2],
        projected[:, 2],
    )
    # Pixels per mm at that depth: fx / depth, with fx recovered from P's scale (K[0, 0]).
    fx = (
        torch.linalg.norm(P[:, 0, :3].cross(P[:, 2, :3], dim=-1), dim=-1)
        / torch.linalg.norm(P[:, 2, :3], dim=-1) ** 2
    )
    side_px = size_mm * fx / depth * torch.linalg.norm(P[:, 2, :3], dim=-1)
    scale = out_px / side_px  # output pixels per input pixel
    a_u = u - side_px / 2  # the window's edges, in input pixel coordinates
    a_v = vv - side_px / 2
    # Output pixel j's centre sits at input a + (j + 0.5) / scale.
    j = torch.arange(out_px, dtype=P.dtype, device=P.device)
    us = a_u[:, None] + (j[None] + 0.5) / scale[:, None]  # (V, out_px)
    vs = a_v[:, None] + (j[None] + 0.5) / scale[:, None]
    grid = torch.stack(
        [
            (2 * us / (w - 1) - 1)[:, None, :].expand(v, out_px, out_px),
            (2 * vs / (h - 1) - 1)[:, :, None].expand(v, out_px, out_px),
        ],
        dim=-1,
    )
    crops = F.grid_sample(
        images[:, None],
        grid.to(images.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[:, 0]
    S = torch.zeros(v, 3, 3, dtype=P.dtype, device=P.device)
    S[:, 0, 0] = scale
    S[:, 1, 1] = scale
    S[:, 0, 2] = -a_u * scale - 0.5
    S[:, 1, 2] = -a_v * scale - 0.5
    S[:, 2, 2] = 1.0
    return crops, S @ P
