"""Render a case's shots in both domains from one ray-cast of its material volume."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from x23d_ros.anatomy import Anatomy
from x23d_ros.xray.instruments import InstrumentParams, instrument_densities
from x23d_ros.xray.materials import HU_SOFT, MU_WATER_PER_MM, decompose
from x23d_ros.xray.raycast import line_integrals
from x23d_ros.xray.realistic import RealisticParams, ShotEffects, fluoroscopy, sample_effects


@dataclass(frozen=True)
class SyntheticParams:
    """The bone-only DRR: voxels above `bone_threshold_hu` attenuate as μ_water·(1 + HU/1000)."""

    bone_threshold_hu: float = 150.0


@dataclass(frozen=True)
class RenderParams:
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)
    realistic: RealisticParams = field(default_factory=RealisticParams)
    instruments: InstrumentParams = field(default_factory=InstrumentParams)
    step_mm: float = 1.0


@dataclass
class RenderedShots:
    """B shots of one case. synthetic: (B, H, W) bone line integrals (dimensionless μ·L);
    realistic: (B, H, W) display values in [0, 1]; effects: what each realistic shot drew."""

    synthetic: np.ndarray
    realistic: np.ndarray
    effects: list[ShotEffects]
    instruments: list[dict] = field(default_factory=list)


def cast(
    anatomy: Anatomy,
    titanium: np.ndarray | None,
    iron: np.ndarray | None,
    K: np.ndarray,
    T_ref_source: np.ndarray,
    image_size: int,
    params: RenderParams = RenderParams(),
    device: str | torch.device = "cpu",
    synthetic_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ray-cast one case's shots: synthetic μ·L (B, H, W) and areal densities (B, 4, H, W) in
    g/cm² of bone, soft tissue, titanium and iron.

    Bone and metal need the fine grid but fill a small part of it, so they are cast from a
    1-voxel-margin crop around them; soft tissue is smooth and everywhere, so it is cast from
    a 2×2×2-averaged copy at twice the step (averaging preserves its line integrals).
    With `synthetic_only`, only the bone-only channel is cast and the areal densities are None.
    """
    hu = torch.from_numpy(np.ascontiguousarray(anatomy.hu, dtype=np.float32))
    threshold = params.synthetic.bone_threshold_hu
    has_metal = [not synthetic_only and m is not None and bool(m.any()) for m in (titanium, iron)]
    metals = [m for m, present in zip((titanium, iron), has_metal, strict=True) if present]
    # The fine cast samples HU once and derives both bone channels from it (sampling is the
    # cost); it covers the voxels where either is non-zero, or metal is.
    floor = threshold if synthetic_only else min(threshold, HU_SOFT)
    occupied = hu > floor
    for m in metals:
        occupied |= torch.from_numpy(m) > 0
    fine_volume, fine_affine = _crop(
        [hu, *(torch.from_numpy(m) / 10 for m in metals)], occupied, anatomy.affine
    )

    def to_integrands(samples: torch.Tensor) -> torch.Tensor:
        h = samples[0]
        parts = [torch.where(h > threshold, MU_WATER_PER_MM * (1.0 + h / 1000.0), 0.0)]
        if not synthetic_only:
            parts.append(decompose(h)[0] / 10)
            parts.extend(samples[1:])
        return torch.stack(parts)

    fine_out = line_integrals(
        fine_volume.to(device),
        fine_affine,
        K,
        T_ref_source,
        image_size,
        image_size,
        params.step_mm,
        transform=to_integrands,
        out_channels=1 if synthetic_only else 2 + len(metals),
    )
    if synthetic_only:
        return fine_out[:, 0], None

    _, soft = decompose(hu)
    coarse = torch.nn.functional.avg_pool3d((soft / 10)[None, None], 2, ceil_mode=True)[0].to(
        device
    )
    coarse_affine = anatomy.affine @ np.array(
        [[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1.0]]
    )
    soft_out = line_integrals(
        coarse, coarse_affine, K, T_ref_source, image_size, image_size, 2 * params.step_mm
    )

    b, _, h, w = fine_out.shape
    areal = torch.zeros(b, 4, h, w, dtype=fine_out.dtype, device=fine_out.device)
    areal[:, 0], areal[:, 1] = fine_out[:, 1], soft_out[:, 0]
    channel = 2
    for m, present in enumerate(has_metal):
        if present:
            areal[:, 2 + m] = fine_out[:, channel]
            channel += 1
    return fine_out[:, 0], areal


def _crop(
    channels: list[torch.Tensor], occupied: torch.Tensor, affine: np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    """The channels stacked and cropped to the `occupied` voxels' box plus one voxel, with the
    crop's affine."""
    shape = occupied.shape
    lo, hi = [0, 0, 0], [1, 1, 1]
    if occupied.any():
        idx = [
            torch.nonzero(occupied.any(dim=tuple(d for d in range(3) if d != a))).flatten()
            for a in range(3)
        ]
        lo = [max(int(i.min()) - 1, 0) for i in idx]
        hi = [min(int(i.max()) + 2, n) for i, n in zip(idx, shape, strict=True)]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = affine[:3, :3] @ np.array(lo) + affine[:3, 3]
    return torch.stack([c[crop] for c in channels]), cropped_affine


def render_shots(
    anatomy: Anatomy,
    K: np.ndarray,
    T_ref_source: np.ndarray,
    image_size: int,
    pixel_mm: float | np.ndarray,
    rng: np.random.Generator,
    params: RenderParams = RenderParams(),
    *,
    distortion: bool = True,
    device: str | torch.device = "cpu",
) -> RenderedShots:
    """Render B = len(T_ref_source) shots (K: (3, 3) or (B, 3, 3)) of `anatomy`, both domains.

    `pixel_mm` (scalar or (B,)) is each image's pixel pitch at the detector, for the effects
    given in mm (blur, scatter kernel, dose per mm²).
    """
    pixel_mm = np.broadcast_to(
        np.asarray(pixel_mm, float), (len(np.asarray(T_ref_source).reshape(-1, 4, 4)),)
    )
    titanium, iron, placed = instrument_densities(anatomy, rng, params.instruments)
    synthetic, areal = cast(anatomy, titanium, iron, K, T_ref_source, image_size, params, device)
    generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**63)))
    effects, realistic = [], []
    for b in range(len(areal)):
        fx = sample_effects(rng, params.realistic)
        effects.append(fx)
        realistic.append(
            fluoroscopy(areal[b], fx, float(pixel_mm[b]), generator, distortion=distortion)
        )
    return RenderedShots(
        synthetic=synthetic.cpu().numpy(),
        realistic=torch.stack(realistic).cpu().numpy(),
        effects=effects,
        instruments=placed,
    )
