"""Pair each C-arm image with its camera info and pose by stamp (message_filters is not on
PyPI; this is the small approximate-time matcher the listener needs).

An image waits until a camera info and a pose (when poses come from a topic) with stamps within
`tolerance_s` of its own have arrived, and, for one older than the image, until its stream has
passed the image's stamp (so that the image's own, nearer one cannot still come: at 30 Hz the
previous frame's pose is within a 50 ms tolerance too); it then leaves as a `Match` with the
nearest of each (of equally near ones, the older stamp; of equal stamps, the first to arrive).
An image still unmatched when the newest stamp seen is `wait_s` past it, or once it has waited
`keep_s` on the wall clock, expires with the reason (`missing_camera_info`; `stale_pose` when
poses came but none within the tolerance; `missing_pose` when none came), so a missing or
lagging stream is reported instead of silently stalling.

What is kept is bounded by the wall clock, not by the stamps, so that stamps that jump (a
driver or a bag that restarts, a clock stepped back) cannot wedge the matcher: a camera info or
pose is kept for `keep_s` (`wait_s` + `tolerance_s` + 1 s) after it arrived (a pose stream may
serve many images; an image up to that late still finds its own), the last to arrive of each
however old, and at most `history` of each; the newest stamp is the newest of what is kept.
After stamps jump back, the old samples leave within `keep_s`; until then an image takes the
nearest sample within the tolerance at once, or is refused. Waiting images are bounded too:
beyond `max_pending` (by default what `wait_s` holds at 30 Hz, and 8 more), the oldest leaves
as `sync_overflow` (a stream whose stamps never advance would otherwise hold every frame).
Every arrival re-examines the waiting images; `poll` does it without one, so that the last
frames of a stream that stops (a C-arm's last shot, with nothing after it) leave once their
wall-clock wait is over instead of waiting for the next message.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Samples kept per stream at most (a 300 Hz tracker over a 2 s wait needs 600).
HISTORY = 1000
#: The image rate `max_pending` is sized for by default: fluoroscopy runs at up to 30 frames
#: a second.
IMAGE_RATE_HZ = 30.0
#: How much longer than the wait a camera info or pose is kept (s).
KEEP_MARGIN_S = 1.0


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


def _stamp_of(sample: tuple[float, Any]) -> float:
    return sample[0]


def nearest_sample(
    samples: Sequence[tuple[float, Any]], stamp: float, tolerance_s: float, final: bool
) -> tuple[tuple[float, Any] | None, str]:
    """The sample (stamp, value) of `samples` (sorted by stamp, equal stamps in the order they
    came) nearest `stamp`, and a verdict on it: "match" (within `tolerance_s`, and the
    image's own), "none" (none is within the tolerance, and none nearer can come: the stream
    has passed `stamp`) or "wait" (the answer may change as samples come). Unless `final`, a
    sample older than `stamp` is the image's only once the stream has a sample at or after
    `stamp`: until then the image's own, nearer one may still be on its way (at 30 Hz the
    previous frame's sample lies within the tolerance too). Of two equally near stamps the
    older serves; of equal stamps the first that came. The sample is None when there are
    none."""
    if not samples:
        return None, "wait"
    i = bisect.bisect_left(samples, stamp, key=_stamp_of)
    near = [samples[k][0] for k in (i - 1, i) if 0 <= k < len(samples)]
    nearest = min(near, key=lambda s: abs(s - stamp))
    best = samples[bisect.bisect_left(samples, nearest, key=_stamp_of)]
    passed = samples[-1][0] >= stamp
    if abs(best[0] - stamp) > tolerance_s:
        return best, "none" if passed else "wait"
    if not final and best[0] < stamp and not passed:
        return best, "wait"
    return best, "match"


class KeptSamples:
    """One stream's samples: sorted by stamp for the look-up, in arrival order for keeping."""

    def __init__(self) -> None:
        self.sorted: list[tuple[float, Any]] = []
        self.arrivals: deque[tuple[float, tuple[float, Any]]] = deque()

    def add(self, stamp: float, value: Any, now: float) -> None:
        item = (stamp, value)
        bisect.insort_right(self.sorted, item, key=_stamp_of)
        self.arrivals.append((now, item))

    def forget(self, before: float, history: int) -> None:
        """Drop what arrived before `before` (wall clock) and beyond `history`, oldest
        arrival first; the last to arrive stays."""
        while len(self.arrivals) > 1 and (
            self.arrivals[0][0] < before or len(self.arrivals) > history
        ):
            _, item = self.arrivals.popleft()
            k = bisect.bisect_left(self.sorted, item[0], key=_stamp_of)
            while self.sorted[k] is not item:
                k += 1
            del self.sorted[k]

    def newest(self) -> float:
        return self.sorted[-1][0] if self.sorted else -math.inf


