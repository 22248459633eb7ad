"""Realistic fluoroscopy from material line integrals: every effect a parameter with a range.

Per shot, from the areal densities (g/cm²) of bone, soft tissue, titanium and iron along each
pixel's ray (one ray-cast, `render`), in this order:
1. polychromatic Beer–Lambert over the tube spectrum (`materials.spectrum`), energy-integrating
   detector, flat-field normalised;
2. scatter by kernel superposition: each pixel scatters in proportion to P·(−ln P) (the
   primary times the material it crossed, so air scatters nothing), spread by a wide Gaussian,
   scaled to a scatter-to-primary ratio (SPR) at the field's centre (lumbar SPR was not found
   in the literature; 0.3–1.5 behind an anti-scatter grid is a working range);
3. collimation: circular (image intensifier) or rectangular shutters (flat panel);
4. quantum noise (Poisson) and electronic noise (Gaussian); the photon count follows the
   C-arm's automatic exposure control: the dose is set so that the centre of the field gets
   `photons_per_mm2` behind the patient, whatever the patient's size;
5. detector blur (Gaussian point-spread, after the noise so that the noise is correlated);
6. image intensifier only: pincushion and S-distortion, and vignetting;
7. the C-arm's image processing and display: −log, dynamic-range compression (subtracting a
   share of a heavily blurred copy, so a thick body's gradient does not hide the spine), edge
   enhancement (unsharp mask), automatic window from the central region's histogram mapped
   into part of the display range with exponential roll-offs beyond it (no hard clipping),
   gamma, optional inversion, 8-bit quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from x23d_ros.xray import materials

Range = tuple[float, float]


@dataclass(frozen=True)
class RealisticParams:
    """Ranges (low, high) sampled uniformly per shot; probabilities in [0, 1]."""

    kvp: Range = (60.0, 110.0)
    filter_mm_al: Range = (2.5, 4.5)
    # Behind the patient, at the AEC reference; ≈ 31 photons/mm² per nGy for a 90 kV beam after
    # 20 cm of tissue (derived from NIST air μen/ρ), so ≈ 10–300 nGy per frame; frame doses for
    # mobile C-arms were not found, so this is a working range.
    photons_per_mm2: Range = (300.0, 10000.0)
    electronic_noise: Range = (0.002, 0.01)  # SD, fraction of the AEC reference signal
    scatter_to_primary: Range = (0.3, 1.5)
    scatter_sigma_mm: Range = (30.0, 80.0)
    blur_sigma_mm: Range = (0.15, 0.5)
    intensifier_probability: float = 0.6
    pincushion: Range = (0.0, 0.03)  # relative radial stretch at the field's edge
    s_distortion_rad: Range = (-0.02, 0.02)
    vignetting: Range = (0.1, 0.35)
    collimator_radius: Range = (0.8, 1.0)  # fraction of the half width
    shutter_margin: Range = (0.0, 0.15)  # fraction of the width, per side (flat panel)
    range_compression: Range = (0.3, 0.8)
    edge_enhancement: Range = (0.0, 1.5)
    gamma: Range = (0.75, 1.3)
    invert_probability: float = 0.5
    # The auto-window, from the central measuring field's histogram, is mapped linearly into
    # display levels `display_low`..`display_high` of full scale; what lies beyond it rolls off
    # exponentially into the rest of the scale instead of being cut (real lumbar frames span
    # 146-227 of 255 grey levels between their 1st and 99th percentiles and clip almost
    # nothing: #22's measurements of real radiographs and fluoroscopy; a hard window clipped
    # 40 % of the exposed field here).
    window_low_pct: Range = (0.5, 5.0)
    window_high_pct: Range = (95.0, 99.8)
    display_low: Range = (0.15, 0.3)
    display_high: Range = (0.75, 0.9)


@dataclass(frozen=True)
class ShotEffects:
    """One shot's drawn values of every effect (what a shard stores to reproduce the image)."""

    kvp: float
    filter_mm_al: float
    photons_per_mm2: float
    electronic_noise: float
    scatter_to_primary: float
    scatter_sigma_mm: float
    blur_sigma_mm: float
    intensifier: bool
    pincushion: float
    s_distortion_rad: float
    vignetting: float
    collimator_radius: float
    shutter_margins: tuple[float, float, float, float]
    range_compression: float
    edge_enhancement: float
    gamma: float
    invert: bool
    window_low_pct: float
    window_high_pct: float
    display_low: float
    display_high: float

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sample_effects(rng: np.random.Generator, p: RealisticParams = RealisticParams()) -> ShotEffects:
    def u(r: Range) -> float:
        return float(rng.uniform(*r))

    intensifier = bool(rng.random() < p.intensifier_probability)
    return ShotEffects(
        kvp=u(p.kvp),
        filter_mm_al=u(p.filter_mm_al),
        photons_per_mm2=u(p.photons_per_mm2),
        electronic_noise=u(p.electronic_noise),
        scatter_to_primary=u(p.scatter_to_primary),
        scatter_sigma_mm=u(p.scatter_sigma_mm),
        blur_sigma_mm=u(p.blur_sigma_mm),
        intensifier=intensifier,
        pincushion=u(p.pincushion) if intensifier else 0.0,
        s_distortion_rad=u(p.s_distortion_rad) if intensifier else 0.0,
        vignetting=u(p.vignetting) if intensifier else 0.0,
        collimator_radius=u(p.collimator_radius),
        shutter_margins=tuple(u(p.shutter_margin) for _ in range(4)),
        range_compression=u(p.range_compression),
        edge_enhancement=u(p.edge_enhancement),
        gamma=u(p.gamma),
        invert=bool(rng.random() < p.invert_probability),
        window_low_pct=u(p.window_low_pct),
        window_high_pct=u(p.window_high_pct),
        display_low=u(p.display_low),
        display_high=u(p.display_high),
    )


