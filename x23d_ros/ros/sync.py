"""Pair each C-arm image with its camera info and pose by stamp (message_filters is not on
PyPI; this is the small approximate-time matcher the listener needs).

An image waits until a camera info and a pose (when poses come from a topic) with stamps within
`tolerance_s` of its own have arrived, and, for one older than the image, until its stream has
passed the image's stamp (so that the image's own, nearer one cannot still come: at 30 Hz the
previous frame's pose is within a 50 ms tolerance too); it then leaves as a `Match` with the
nearest of each.
An image still unmatched when the newest stamp seen on any stream is `wait_s` past it expires
with the reason (`missing_camera_info`; `stale_pose` when poses came but none within the
tolerance; `missing_pose` when none came), so a missing or lagging stream is reported instead
of silently stalling. Camera infos and poses are kept (a pose stream may serve many
images) as long as a waiting image, or one at most `wait_s` older than the newest stamp, may
still need them (at least the newest of each; at most `history` of each). Waiting images are
bounded too: beyond `max_pending`, the oldest leaves as `sync_overflow` (a stream whose stamps
never advance would otherwise hold every image of a 30 Hz stream).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Match:
    stamp: float
    image: Any
    info: Any
    pose: Any  # None when poses do not come from a topic
    pose_stamp: float | None


@dataclass
class Expired:
    stamp: float
    image: Any
    reason: str  # missing_camera_info | stale_pose | missing_pose | sync_overflow
    detail: str = ""


#: Samples kept per stream at most (a 300 Hz tracker over a 2 s wait needs 600).
HISTORY = 1000
#: Images waiting for their camera info or pose at most (30 Hz over a 2 s wait: 60).
MAX_PENDING = 64


def _stamp_of(sample: tuple[float, Any]) -> float:
    return sample[0]


def nearest_sample(
    samples: Sequence[tuple[float, Any]], stamp: float, tolerance_s: float, final: bool
) -> tuple[tuple[float, Any] | None, str]:
    """The sample (stamp, value) of `samples` (sorted by stamp) nearest `stamp`, and a verdict
    on it: "match"
    (within `tolerance_s`, and the image's own), "none" (none is within the tolerance, and
    none nearer can come: the stream has passed `stamp`) or "wait" (the answer may change as
    samples come). Unless `final`, a sample older than `stamp` is the image's only once the
    stream has a sample at or after `stamp`: until then the image's own, nearer one may still
    be on its way (at 30 Hz the previous frame's sample lies within the tolerance too). The
    sample is None when there are none."""
    if not samples:
        return None, "wait"
    i = bisect.bisect_left(samples, stamp, key=_stamp_of)
    near = [samples[k] for k in (i - 1, i) if 0 <= k < len(samples)]
    best = min(near, key=lambda item: abs(item[0] - stamp))
    passed = samples[-1][0] >= stamp
    if abs(best[0] - stamp) > tolerance_s:
        return best, "none" if passed else "wait"
    if not final and best[0] < stamp and not passed:
        return best, "wait"
    return best, "match"


class StampMatcher:
    def __init__(
        self,
        tolerance_s: float,
        need_pose: bool,
        wait_s: float = 2.0,
        history: int = HISTORY,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if tolerance_s < 0 or wait_s <= 0:
            raise ValueError(f"tolerance_s ≥ 0 and wait_s > 0 needed: {tolerance_s}, {wait_s}")
        if history < 1 or max_pending < 1:
            raise ValueError(f"history and max_pending must be ≥ 1: {history}, {max_pending}")
        self.tolerance_s, self.need_pose, self.wait_s = tolerance_s, need_pose, wait_s
        self.history, self.max_pending = history, max_pending
        self.images: list[tuple[float, Any]] = []
        self.infos: list[tuple[float, Any]] = []  # sorted by stamp
        self.poses: list[tuple[float, Any]] = []  # sorted by stamp
        self.newest = float("-inf")

    def add_image(self, stamp: float, image: Any) -> tuple[list[Match], list[Expired]]:
        self.images.append((stamp, image))
        overflow = []
        if len(self.images) > self.max_pending:
            oldest = min(range(len(self.images)), key=lambda k: self.images[k][0])
            old_stamp, old_image = self.images.pop(oldest)
            overflow.append(
                Expired(
                    old_stamp,
                    old_image,
                    "sync_overflow",
                    f"more than {self.max_pending} images waiting for their camera info or "
                    "pose: the oldest is dropped",
                )
            )
        matches, expired = self._update(stamp)
        return matches, overflow + expired

    def add_info(self, stamp: float, info: Any) -> tuple[list[Match], list[Expired]]:
        bisect.insort(self.infos, (stamp, info), key=_stamp_of)
        return self._update(stamp)

    def add_pose(self, stamp: float, pose: Any) -> tuple[list[Match], list[Expired]]:
        bisect.insort(self.poses, (stamp, pose), key=_stamp_of)
        return self._update(stamp)

    def pending(self) -> int:
        return len(self.images)

    def drop_images(self) -> int:
        """Forget the images still waiting (a reset: they belong to the old session); how
        many there were. Infos and poses stay (they describe the C-arm, not the patient)."""
        n = len(self.images)
        self.images = []
        return n

    def _nearest(self, buffer: list, stamp: float, final: bool) -> tuple[float, Any] | None:
        """The item nearest `stamp` once `nearest_sample` says it is the image's."""
        best, verdict = nearest_sample(buffer, stamp, self.tolerance_s, final)
        return best if verdict == "match" else None

    def _expire(self, stamp: float, image: Any, no_info: bool) -> Expired:
        if no_info:
            return Expired(stamp, image, "missing_camera_info", "no camera info within tolerance")
        if not self.poses:
            return Expired(stamp, image, "missing_pose", "no pose has arrived")
        nearest = min(self.poses, key=lambda item: abs(item[0] - stamp))[0]
        return Expired(
            stamp,
            image,
            "stale_pose",
            f"nearest pose {nearest - stamp:+.3f} s from the image; tolerance {self.tolerance_s} s",
        )

    def _update(self, stamp: float) -> tuple[list[Match], list[Expired]]:
        self.newest = max(self.newest, stamp)
        matches, expired, waiting = [], [], []
        for image_stamp, image in self.images:
            final = self.newest - image_stamp > self.wait_s  # take the best there is
            info = self._nearest(self.infos, image_stamp, final)
            pose = self._nearest(self.poses, image_stamp, final) if self.need_pose else None
            if info is not None and (pose is not None or not self.need_pose):
                matches.append(
                    Match(
                        image_stamp,
                        image,
                        info[1],
                        None if pose is None else pose[1],
                        None if pose is None else pose[0],
                    )
                )
            elif final:
                expired.append(self._expire(image_stamp, image, info is None))
            else:
                waiting.append((image_stamp, image))
        self.images = waiting
        self._forget()
        return matches, expired

    def _forget(self) -> None:
        """Drop the infos and poses no image can need any more: older (by more than the
        tolerance) than every waiting image and than the newest stamp less the wait (an image
        that late leaves at once); the newest of each stays, and at most `history`."""
        horizon = min([s for s, _ in self.images], default=self.newest)
        horizon = min(horizon, self.newest - self.wait_s) - self.tolerance_s
        for buffer in (self.infos, self.poses):
            cut = bisect.bisect_left(buffer, horizon, key=_stamp_of)
            del buffer[: min(max(cut, len(buffer) - self.history), len(buffer) - 1)]
