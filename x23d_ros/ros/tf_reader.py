"""Read poses from TF without tf2_ros: for `pose_source: tf` where tf2_ros is not installed.

tf2_ros is on every full ROS 2 install but not on PyPI; the listener uses it when it is
importable. Otherwise this reads `/tf` and `/tf_static` (tf2_msgs/TFMessage, the same QoS as
tf2's listener) into a small buffer and answers the one question the listener asks: where was
frame `source` in frame `target` at time `stamp`. It follows parent links through the tree
(both up from `source` and up from `target` to their common ancestor). A dynamic link is taken
from the sample nearest to `stamp`, within `tolerance_s`, once a sample at or after `stamp`
has come (or when the caller says it waits no longer); unlike tf2 it does not interpolate,
which suits C-arm poses (one per shot, stamped with the shot).

What a dynamic link keeps is bounded as the stamp matcher's camera infos and poses are
(`sync.KeptSamples`): by the wall clock (`keep_s` after a sample arrived; the last to arrive stays
however old) and by count (`HISTORY`), not by stamp, so that stamps that jump back (a bag or a
tracker that restarts) cannot leave newer-stamped old samples in the way for long: they leave
within `keep_s` whatever their stamps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from scipy.spatial.transform import Rotation
from tf2_msgs.msg import TFMessage

from x23d_ros.ros.spine_publisher import TF_STATIC_QOS
from x23d_ros.ros.sync import KEEP_MARGIN_S, KeptSamples, nearest_sample

TF_QOS = QoSProfile(depth=100)  # tf2_ros.TransformListener's default for /tf
#: Samples kept per dynamic link at most: 10 s of a 1 kHz tracker (the listener keeps
#: samples 5.6 s with its defaults; a sample is about 0.3 kB).
HISTORY = 10_000


def matrix_mm(t: TransformStamped) -> np.ndarray:
    """The (4, 4) transform child → parent, translation in mm."""
    q = t.transform.rotation
    quat = np.array([q.x, q.y, q.z, q.w], float)
    v = t.transform.translation
    xyz = np.array([v.x, v.y, v.z], float)
    if not (np.isfinite(quat).all() and np.isfinite(xyz).all()) or np.linalg.norm(quat) < 0.5:
        raise ValueError(f"{t.header.frame_id} → {t.child_frame_id}: not a rigid transform")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat / np.linalg.norm(quat)).as_matrix()
    T[:3, 3] = xyz * 1000.0
    return T


class TfNotYetError(LookupError):
    """TF cannot answer yet: a link, or the image's own sample, has not arrived."""


class TfTree:
    """Transforms by child frame: a parent each, a fixed transform (static) or timed samples."""

    def __init__(
        self,
        tolerance_s: float,
        keep_s: float | None = None,
        history: int = HISTORY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`keep_s`: how long (wall clock) a dynamic sample is kept after it arrived; by
        default two 2 s waits, the tolerance and `sync.KEEP_MARGIN_S` (the listener passes
        what its own waits add up to: the stamp matcher's keep_s, then `sync_wait_s` for the
        transform, and the tolerance)."""
        if history < 1:
            raise ValueError(f"history must be ≥ 1, not {history}")
        self.tolerance_s = tolerance_s
        self.keep_s = 4.0 + tolerance_s + KEEP_MARGIN_S if keep_s is None else keep_s
        self.history, self.clock = history, clock
        self.parent: dict[str, str] = {}
        self.static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, KeptSamples] = {}

    def samples(self, child: str) -> list[tuple[float, np.ndarray]]:
        """The samples kept of `child`'s dynamic link, (stamp, T_parent_child) by stamp (those
        past `keep_s` leave first; a link that stopped updating keeps its last sample only)."""
        kept = self._dynamic.get(child)
        if kept is None:
            return []
        kept.forget(self.clock() - self.keep_s, self.history)
        return kept.sorted

    def add(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None) -> None:
        """A link; `stamp` None for a static one."""
        self.parent[child] = parent
        if stamp is None:
            self.static[child] = T_parent_child
            return
        now = self.clock()
        kept = self._dynamic.setdefault(child, KeptSamples())
        kept.add(stamp, T_parent_child, now)
        kept.forget(now - self.keep_s, self.history)

    def _link(self, child: str, stamp: float, final: bool) -> np.ndarray:
        """child → parent at `stamp`, by the stamp matcher's rule (`sync.nearest_sample`):
        TfNotYetError while the answer may change (unless `final`, a sample older than `stamp`
        counts only once the link has one at or after it), LookupError when no sample is
        within the tolerance and none nearer can come."""
        if child in self.static:
            return self.static[child]
        best, verdict = nearest_sample(self.samples(child), stamp, self.tolerance_s, final)
        if best is None:
            raise TfNotYetError(f"no transform for frame {child!r}")
        link = f"{self.parent[child]} → {child}"
        if abs(best[0] - stamp) > self.tolerance_s:
            error = TfNotYetError if verdict == "wait" else LookupError
            raise error(
                f"{link}: nearest sample {best[0] - stamp:+.3f} s from the image "
                f"(tolerance {self.tolerance_s} s)"
            )
        if verdict == "wait":
            raise TfNotYetError(f"{link}: no sample at or after the image yet")
        return best[1]

    def _up(self, frame: str) -> list[str]:
        """`frame`, its parent, its parent's parent, … up to the root."""
        chain = [frame]
        while chain[-1] in self.parent and len(chain) <= len(self.parent):
            chain.append(self.parent[chain[-1]])
        return chain

    def _to_ancestor(
        self, chain: list[str], ancestor: str, stamp: float, final: bool
    ) -> np.ndarray:
        """T_ancestor_frame for `chain` = frame … ancestor."""
        T = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            T = self._link(child, stamp, final) @ T
        return T

    def lookup(self, target: str, source: str, stamp: float, final: bool = True) -> np.ndarray:
        """T_target_source (4, 4, mm) at `stamp`; LookupError when TF cannot answer, TfNotYetError
        (a LookupError) when it may once more transforms have come (see `_link`)."""
        up_source, up_target = self._up(source), self._up(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise TfNotYetError(f"{target!r} and {source!r} are not connected in TF")
        T_common_source = self._to_ancestor(up_source, common, stamp, final)
        T_common_target = self._to_ancestor(up_target, common, stamp, final)
        return np.linalg.inv(T_common_target) @ T_common_source


class TfReader(TfTree):
    """A TfTree fed by /tf and /tf_static."""

    def __init__(self, node: Node, tolerance_s: float, keep_s: float | None = None) -> None:
        super().__init__(tolerance_s, keep_s)
        self.bad = 0
        node.create_subscription(TFMessage, "/tf", self._on_tf, TF_QOS)
        node.create_subscription(TFMessage, "/tf_static", self._on_static, TF_STATIC_QOS)

    def _add_message(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            try:
                T = matrix_mm(t)
            except ValueError:
                self.bad += 1
                continue
            stamp = None if static else t.header.stamp.sec + 1e-9 * t.header.stamp.nanosec
            self.add(t.header.frame_id, t.child_frame_id, T, stamp)

    def _on_tf(self, msg: TFMessage) -> None:
        self._add_message(msg, static=False)

    def _on_static(self, msg: TFMessage) -> None:
        self._add_message(msg, static=True)