#: Channels of the areal-density stack (g/cm²) and the material each attenuates as.
CHANNELS = ("bone", "soft", "titanium", "iron")


def fluoroscopy(
    areal_gcm2: torch.Tensor,
    fx: ShotEffects,
    pixel_mm: float,
    generator: torch.Generator,
    *,
    distortion: bool = True,
) -> torch.Tensor:
    """(4, H, W) areal densities of `CHANNELS` → one (H, W) fluoroscopy frame in [0, 1]."""
    device = areal_gcm2.device
    energy, weights = materials.spectrum(fx.kvp, fx.filter_mm_al)
    mu = torch.tensor(
        np.stack([materials.mu_rho(m, energy) for m in CHANNELS]),
        dtype=torch.float32,
        device=device,
    )
    w = torch.tensor(weights * energy, dtype=torch.float32, device=device)  # energy-integrating
    w = w / w.sum()
    optical = torch.einsum("me,mhw->ehw", mu, areal_gcm2.float())
    primary = torch.einsum("e,ehw->hw", w, torch.exp(-optical))

    source = primary * -torch.log(torch.clamp(primary, min=1e-12))
    scatter = _gaussian_blur(source, fx.scatter_sigma_mm / pixel_mm, downsample=True)
    radius, field = _field(fx, primary.shape, device)
    centre = radius <= 0.3
    scale = (
        fx.scatter_to_primary
        * primary[centre].mean()
        / torch.clamp(scatter[centre].mean(), min=1e-12)
    )
    signal = primary + scale * scatter
    signal = signal * field

    # Automatic exposure control: scale the tube output to the signal in the central field.
    reference = signal[centre & field].mean() if (centre & field).any() else signal.mean()
    signal = signal / torch.clamp(reference, min=1e-6)
    photons = fx.photons_per_mm2 * pixel_mm**2
    counts = torch.poisson(signal * photons, generator=generator)
    noise = torch.randn(signal.shape, generator=generator, device=device) * fx.electronic_noise
    image = counts / photons + noise
    image = _gaussian_blur(image, fx.blur_sigma_mm / pixel_mm)

    if fx.intensifier:
        image = image * (1.0 - fx.vignetting * radius**2)
        if distortion and (fx.pincushion or fx.s_distortion_rad):
            image = _distort(image, fx.pincushion, fx.s_distortion_rad)
    # C-arms meter and window on a central measuring field, about a third of the diameter.
    return _display(image, field, field & (radius <= 0.35), fx, pixel_mm)