class StampMatcher:
    def __init__(
        self,
        tolerance_s: float,
        need_pose: bool,
        wait_s: float = 2.0,
        history: int = HISTORY,
        max_pending: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tolerance_s < 0 or wait_s <= 0:
            raise ValueError(f"tolerance_s ≥ 0 and wait_s > 0 needed: {tolerance_s}, {wait_s}")
        if max_pending is None:
            max_pending = math.ceil((wait_s + tolerance_s) * IMAGE_RATE_HZ) + 8
        if history < 1 or max_pending < 1:
            raise ValueError(f"history and max_pending must be ≥ 1: {history}, {max_pending}")
        self.tolerance_s, self.need_pose, self.wait_s = tolerance_s, need_pose, wait_s
        self.keep_s = wait_s + tolerance_s + KEEP_MARGIN_S
        self.history, self.max_pending, self.clock = history, max_pending, clock
        self._images: list[tuple[float, Any, float]] = []  # (stamp, image, arrival)
        self._infos, self._poses = KeptSamples(), KeptSamples()

    @property
    def infos(self) -> list[tuple[float, Any]]:
        return self._infos.sorted

    @property
    def poses(self) -> list[tuple[float, Any]]:
        return self._poses.sorted

    @property
    def newest(self) -> float:
        """The newest stamp of the images waiting and the samples kept."""
        images = max((s for s, _, _ in self._images), default=-math.inf)
        return max(images, self._infos.newest(), self._poses.newest())

    def add_image(self, stamp: float, image: Any) -> tuple[list[Match], list[Expired]]:
        self._images.append((stamp, image, self.clock()))
        matches, expired = self._update()
        while len(self._images) > self.max_pending:
            oldest = min(range(len(self._images)), key=lambda k: self._images[k][0])
            old_stamp, old_image, _ = self._images.pop(oldest)
            expired.append(
                Expired(
                    old_stamp,
                    old_image,
                    "sync_overflow",
                    f"more than {self.max_pending} images waiting for their camera info or "
                    "pose: the oldest is dropped",
                )
            )
        return matches, expired

    def add_info(self, stamp: float, info: Any) -> tuple[list[Match], list[Expired]]:
        self._infos.add(stamp, info, self.clock())
        return self._update()

    def add_pose(self, stamp: float, pose: Any) -> tuple[list[Match], list[Expired]]:
        self._poses.add(stamp, pose, self.clock())
        return self._update()

    def poll(self) -> tuple[list[Match], list[Expired]]:
        """What leaves now with no new arrival: images that have waited `keep_s` on the wall
        clock (their streams stopped) are matched with the nearest info and pose within the
        tolerance, or expire. The listener calls this on a timer."""
        return self._update()

    def pending(self) -> int:
        return len(self._images)

    def drop_images(self) -> int:
        """Forget the images still waiting (a reset: they belong to the old session); how
        many there were. Infos and poses stay (they describe the C-arm, not the patient)."""
        n = len(self._images)
        self._images = []
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
            f"nearest pose kept {nearest - stamp:+.3f} s from the image; tolerance "
            f"{self.tolerance_s} s",
        )

    def _update(self) -> tuple[list[Match], list[Expired]]:
        now = self.clock()
        for kept in (self._infos, self._poses):
            kept.forget(now - self.keep_s, self.history)
        newest = self.newest
        matches, expired, waiting = [], [], []
        for image_stamp, image, arrival in self._images:
            # Take the best there is once the streams have passed the wait, or the wall clock.
            final = newest - image_stamp > self.wait_s or now - arrival > self.keep_s
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
                waiting.append((image_stamp, image, arrival))
        self._images = waiting
        return matches, expired
