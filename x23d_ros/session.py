"""A session of accepted shots, persisted as they arrive, and the checks a new shot must pass.

Every accepted shot is written at once to the session's folder, so a crash or a restart loses
nothing and a session can be audited and replayed:

    <root>/<session id>/shot_000.npz    image (H, W), K (3, 3), T_ref_source (4, 4) mm, stamp s
    <root>/<session id>/session.json    id, domain, created, shots, reconstructions run

A shot file is written under a temporary name and renamed, so a half-written shot never
appears. `ShotSession.resume(root)` reopens the newest session; `reset` starts a new one and
leaves the old one on disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from x23d_ros import geometry
from x23d_ros.pipeline import MAX_SHOTS, Shot, ShotSet

log = logging.getLogger(__name__)

# Why a shot was refused; the keys are what diagnostics count.
REASONS = {
    "image_shape": "the image is not a non-empty 2D array",
    "image_values": "the image holds NaN or infinite values",
    "size_mismatch": "the image size differs from the camera info's",
    "intrinsics": "K is not finite, or its focal lengths or principal point are implausible",
    "pose_values": "the pose holds NaN or infinite values",
    "rotation": "the pose's rotation is not orthonormal with determinant +1",
    "stale_pose": "the pose is older than the image by more than allowed",
    "duplicate_view": "the viewing direction is too close to a shot already collected",
    "too_many": "the session already holds the most shots a reconstruction takes",
}


class ShotRejectedError(ValueError):
    """A shot failed a check; `reason` is a key of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{REASONS[reason]}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ShotChecks:
    """Limits for accepting a shot (the listener's parameters)."""

    min_view_separation_deg: float = 5.0
    max_pose_age_s: float = 1.0
    max_shots: int = MAX_SHOTS


def check_shot(
    shot: Shot,
    collected: list[Shot],
    checks: ShotChecks = ShotChecks(),
    pose_stamp: float | None = None,
    info_size: tuple[int, int] | None = None,
) -> None:
    """Raise ShotRejectedError if `shot` may not join `collected`.

    pose_stamp: when the pose was measured (s), compared with the image's stamp;
    info_size: (height, width) the camera info announces.
    """
    image = np.asarray(shot.image)
    if image.ndim != 2 or image.size == 0:
        raise ShotRejectedError("image_shape", f"shape {image.shape}")
    if not np.isfinite(image).all():
        raise ShotRejectedError("image_values", f"{int((~np.isfinite(image)).sum())} bad pixels")
    if info_size is not None and tuple(info_size) != image.shape:
        raise ShotRejectedError("size_mismatch", f"image {image.shape}, camera info {info_size}")
    K = np.asarray(shot.K, float)
    h, w = image.shape
    if (
        K.shape != (3, 3)
        or not np.isfinite(K).all()
        or K[0, 0] <= 0
        or K[1, 1] <= 0
        or not (-w <= K[0, 2] <= 2 * w and -h <= K[1, 2] <= 2 * h)
    ):
        raise ShotRejectedError("intrinsics", f"K = {K.tolist()}")
    T = np.asarray(shot.T_ref_source, float)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ShotRejectedError("pose_values", f"T_ref_source = {T.tolist()}")
    try:
        geometry.check_pose(T)
    except geometry.GeometryError as error:
        raise ShotRejectedError("rotation", str(error)) from error
    if pose_stamp is not None and shot.stamp is not None:
        age = shot.stamp - pose_stamp
        if abs(age) > checks.max_pose_age_s:
            raise ShotRejectedError(
                "stale_pose", f"pose {age:.3f} s from the image; limit {checks.max_pose_age_s} s"
            )
    if len(collected) >= checks.max_shots:
        raise ShotRejectedError("too_many", f"{len(collected)} shots, limit {checks.max_shots}")
    direction = geometry.principal_ray(T)[1]
    for i, other in enumerate(collected):
        other_direction = geometry.principal_ray(np.asarray(other.T_ref_source, float))[1]
        angle = np.degrees(np.arccos(np.clip(abs(direction @ other_direction), 0.0, 1.0)))
        if angle < checks.min_view_separation_deg:
            raise ShotRejectedError(
                "duplicate_view",
                f"{angle:.1f}° from shot {i}; at least {checks.min_view_separation_deg}° needed",
            )


class ShotSession:
    """The shots of one reconstruction, persisted in `folder` as they are added."""

    def __init__(self, folder: Path, domain: str = "synthetic") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "session.json"
        if meta_path.exists():
            self.meta = json.loads(meta_path.read_text())
        else:
            self.meta = {
                "id": self.folder.name,
                "domain": domain,
                "created": time.time(),
                "reconstructions": 0,
            }
        self.shots: list[Shot] = [self._read(p) for p in sorted(self.folder.glob("shot_*.npz"))]
        self._write_meta()

    @classmethod
    def new(cls, root: Path, domain: str = "synthetic") -> ShotSession:
        """A new, empty session in a fresh folder under `root`."""
        root = Path(root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while (root / f"{stamp}-{n:02d}").exists():
            n += 1
        return cls(root / f"{stamp}-{n:02d}", domain)

    @classmethod
    def resume(cls, root: Path, domain: str = "synthetic") -> ShotSession:
        """The newest session under `root` with its shots, or a new one if there is none."""
        folders = sorted(p for p in Path(root).glob("*") if (p / "session.json").exists())
        return cls(folders[-1]) if folders else cls.new(root, domain)

    def add(self, shot: Shot) -> int:
        """Persist `shot` (atomically) and return its index."""
        index = len(self.shots)
        path = self.folder / f"shot_{index:03d}.npz"
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(
            tmp,
            image=np.asarray(shot.image),
            K=np.asarray(shot.K, float),
            T_ref_source=np.asarray(shot.T_ref_source, float),
            stamp=np.nan if shot.stamp is None else float(shot.stamp),
        )
        os.replace(tmp, path)
        self.shots.append(shot)
        self._write_meta()
        return index

    def record_reconstruction(self) -> None:
        self.meta["reconstructions"] += 1
        self._write_meta()

    def shot_set(self) -> ShotSet:
        return ShotSet(list(self.shots), self.meta["domain"])

    def __len__(self) -> int:
        return len(self.shots)

    @staticmethod
    def _read(path: Path) -> Shot:
        with np.load(path) as z:
            stamp = float(z["stamp"])
            return Shot(z["image"], z["K"], z["T_ref_source"], None if np.isnan(stamp) else stamp)

    def _write_meta(self) -> None:
        self.meta["shots"] = len(self.shots)
        tmp = self.folder / "session.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1))
        os.replace(tmp, self.folder / "session.json")
