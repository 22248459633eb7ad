"""Cone-beam line integrals through a voxel volume, in torch, on CPU or GPU.

A ray leaves the source (the camera centre of `T_ref_source`) through each pixel centre; it is
clipped to the volume's box, sampled at `step_mm`, trilinearly interpolated and summed, so the
result is ∫ channel ds in (channel unit)·mm. Geometry follows `x23d_ros.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def line_integrals(
    volume: torch.Tensor,
    affine: np.ndarray,
    K: np.ndarray,
    T_ref_source: np.ndarray,
    height: int,
    width: int,
    step_mm: float = 1.0,
    max_samples_per_chunk: int = 2**24,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    out_channels: int | None = None,
) -> torch.Tensor:
    """∫ volume ds along every pixel's ray.

    volume: (C, I, J, Kz) tensor, the value of each channel per voxel (per mm of path).
    affine: (4, 4) voxel index → mm.
    K: (B, 3, 3) or (3, 3); T_ref_source: (B, 4, 4) or (4, 4).
    transform: optional map of the interpolated samples (C, R, S) → (out_channels, R, S)
    applied before summing, e.g. HU → attenuation: one sampled channel then serves several
    integrals, and sampling is what the cast costs.
    Returns (B, out_channels or C, height, width) on `volume`'s device and dtype.

    Samples within half a voxel of the box's faces take the face's value (border padding).
    """
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C, I, J, K), got {tuple(volume.shape)}")
    K = np.asarray(K, np.float64).reshape(-1, 3, 3)
    T = np.asarray(T_ref_source, np.float64).reshape(-1, 4, 4)
    if len(K) == 1 and len(T) > 1:
        K = np.repeat(K, len(T), axis=0)
    if len(K) != len(T):
        raise ValueError(f"{len(K)} intrinsics for {len(T)} poses")
    device, dtype = volume.device, volume.dtype
    inv_affine = np.linalg.inv(np.asarray(affine, np.float64))
    shape = np.array(volume.shape[1:], np.float64)

    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3).astype(np.float64)
    channels = out_channels if transform is not None else volume.shape[0]
    out = torch.zeros(len(T), channels, height * width, dtype=dtype, device=device)
    vol = volume.unsqueeze(0)  # (1, C, I, J, K)
    for b in range(len(T)):
        dirs_src = pixels @ np.linalg.inv(K[b]).T
        dirs = dirs_src @ T[b, :3, :3].T
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)  # unit length: t is in mm
        origin = T[b, :3, 3]
        # Into voxel index space, where the volume is the box [-0.5, n - 0.5].
        o_vox = inv_affine[:3, :3] @ origin + inv_affine[:3, 3]
        d_vox = dirs @ inv_affine[:3, :3].T
        t_near, t_far = _slab(o_vox, d_vox, -0.5, shape - 0.5)
        length = np.clip(t_far - t_near, 0.0, None)
        n_samples = max(1, math.ceil(length.max() / step_mm))
        rays_per_chunk = max(1, max_samples_per_chunk // n_samples)
        for start in range(0, len(pixels), rays_per_chunk):
            sl = slice(start, start + rays_per_chunk)
            out[b, :, sl] = _integrate(
                vol, o_vox, d_vox[sl], t_near[sl], length[sl], n_samples, shape, transform
            )
    return out.reshape(len(T), channels, height, width)


def _slab(o: np.ndarray, d: np.ndarray, lo: float, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit parameters of rays o + t·d through an axis-aligned box (slab method)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0 = (lo - o) * inv
        t1 = (hi - o) * inv
    t_min = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf)
    t_max = np.nan_to_num(np.maximum(t0, t1), nan=np.inf)
    t_near = np.maximum(t_min.max(axis=1), 0.0)
    t_far = t_max.min(axis=1)
    return t_near, t_far


def _integrate(vol, o_vox, d_vox, t_near, length, n_samples, shape, transform) -> torch.Tensor:
    device, dtype = vol.device, vol.dtype
    # grid_sample wants (x, y, z) = (k, j, i), normalised to [-1, 1] over voxel centres:
    # fold the reordering and the scaling into the ray so each sample is one fused multiply-add.
    scale = 2.0 / np.maximum(shape - 1, 1)
    o_grid = torch.as_tensor((o_vox * scale - 1.0)[::-1].copy(), device=device, dtype=dtype)
    d_grid = torch.as_tensor((d_vox * scale)[:, ::-1].copy(), device=device, dtype=dtype)
    # Midpoint rule: n equal segments per ray, each sampled at its centre.
    frac = (torch.arange(n_samples, device=device, dtype=dtype) + 0.5) / n_samples
    t_near = torch.as_tensor(t_near, device=device, dtype=dtype)
    length = torch.as_tensor(length, device=device, dtype=dtype)
    t = t_near[:, None] + frac[None, :] * length[:, None]  # (R, S)
    grid = torch.addcmul(o_grid, t[..., None], d_grid[:, None])  # (R, S, 3)
    samples = F.grid_sample(
        vol, grid[None, None], mode="bilinear", padding_mode="border", align_corners=True
    )
    samples = samples[0, :, 0]  # (C, R, S)
    if transform is not None:
        samples = transform(samples)
    return samples.sum(-1) * (length / n_samples)  # (C, R)
