"""A session of accepted shots, persisted as they arrive, and the checks a new shot must pass.

Every accepted shot is written at once to the session's folder, so a crash or a restart loses
nothing and a session can be audited and replayed:

    <root>/<session id>/shot_000.npz    image (H, W), K (3, 3), T_ref_source (4, 4) mm, stamp s
    <root>/<session id>/session.json    id, domain, patient_id, created, updated, shots,
                                        reconstructions run

A shot file is written under a temporary name and renamed, so a half-written shot never
appears. `ShotSession.resume(root, max_age_s, patient_id)` reopens the newest session only
while it is recent and the same patient's (a restart the next morning must not reconstruct
yesterday's patient); a session folder that cannot be read is set aside (renamed
`<id>.set-aside`, with the reason in `SET_ASIDE.txt`), never deleted. `reset` starts a new
session and leaves the old one on disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from x23d_ros import geometry
from x23d_ros.pipeline import MAX_SHOTS, Shot, ShotSet, values_problem

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
    "distortion": "the camera info's distortion cannot be undone",
    "domain_values": "the image's values do not fit the declared domain",
    "domain_mismatch": "the image is of another domain than the session's shots",
    "stamp": "the stamp is negative, or ahead of this computer's clock",
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
    domain: str | None = None,
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
    problem = values_problem(image, domain) if domain else None
    if problem:
        raise ShotRejectedError("domain_values", problem)
    if shot.stamp is not None and shot.stamp < 0:
        raise ShotRejectedError("stamp", f"{shot.stamp} s")
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
    for i, other in enumerate(collected):
        angle = geometry.view_angle_deg(T, np.asarray(other.T_ref_source, float), lines=True)
        if angle < checks.min_view_separation_deg:
            raise ShotRejectedError(
                "duplicate_view",
                f"{angle:.1f}° from shot {i}; at least {checks.min_view_separation_deg}° needed",
            )


class SessionError(ValueError):
    """A session folder that cannot be read back; the message says what is wrong."""


def read_meta(folder: Path) -> dict:
    """A session folder's session.json, checked; SessionError when it cannot be read."""
    meta_path = Path(folder) / "session.json"
    try:
        return _checked_meta(json.loads(meta_path.read_text()))
    except (ValueError, OSError) as error:
        raise SessionError(f"{meta_path}: {error}") from error


