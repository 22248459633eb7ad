"""Lens and image-intensifier distortion: shots are undistorted before they join a session.

Image-intensifier C-arms distort (pincushion from the curved input screen, S-distortion from
the earth's magnetic field); the reconstruction assumes a pinhole P = K[R|t]. Two ways in:

- `sensor_msgs/CameraInfo`'s `distortion_model` and `d` (REP 104): `plumb_bob` (k1, k2, p1,
  p2, k3) and `rational_polynomial` (k1, k2, p1, p2, k3, k4, k5, k6), the models of OpenCV's
  and ROS's camera calibration. `undistort` resamples the shot onto the ideal pinhole image of
  the same K: for each output pixel, the model gives where it was imaged in the distorted shot.
  Any other model with non-zero coefficients is refused (`DistortionError`): better no shot
  than a shot in the wrong place.
- a per-C-arm dewarp map (`DewarpMap`, a `.npz` with `map_x`, `map_y`: for each pixel of the
  corrected image, the column and row it comes from in the raw frame), the usual result of an
  image intensifier's calibration with a grid phantom. Given, it replaces CameraInfo's model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Coefficient counts of the supported models (ROS camera_calibration_parsers, OpenCV).
MODELS = {"plumb_bob": 5, "rational_polynomial": 8}


class DistortionError(ValueError):
    """A distortion this package cannot undo; the message says which and why."""


def needs_undistortion(d) -> bool:
    """False when there is nothing to undo (no coefficients, or all zero, whatever the name)."""
    return bool(np.any(np.asarray(d, float) != 0.0))


def distort_normalised(x: np.ndarray, y: np.ndarray, model: str, d) -> tuple:
    """Where the ideal normalised image point (x, y) is imaged under `model` with `d`."""
    if model not in MODELS:
        raise DistortionError(
            f"distortion model {model!r} with non-zero coefficients is not supported "
            f"(supported: {', '.join(MODELS)}; or give a dewarp map)"
        )
    d = np.asarray(d, float)
    if not np.isfinite(d).all():
        raise DistortionError(f"{model} coefficients must be finite, not {d.tolist()}")
    if len(d) < MODELS[model]:
        d = np.concatenate([d, np.zeros(MODELS[model] - len(d))])
    if len(d) > MODELS[model]:
        raise DistortionError(f"{model} takes {MODELS[model]} coefficients, got {len(d)}")
    k1, k2, p1, p2, k3 = d[:5]
    k4, k5, k6 = d[5:8] if model == "rational_polynomial" else (0.0, 0.0, 0.0)
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort(image: np.ndarray, K: np.ndarray, model: str, d) -> np.ndarray:
    """The shot as an ideal pinhole camera with intrinsics `K` would have taken it (bilinear;
    pixels that come from outside the frame take the nearest edge value)."""
    image = np.asarray(image)
    if not needs_undistortion(d):
        return image
    # Rounded: the same camera's K and d, sent again, hit the cache despite the last bits.
    key = tuple(np.round(np.asarray(K, float).ravel(), 6).tolist())
    coefficients = tuple(np.round(np.asarray(d, float), 9).tolist())
    ud, vd = undistortion_map(*image.shape, key, model, coefficients)
    return _sample(image, ud, vd)


@functools.lru_cache(maxsize=4)
def undistortion_map(
    h: int, w: int, K: tuple[float, ...], model: str, d: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the ideal (h, w) image, the raw frame's column and row. Kept for the
    last 4 (size, K, model, d): a C-arm streaming at 30 Hz sends the same ones every frame."""
    K = np.asarray(K, float).reshape(3, 3)
    v, u = np.mgrid[0:h, 0:w].astype(float)
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    xd, yd = distort_normalised(x, y, model, d)
    ud = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
    vd = K[1, 1] * yd + K[1, 2]
    # float32 (a 1024² pair is 8 MB), read-only: shared by every frame that uses them.
    ud, vd = ud.astype(np.float32), vd.astype(np.float32)
    ud.flags.writeable = vd.flags.writeable = False
    return ud, vd


@dataclass(frozen=True)
class DewarpMap:
    """For each pixel (row, column) of the corrected image, the raw frame's column and row."""

    map_x: np.ndarray
    map_y: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> DewarpMap:
        with np.load(Path(path).expanduser()) as z:
            if "map_x" not in z or "map_y" not in z:
                raise DistortionError(f"{path}: a dewarp map holds map_x and map_y")
            map_x, map_y = np.asarray(z["map_x"], float), np.asarray(z["map_y"], float)
        if map_x.shape != map_y.shape or map_x.ndim != 2 or not np.isfinite(map_x).all():
            raise DistortionError(f"{path}: map_x and map_y must be finite (H, W) arrays alike")
        return cls(map_x, map_y)

    def apply(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.shape != self.map_x.shape:
            raise DistortionError(
                f"the dewarp map is {self.map_x.shape}, the image {image.shape}: "
                "a map is made for one frame size"
            )
        return _sample(image, self.map_x, self.map_y)


def _sample(image: np.ndarray, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = ndimage.map_coordinates(
        image.astype(np.float32, copy=False), [rows, columns], order=1, mode="nearest"
    )
    return out.astype(image.dtype, copy=False) if image.dtype.kind == "f" else out
