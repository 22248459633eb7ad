"""Statistics of a displayed X-ray frame (8-bit grey, bone dark): how real does it look?

Issue #22 item 0 compares the realistic simulator with real radiographs by a few numbers; these
are the definitions this package uses (the issue does not give its own, so its ranges for
real frames are comparable only roughly). All are computed inside a mask of the exposed field
(`xray.realistic.field_mask`), on the frame's own pixels:

- `span_grey_levels`, `clipped_black_pct`, `clipped_white_pct`: the display window.
- `noise_rel`: the noise SD (Immerkær's Laplacian-difference estimate, "Fast noise variance
  estimation", CVIU 64(2), 1996; over the pixels whose gradient is below the field's median,
  so that edges do not count as noise) as a share of the p1–p99 span.
- `nps_slope`: the slope of log NPS against log frequency between 0.2 and 0.45 cycles per pixel,
  median over the flattest 64² patches (each less a fitted quadric, Hann-windowed): 0 for white
  noise, steeply negative for smoothed noise.
- `edge_cnr`, `undershoot`, `overshoot`: across the strongest edges (top 0.5 % of the
  gradient, away from the field's border, steps rather than thin lines), profiles
  ±`EDGE_HALF_PX` pixels along the gradient:
  the step between the plateaus over the noise SD, and how far the profile dips below the dark
  plateau and rises above the bright one next to the edge, as shares of the step (medians).
- `detail_rms`: the RMS of the frame less its 5 mm Gaussian blur (of the field alone), as a
  share of the span, on the field shrunk by 5 mm: the edge enhancement and fine texture a
  display adds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Frequency band (cycles per pixel) of the noise power spectrum's slope.
NPS_BAND = (0.2, 0.45)
NPS_PATCH_PX = 64
#: Half the length (pixels) of an edge profile; its plateaus are its 3 outermost samples a side.
EDGE_HALF_PX = 8
DETAIL_BLUR_MM = 5.0


def noise_sd(image: np.ndarray, mask: np.ndarray) -> float:
    """Immerkær's noise SD of `image` (H, W) over the low-gradient pixels of `mask`."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    response = np.abs(ndimage.convolve(image.astype(float), kernel, mode="reflect"))
    inner = ndimage.binary_erosion(mask, iterations=2)
    gradient = _gradient(image)
    flat = inner & (gradient <= np.median(gradient[inner]))
    return float(np.sqrt(np.pi / 2) * response[flat].mean() / 6.0)