class ShotSession:
    """The shots of one reconstruction, persisted in `folder` as they are added."""

    def __init__(self, folder: Path, domain: str = "synthetic", patient_id: str = "") -> None:
        """Open (or create) the session in `folder`; SessionError if what is there cannot be
        read (a damaged session.json or shot file)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._meta_lock = threading.Lock()  # the listener and the publisher write session.json
        meta_path = self.folder / "session.json"
        if meta_path.exists():
            self.meta = read_meta(self.folder)
        else:
            now = time.time()
            self.meta = {
                "id": self.folder.name,
                "domain": domain,
                "patient_id": patient_id,
                "created": now,
                "updated": now,
                "reconstructions": 0,
            }
        self.shots: list[Shot] = []
        for path in sorted(self.folder.glob("shot_*.npz")):
            if path.name.endswith(".tmp.npz"):
                continue  # a write that a crash cut short: never renamed, never accepted
            try:
                self.shots.append(self._read(path))
            except Exception as error:  # numpy raises many kinds on a damaged archive
                raise SessionError(f"{path}: {error!r}") from error
        self._write_meta(touch=False)

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @classmethod
    def new(cls, root: Path, domain: str = "synthetic", patient_id: str = "") -> ShotSession:
        """A new, empty session in a fresh folder under `root`."""
        root = Path(root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while any(root.glob(f"{stamp}-{n:02d}*")):  # set-aside folders keep their ids too
            n += 1
        return cls(root / f"{stamp}-{n:02d}", domain, patient_id)

    @classmethod
    def resume(
        cls,
        root: Path,
        domain: str = "synthetic",
        max_age_s: float = float("inf"),
        patient_id: str = "",
        now: float | None = None,
    ) -> tuple[ShotSession, str]:
        """The newest session under `root` with its shots if it may be continued, else a new
        one; with the reason a new one was started ("" when resumed).

        A session is continued only if its last shot or reconstruction is at most `max_age_s`
        old and, when `patient_id` is given, it is that patient's. A newest folder that cannot
        be read is set aside (renamed, with the reason in SET_ASIDE.txt) and a new session
        started.
        """
        now = time.time() if now is None else now
        folders = sorted(
            p
            for p in Path(root).glob("*")
            if ".set-aside" not in p.name and (p / "session.json").exists()
        )
        if not folders:
            return cls.new(root, domain, patient_id), "no earlier session"
        newest = folders[-1]

        def unreadable(error: SessionError) -> tuple[ShotSession, str]:
            aside = set_aside(newest, str(error))
            why = f"session {newest.name} cannot be read ({error}); set aside as {aside.name}"
            return cls.new(root, domain, patient_id), why

        # Decide from session.json alone; only a session that will be continued has its shots
        # read (a large old folder costs nothing at start).
        try:
            meta = read_meta(newest)
        except SessionError as error:
            return unreadable(error)
        name = meta.get("id", newest.name)
        age = now - float(meta.get("updated", meta.get("created", 0.0)))
        if age > max_age_s:
            why = f"session {name} is {age:.0f} s old (resume_max_age_s {max_age_s:g})"
            return cls.new(root, domain, patient_id), why
        if patient_id and meta.get("patient_id", "") != patient_id:
            why = (
                f"session {name} is patient {meta.get('patient_id') or '(none)'!r}"
                f", not {patient_id!r}"
            )
            return cls.new(root, domain, patient_id), why
        if domain != "auto" and meta.get("domain", domain) not in (domain, "auto"):
            why = f"session {name} holds {meta.get('domain')} shots, not {domain}"
            return cls.new(root, domain, patient_id), why
        try:
            return cls(newest), ""
        except SessionError as error:
            return unreadable(error)

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

    def set_domain(self, domain: str) -> None:
        """Fix the domain of a session opened with "auto", as its first shot is added; a
        session's shots are all of one domain (ShotRejectedError `domain_mismatch` otherwise,
        ValueError for a domain that is neither)."""
        if domain not in ("synthetic", "realistic"):
            raise ValueError(f"domain must be synthetic or realistic, not {domain!r}")
        held = self.meta["domain"]
        if self.shots and held != domain:
            raise ShotRejectedError(
                "domain_mismatch",
                f"a {domain}-domain image after {len(self.shots)} {held}-domain shots; reset "
                "to start a session of the other domain",
            )
        if self.meta["domain"] != domain:
            self.meta["domain"] = domain
            self._write_meta(touch=False)

    def record_confirmation(self, reconstruction: str, shift: int, names: list[str]) -> None:
        """Keep the operator's count of the spine `reconstruction` (`/x23d/confirm_levels`:
        its identity, the shift, and the names the networks gave the levels it moved), so
        that the same spine published again, named the same (a restart), is published as
        counted."""
        kept = {"reconstruction": str(reconstruction), "shift": int(shift), "names": list(names)}
        with self._meta_lock:  # a new key: never while the listener's write iterates the dict
            self.meta["level_confirmation"] = kept
        self._write_meta(touch=False)

    def level_confirmation(self) -> tuple[str, int, list[str]] | None:
        """The count kept by `record_confirmation` (identity, shift, names), or None (none
        kept, or not readable: a session written by hand or by an older version)."""
        value = self.meta.get("level_confirmation")
        try:
            names = value["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return None
            return str(value["reconstruction"]), int(value["shift"]), list(names)
        except (TypeError, KeyError, ValueError):
            return None

    def record_reconstruction(self) -> None:
        self.meta["reconstructions"] += 1
        self._write_meta()

    def shot_set(self) -> ShotSet:
        return ShotSet(list(self.shots), self.meta["domain"], session=self.id)

    def __len__(self) -> int:
        return len(self.shots)

    @staticmethod
    def _read(path: Path) -> Shot:
        with np.load(path) as z:
            stamp = float(z["stamp"])
            return Shot(z["image"], z["K"], z["T_ref_source"], None if np.isnan(stamp) else stamp)

    def _write_meta(self, touch: bool = True) -> None:
        with self._meta_lock:
            self.meta["shots"] = len(self.shots)
            if touch:
                self.meta["updated"] = time.time()
            tmp = self.folder / "session.json.tmp"
            tmp.write_text(json.dumps(self.meta, indent=1))
            os.replace(tmp, self.folder / "session.json")


def _checked_meta(meta) -> dict:
    """session.json's content, or ValueError naming what is missing or of the wrong type
    (written by hand, cut short, or by another program)."""
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    kinds = {"id": str, "domain": str, "created": (int, float), "reconstructions": int}
    kinds |= {"updated": (int, float), "patient_id": str}  # absent in older sessions
    for key, kind in kinds.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{key!r} is {meta[key]!r}")
        if key not in meta and key not in ("updated", "patient_id"):
            raise ValueError(f"no {key!r}")
    # "auto": a session of `domain: auto` whose first shot has not come yet.
    if meta["domain"] not in ("synthetic", "realistic", "auto"):
        raise ValueError(f"domain {meta['domain']!r}")
    return meta


def set_aside(folder: Path, reason: str) -> Path:
    """Rename a session folder that cannot be used to `<name>.set-aside` (numbered if taken),
    with `reason` in its SET_ASIDE.txt; nothing in it is deleted. Returns the new path."""
    folder = Path(folder)
    target = folder.with_name(folder.name + ".set-aside")
    n = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}.set-aside-{n}")
        n += 1
    os.replace(folder, target)
    (target / "SET_ASIDE.txt").write_text(reason + "\n")
    return target