def _field(
    fx: ShotEffects, shape: tuple[int, int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius from the centre over half the shorter side, the collimated field) (H, W).
    `fx` needs only `intensifier`, `collimator_radius` and `shutter_margins`."""
    h, w_px = shape
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2,
        torch.arange(w_px, device=device, dtype=torch.float32) - (w_px - 1) / 2,
        indexing="ij",
    )
    half = min(h, w_px) / 2
    radius = torch.sqrt(xx**2 + yy**2) / half
    if fx.intensifier:
        field = radius <= fx.collimator_radius
    else:
        left, right, top, bottom = fx.shutter_margins
        field = (
            (xx >= -w_px / 2 + left * w_px)
            & (xx <= w_px / 2 - right * w_px)
            & (yy >= -h / 2 + top * h)
            & (yy <= h / 2 - bottom * h)
        )
    return radius, field


def field_mask(effects: dict, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: where a shot drawn with `effects` (a shard's `ShotEffects.as_dict()`) was
    exposed, inside the collimator or the shutters. Effects without the collimation (a
    site's own shots): the whole image."""
    try:
        fx = SimpleNamespace(
            intensifier=bool(effects["intensifier"]),
            collimator_radius=float(effects["collimator_radius"]),
            shutter_margins=tuple(effects["shutter_margins"]),
        )
    except (KeyError, TypeError):
        return np.ones(shape, bool)
    return _field(fx, shape)[1].numpy()


def _display(
    image: torch.Tensor, field: torch.Tensor, roi: torch.Tensor, fx: ShotEffects, pixel_mm: float
) -> torch.Tensor:
    """−log, range compression, edge enhancement, then the auto-window of the central region."""
    attenuation = -torch.log(torch.clamp(image, min=1e-4))
    fill = attenuation[roi].mean() if roi.any() else attenuation.mean()
    attenuation = torch.where(field, attenuation, fill)  # keep the shutters out of the filters
    if fx.range_compression:
        background = _gaussian_blur(attenuation, 25.0 / pixel_mm, downsample=True)
        attenuation = attenuation - fx.range_compression * background
    if fx.edge_enhancement:
        detail = attenuation - _gaussian_blur(attenuation, 1.5 / pixel_mm)
        attenuation = attenuation + fx.edge_enhancement * detail
    inside = attenuation[roi] if roi.any() else attenuation.flatten()
    inside = inside[:: max(1, inside.numel() // 100_000)]
    lo = torch.quantile(inside, fx.window_low_pct / 100)
    hi = torch.quantile(inside, fx.window_high_pct / 100)
    u = (attenuation - lo) / torch.clamp(hi - lo, min=1e-6)
    low, high = fx.display_low, fx.display_high
    slope = 0.3 * (high - low)  # the roll-offs start at 0.3 of the window's slope: a knee
    shown = torch.where(
        u < 0,
        low * torch.exp(torch.clamp(u, max=0.0) * slope / low),
        torch.where(
            u > 1,
            1.0 - (1.0 - high) * torch.exp(-torch.clamp(u - 1.0, min=0.0) * slope / (1.0 - high)),
            low + (high - low) * u,
        ),
    )
    shown = shown**fx.gamma
    shown = torch.where(field, shown, torch.ones_like(shown))  # no radiation: fully attenuated look
    if fx.invert:
        shown = 1.0 - shown
    return torch.round(shown * 255.0) / 255.0


def _gaussian_blur(image: torch.Tensor, sigma_px: float, downsample: bool = False) -> torch.Tensor:
    """Separable Gaussian blur of (H, W); wide kernels run on a 4× smaller image."""
    if sigma_px < 0.3:
        return image
    x = image[None, None]
    factor = 4 if downsample and sigma_px > 8 else 1
    if factor > 1:
        x = F.avg_pool2d(x, factor)
        sigma_px /= factor
    radius = int(np.ceil(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius - pad))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius - pad, 0))
    if factor > 1:
        x = F.interpolate(x, size=image.shape, mode="bilinear", align_corners=False)
    return x[0, 0]


def _distort(image: torch.Tensor, pincushion: float, s_rad: float) -> torch.Tensor:
    """Image-intensifier warp: each output pixel shows the input at a smaller, twisted radius."""
    h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=image.device),
        torch.linspace(-1, 1, w, device=image.device),
        indexing="ij",
    )
    r2 = xs**2 + ys**2
    shrink = 1.0 - pincushion * r2  # inverse of r_out = r_in (1 + k r_in²), to first order
    angle = -s_rad * r2
    cos, sin = torch.cos(angle), torch.sin(angle)
    x_in = (cos * xs - sin * ys) * shrink
    y_in = (sin * xs + cos * ys) * shrink
    grid = torch.stack([x_in, y_in], dim=-1)[None]
    return F.grid_sample(
        image[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0, 0]
