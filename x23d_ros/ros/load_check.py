"""Load: a fluoroscopy-rate image stream into the reconstruction process.

A C-arm in fluoroscopy mode sends 15–30 frames a second, each with its camera info and pose,
while the arm turns. `stream` starts `bringup` on an isolated domain, sends `rate_hz` posed
frames of `size`² 32FC1 for `seconds` while the view turns by `deg_per_s`, and measures what
a medical-device team asks of it: every frame received (`lost_frames` = sent − received), no
accepted shot lost (`lost` = the shots the listener's own rules accept from the frames sent,
minus those in the session folder: must be 0), drops by reason, and the process's memory
(RSS) and CPU. The suite runs a short stream; bench/load.py the long one.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from x23d_ros import geometry
from x23d_ros.pipeline import MAX_SHOTS
from x23d_ros.ros.processes import start_bringup, stop
from x23d_ros.ros.transport_check import isolated_ros_env

#: How often the process's RSS joins `LoadResult.rss_series` (s).
RSS_EVERY_S = 10.0


@dataclass
class LoadResult:
    seconds: float
    rate_hz: float
    size: int
    frames_sent: int
    images_received: int
    lost_frames: int
    expected_shots: int
    accepted_shots: int
    lost: int
    rejected: dict[str, int] = field(default_factory=dict)
    reconstructions: int = 0
    rss_mb_start: float = 0.0
    rss_mb_end: float = 0.0
    rss_mb_max: float = 0.0
    cpu_s: float = 0.0
    achieved_rate_hz: float = 0.0
    #: [seconds since the stream started, RSS MB], every `rss_every_s` while it streams and
    #: once more at the end (after the last reconstruction).
    rss_series: list[list[float]] = field(default_factory=list)

    def rss_slope_mb_per_min(self) -> float:
        """RSS growth over the second half of the stream (least squares, MB a minute; the
        end point, taken after the last reconstruction, left out): a plateau reads ≈ 0, a
        leak stays positive however long the run. NaN with fewer than 3 points there."""
        half = [(t, mb) for t, mb in self.rss_series if self.seconds / 2 <= t <= self.seconds]
        if len(half) < 3:
            return float("nan")
        t, mb = np.array(half).T
        return float(np.polyfit(t / 60.0, mb, 1)[0])

    def as_dict(self) -> dict:
        return asdict(self)


def _proc(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds) of a process, from /proc (Linux)."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return rss_kb / 1024.0, ticks / os.sysconf("SC_CLK_TCK")


def _pose(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return geometry.look_at(700 * np.array([np.sin(a), -np.cos(a), 0.0]), np.zeros(3), [0, 0, 1])


def expected_accepted(angles_deg: list[float], min_separation_deg: float) -> list[int]:
    """Indices of the frames the listener's rules accept, in order (a view at least
    `min_separation_deg` from every one accepted, up to MAX_SHOTS)."""
    kept: list[int] = []
    directions: list[np.ndarray] = []
    for i, angle in enumerate(angles_deg):
        d = geometry.principal_ray(_pose(angle))[1]
        if len(kept) >= MAX_SHOTS:
            break
        if all(
            np.degrees(np.arccos(np.clip(abs(d @ e), 0, 1))) >= min_separation_deg
            for e in directions
        ):
            kept.append(i)
            directions.append(d)
    return kept


def stream(
    seconds: float = 10.0,
    rate_hz: float = 30.0,
    size: int = 256,
    deg_per_s: float = 6.0,
    domain_id: int | None = None,
    workdir: Path | None = None,
    rss_every_s: float = RSS_EVERY_S,
) -> LoadResult:
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import CameraInfo, Image

    from x23d_ros.ros.image_conversion import image_to_msg

    workdir = Path(workdir or tempfile.mkdtemp(prefix="x23d_load_"))
    env = isolated_ros_env(domain_id)
    log = open(workdir / "bringup.log", "w")  # noqa: SIM115 (closed below)
    sessions = workdir / "sessions"
    process = start_bringup(
        env, log, session_dir=sessions, device="cpu", diagnostics_period_s=0.5, threads=1
    )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("load_probe", context=context)
    image_pub = node.create_publisher(Image, "/carm/image_raw", 10)
    info_pub = node.create_publisher(CameraInfo, "/carm/camera_info", 10)
    pose_pub = node.create_publisher(PoseStamped, "/carm/pose", 10)
    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin(condition, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not condition():
            executor.spin_once(timeout_sec=0.05)
        return condition()

    def status() -> dict[str, str]:
        if not diagnostics:
            return {}
        return {kv.key: kv.value for kv in diagnostics[-1].status[0].values}

    K = geometry.intrinsics(1000.0, 300.0 / size, size, size)
    rng = np.random.default_rng(0)
    frame = (rng.random((size, size)) * 3.0).astype(np.float32)  # 32FC1 line integrals
    angles: list[float] = []
    try:
        assert spin(
            lambda: (
                all(p.get_subscription_count() for p in (image_pub, info_pub, pose_pub))
                and status().get("warm_up_ms")
            ),
            120,
        ), "the process did not come up"
        time.sleep(1.0)
        rss_start, cpu_start = _proc(process.pid)
        rss_max = rss_start
        series = [[0.0, round(rss_start, 1)]]
        start = time.monotonic()
        next_max, next_rss = start + 1.0, start + rss_every_s
        n = int(seconds * rate_hz)
        for i in range(n):
            due = start + i / rate_hz
            while time.monotonic() < due:
                executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
            angle = deg_per_s * i / rate_hz
            angles.append(angle)
            nanoseconds = round(i * 1e9 / rate_hz)  # frame i at i / rate_hz, any rate
            stamp = Time(sec=1000 + nanoseconds // 10**9, nanosec=nanoseconds % 10**9)
            T = _pose(angle)
            pose = PoseStamped()
            pose.header.frame_id, pose.header.stamp = "patient_ref", stamp
            p = pose.pose.position
            p.x, p.y, p.z = (T[:3, 3] / 1000.0).tolist()
            o = pose.pose.orientation
            o.x, o.y, o.z, o.w = Rotation.from_matrix(T[:3, :3]).as_quat().tolist()
            info = CameraInfo(height=size, width=size, k=K.ravel().tolist())
            info.header.stamp = stamp
            pose_pub.publish(pose)
            info_pub.publish(info)
            image_pub.publish(image_to_msg(frame, stamp=stamp, frame_id="carm_source"))
            if time.monotonic() >= next_max:  # by the clock (any rate): the maximum each second
                next_max += 1.0
                rss = _proc(process.pid)[0]
                rss_max = max(rss_max, rss)
                if time.monotonic() >= next_rss:  # and the series every rss_every_s
                    next_rss += rss_every_s
                    series.append([round(time.monotonic() - start, 1), round(rss, 1)])
        elapsed = time.monotonic() - start
        expected = expected_accepted(angles, 5.0)
        spin(lambda: status().get("images_received") == str(n), 30)

        def accounted() -> bool:  # every frame received is a shot or a refusal by now
            values = status()
            refused = sum(int(v) for k, v in values.items() if k.startswith("rejected."))
            return int(values.get("shots_collected", 0)) + refused >= n

        # The last frames may still wait for their camera info or pose (sync_wait_s at most).
        spin(accounted, 15)
        spin(lambda: status().get("state") in ("published", "collecting shots"), 120)
        rss_end, cpu_end = _proc(process.pid)
        series.append([round(time.monotonic() - start, 1), round(rss_end, 1)])
        values = status()
    finally:
        stop(process)
        log.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
    stored = sorted(sessions.glob("*/shot_*.npz"))
    received = int(values.get("images_received", 0))
    return LoadResult(
        seconds=round(elapsed, 2),
        rate_hz=rate_hz,
        size=size,
        frames_sent=n,
        images_received=received,
        lost_frames=n - received,
        expected_shots=len(expected),
        accepted_shots=len(stored),
        lost=max(0, len(expected) - len(stored)),
        rejected={
            k.split(".", 1)[1]: int(v) for k, v in values.items() if k.startswith("rejected.")
        },
        reconstructions=int(values.get("reconstructions", 0)),
        rss_mb_start=round(rss_start, 1),
        rss_mb_end=round(rss_end, 1),
        rss_mb_max=round(max(rss_max, rss_end), 1),
        cpu_s=round(cpu_end - cpu_start, 1),
        achieved_rate_hz=round(n / elapsed, 2),
        rss_series=series,
    )
