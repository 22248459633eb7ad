"""The one C-arm camera model (shared/DESIGN.md §3), as pure numpy functions.

The X-ray source is a pinhole camera in the ROS optical convention: z from the source towards
the detector, x right, y down in the image. Pixel (row i, column j) has its centre at
(u, v) = (j, i), as in OpenCV and sensor_msgs/CameraInfo.

- `K` (3, 3): intrinsics in pixels, fx = fy = source-to-detector distance / pixel pitch.
- `T_ref_source` (4, 4): the source pose in the reference frame (maps source coordinates to
  reference coordinates).
- `P` (3, 4): `K · inv(T_ref_source)[:3]`, maps homogeneous reference points to pixels.

All lengths are millimetres. Cropping or resizing an image changes `K` only.
"""

from __future__ import annotations

import numpy as np


class GeometryError(ValueError):
    """An argument that is not a valid camera, pose or point array; the message says why."""


def _check(name: str, array: np.ndarray, trailing: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.shape[array.ndim - len(trailing) :] != trailing:
        raise GeometryError(
            f"{name} must have shape (*, {', '.join(map(str, trailing))}), got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise GeometryError(f"{name} contains NaN or infinite values")
    return array


def intrinsics(
    sdd_mm: float,
    pixel_mm: float,
    width_px: int,
    height_px: int,
    principal_px: tuple[float, float] | None = None,
) -> np.ndarray:
    """K (3, 3) of a detector `sdd_mm` from the source with square `pixel_mm` pixels.

    The principal point defaults to the detector centre, ((width-1)/2, (height-1)/2).
    """
    if sdd_mm <= 0 or pixel_mm <= 0 or width_px <= 0 or height_px <= 0:
        raise GeometryError(
            f"sdd_mm, pixel_mm, width_px, height_px must be positive, got "
            f"{sdd_mm}, {pixel_mm}, {width_px}, {height_px}"
        )
    cx, cy = principal_px if principal_px is not None else ((width_px - 1) / 2, (height_px - 1) / 2)
    f = sdd_mm / pixel_mm
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def projection_matrix(K: np.ndarray, T_ref_source: np.ndarray) -> np.ndarray:
    """P (3, 4) = K · inv(T_ref_source)[:3]."""
    K = _check("K", K, (3, 3))
    T = check_pose(T_ref_source)
    return K @ invert_pose(T)[:3]


def check_pose(T: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Return T (4, 4) as float64 if it is a rigid transform, else raise GeometryError."""
    T = _check("pose", T, (4, 4))
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) < 0:
        raise GeometryError("pose rotation is not orthonormal with determinant +1")
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise GeometryError(f"pose last row must be [0, 0, 0, 1], got {T[3]}")
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse (4, 4) of a rigid transform, using Rᵀ rather than a general matrix inverse."""
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


def project(P: np.ndarray, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project reference points (*, 3) with P (3, 4); return pixels (*, 2) and depth (*,) in mm.

    Depth is the point's z in the source frame (times K[2, 2] = 1); points behind the source
    have depth ≤ 0 and their pixels are meaningless.
    """
    P = _check("P", P, (3, 4))
    points = _check("points_mm", points_mm, (3,))
    h = points @ P[:, :3].T + P[:, 3]
    depth = h[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = h[..., :2] / depth[..., None]
    return uv, depth


def back_project(
    K: np.ndarray, T_ref_source: np.ndarray, uv_px: np.ndarray, depth_mm: np.ndarray
) -> np.ndarray:
    """Reference points (*, 3) at source-frame depth `depth_mm` (*,) behind pixels (*, 2)."""
    K = _check("K", K, (3, 3))
    T = check_pose(T_ref_source)
    uv = _check("uv_px", uv_px, (2,))
    depth = np.asarray(depth_mm, dtype=np.float64)
    rays = pixel_rays(K, uv)  # z = 1
    points_source = rays * depth[..., None]
    return points_source @ T[:3, :3].T + T[:3, 3]


def pixel_rays(K: np.ndarray, uv_px: np.ndarray) -> np.ndarray:
    """Directions (*, 3) in the source frame through pixels (*, 2), scaled to z = 1."""
    homogeneous = np.concatenate([uv_px, np.ones((*uv_px.shape[:-1], 1))], axis=-1)
    return homogeneous @ np.linalg.inv(K).T


def crop_resize_intrinsics(
    K: np.ndarray, x0_px: float = 0.0, y0_px: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    """K of the image cropped at column `x0_px`, row `y0_px`, then resized by `scale`.

    With pixel centres at integer coordinates, resizing maps u → (u + 0.5)·scale − 0.5.
    """
    if scale <= 0:
        raise GeometryError(f"scale must be positive, got {scale}")
    K = _check("K", K, (3, 3)).copy()
    K[0, 2] -= x0_px
    K[1, 2] -= y0_px
    S = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    return S @ K


def principal_ray(T_ref_source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The source position (3,) and the unit viewing direction (3,) (source z) in the reference."""
    T = check_pose(T_ref_source)
    return T[:3, 3].copy(), T[:3, 2].copy()


def isocentre(origins_mm: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares point (3,) closest to N ≥ 2 lines: origins (N, 3), directions (N, 3)."""
    origins = _check("origins_mm", origins_mm, (3,)).reshape(-1, 3)
    d = _check("directions", directions, (3,)).reshape(-1, 3)
    if len(origins) != len(d) or len(d) < 2:
        raise GeometryError(
            f"need N ≥ 2 lines with matching origins and directions, got {len(origins)}, {len(d)}"
        )
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    # Σ (I - d dᵀ) (x - o) = 0
    projectors = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = projectors.sum(axis=0)
    b = np.einsum("nij,nj->i", projectors, origins)
    if np.linalg.cond(A) > 1e8:
        raise GeometryError("the rays are (nearly) parallel: their isocentre is undetermined")
    return np.linalg.solve(A, b)


def view_angle_deg(T_a: np.ndarray, T_b: np.ndarray, lines: bool = False) -> float:
    """Angle in degrees between the viewing directions of two shots (0–180°); with `lines`,
    between their viewing lines (0–90°: opposite shots, AP and PA, see along the same line
    and add nothing to a triangulation)."""
    _, da = principal_ray(T_a)
    _, db = principal_ray(T_b)
    cosine = abs(da @ db) if lines else da @ db
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def look_at(source_mm: np.ndarray, target_mm: np.ndarray, up: np.ndarray) -> np.ndarray:
    """T_ref_source (4, 4) of a source at `source_mm` looking at `target_mm`.

    The image's y axis (down) points as close as possible to −`up`, so `up` appears up.
    """
    source = _check("source_mm", source_mm, (3,))
    z = _check("target_mm", target_mm, (3,)) - source
    if np.linalg.norm(z) == 0:
        raise GeometryError("source and target coincide")
    z = z / np.linalg.norm(z)
    y = -_check("up", up, (3,))
    y = y - (y @ z) * z
    if np.linalg.norm(y) < 1e-9:
        raise GeometryError("`up` is parallel to the viewing direction")
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, source
    return T


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation (3, 3) by `angle_rad` about `axis` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * skew + (1 - np.cos(angle_rad)) * skew @ skew


def isocentre_of_poses(T_ref_source: np.ndarray) -> np.ndarray:
    """Point (3,) closest to the principal rays of sources (N, 4, 4): where the C-arm aimed.
    Parallel rays (no triangulation): 600 mm ahead of the mean source, a typical source-to-
    isocentre distance."""
    rays = [principal_ray(T) for T in T_ref_source]
    origins, directions = (np.stack(x) for x in zip(*rays, strict=True))
    try:
        return isocentre(origins, directions)
    except GeometryError:
        return origins.mean(0) + 600.0 * directions.mean(0)