def nps_slope(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> float:
    """Median slope of log NPS vs log frequency over `NPS_BAND`, flattest patches of `mask`."""
    n = NPS_PATCH_PX
    h, w = image.shape
    corners = [
        (i, j)
        for i in range(0, h - n + 1, n // 2)
        for j in range(0, w - n + 1, n // 2)
        if mask[i : i + n, j : j + n].all()
    ]
    if not corners:
        raise ValueError(f"no {n}² patch lies inside the field of a {h}×{w} frame")
    gradient = _gradient(image)
    energy = np.array([gradient[i : i + n, j : j + n].mean() for i, j in corners])
    flattest = [corners[k] for k in np.argsort(energy)[: max(1, len(corners) // 4)]]
    if len(flattest) > 32:
        flattest = [flattest[k] for k in rng.choice(len(flattest), 32, replace=False)]
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1) - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1).reshape(-1, 6)
    window = np.outer(np.hanning(n), np.hanning(n))
    f = np.fft.fftfreq(n)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    band = (radius >= NPS_BAND[0]) & (radius <= NPS_BAND[1])
    bins = np.round(radius[band] * n).astype(int)
    slopes = []
    for i, j in flattest:
        patch = image[i : i + n, j : j + n].astype(float).reshape(-1)
        coef, *_ = np.linalg.lstsq(basis, patch, rcond=None)
        residual = (patch - basis @ coef).reshape(n, n) * window
        power = np.abs(np.fft.fft2(residual)) ** 2
        radial = np.bincount(bins, power[band]) / np.maximum(np.bincount(bins), 1)
        used = np.unique(bins)
        if (radial[used] <= 0).any():
            continue  # a constant patch (clipped): no noise to measure
        slopes.append(np.polyfit(np.log(used / n), np.log(radial[used]), 1)[0])
    if not slopes:
        raise ValueError("every patch in the field is constant: no noise to measure")
    return float(np.median(slopes))


def edge_profiles(image: np.ndarray, mask: np.ndarray, noise: float) -> dict[str, float]:
    """`edge_cnr`, `undershoot` and `overshoot` across the strongest edges inside `mask`."""
    smooth = ndimage.gaussian_filter(image.astype(float), 1.0)
    gy, gx = ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)
    magnitude = np.hypot(gx, gy)
    inner = ndimage.binary_erosion(mask, iterations=2 * EDGE_HALF_PX)
    if not inner.any():
        raise ValueError("the field is too small to hold an edge profile")
    strong = inner & (magnitude >= np.percentile(magnitude[inner], 99.5)) & (magnitude > 0)
    ii, jj = np.nonzero(strong)
    step = max(1, len(ii) // 400)
    ii, jj = ii[::step], jj[::step]
    t = np.arange(-EDGE_HALF_PX, EDGE_HALF_PX + 1, dtype=float)
    uy = gy[ii, jj] / magnitude[ii, jj]
    ux = gx[ii, jj] / magnitude[ii, jj]
    rows = ii[:, None] + uy[:, None] * t[None]
    cols = jj[:, None] + ux[:, None] * t[None]
    profile = ndimage.map_coordinates(image.astype(float), [rows, cols], order=1, mode="nearest")
    low, high = profile[:, :3].mean(1), profile[:, -3:].mean(1)
    height = high - low
    # A step, not a ridge: a thin line (a wire, a cortical rim seen edge-on) has a strong
    # gradient too, but its plateaus on either side are alike.
    keep = (height > 0) & (height >= 0.5 * (profile.max(1) - profile.min(1)))
    if not keep.any():
        raise ValueError("no edge rises along its gradient")
    profile, low, high, height = profile[keep], low[keep], high[keep], height[keep]
    centre = EDGE_HALF_PX
    under = np.clip(low - profile[:, 3:centre].min(1), 0, None) / height
    over = np.clip(profile[:, centre + 1 : -3].max(1) - high, 0, None) / height
    return {
        "edge_cnr": float(np.median(height) / noise) if noise > 0 else float("inf"),
        "undershoot": float(np.median(under)),
        "overshoot": float(np.median(over)),
    }


def detail_rms(image: np.ndarray, mask: np.ndarray, pixel_mm: float, span: float) -> float:
    """RMS of `image` less its `DETAIL_BLUR_MM` Gaussian blur, over `mask` shrunk by as much,
    as a share of `span`."""
    sigma = DETAIL_BLUR_MM / pixel_mm
    inner = ndimage.binary_erosion(mask, iterations=max(1, round(sigma)))
    if not inner.any():
        raise ValueError(f"the field is smaller than the {DETAIL_BLUR_MM} mm blur")
    # The blur of the field alone (normalised convolution): the shutters' black stays out.
    weight = ndimage.gaussian_filter(mask.astype(float), sigma)
    blurred = ndimage.gaussian_filter(np.where(mask, image, 0.0).astype(float), sigma)
    detail = image.astype(float) - blurred / np.maximum(weight, 1e-6)
    return float(np.sqrt((detail[inner] ** 2).mean()) / span)


def frame_stats(
    image: np.ndarray, mask: np.ndarray, pixel_mm: float, rng: np.random.Generator
) -> dict[str, float]:
    """All the statistics above of an 8-bit frame `image` (H, W) inside `mask` (H, W) bool;
    `pixel_mm`: the pixel's size at the patient (mm)."""
    if image.shape != mask.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be one (H, W)")
    inside = image[mask].astype(float)
    lo, hi = np.percentile(inside, [1, 99])
    span = float(hi - lo)
    noise = noise_sd(image, mask)
    return {
        "span_grey_levels": span,
        "clipped_black_pct": float(100 * (inside == 0).mean()),
        "clipped_white_pct": float(100 * (inside == 255).mean()),
        "noise_rel": noise / span if span > 0 else float("inf"),
        "nps_slope": nps_slope(image, mask, rng),
        **edge_profiles(image, mask, noise),
        "detail_rms": detail_rms(image, mask, pixel_mm, span) if span > 0 else 0.0,
    }


def _gradient(image: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(image.astype(float), 1.0)
    return np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
