"""The reconstruction process over real DDS: shots in, spine out, bad input survived, a crash
recovered from the persisted session, and a late subscriber still served."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.ros.processes import start_bringup, stop
from x23d_ros.ros.spine_messages import read_point_cloud
from x23d_ros.ros.spine_publisher import LATCHED
from x23d_ros.ros.transport_check import isolated_ros_env
from x23d_ros.surface import mask_surface_mm


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("bringup_case")
    simulate(SimulateConfig(out=out, cases=1, views=3, seed=21, image_size=128, spacing_mm=2.0))
    return ShotDataset(out)[0]


class Probe:
    """The test's side: a C-arm stand-in and a planner stand-in in one node."""

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("probe", context=self.context)
        self.image = self.node.create_publisher(Image, "/carm/image_raw", 10)
        self.info = self.node.create_publisher(CameraInfo, "/carm/camera_info", 10)
        self.pose = self.node.create_publisher(PoseStamped, "/carm/pose", 10)
        self.clouds: list[PointCloud2] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.subscribe_cloud(self.clouds)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def subscribe_cloud(self, sink: list) -> None:
        self.node.create_subscription(PointCloud2, "/x23d/spine/points", sink.append, LATCHED)

    def spin_until(self, condition, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.1)
        return condition()

    def wait_for_listener(self) -> None:
        assert self.spin_until(
            lambda: all(p.get_subscription_count() for p in (self.image, self.info, self.pose)),
            60,
        ), "the listener never subscribed"

    def send(
        self,
        case: dict,
        i: int,
        stamp_s: int,
        *,
        nan_pose=False,
        encoding=None,
        truncate=False,
        info_rows=0,
        no_info=False,
        pose_delay_s=0.0,
    ) -> None:
        stamp = Time(sec=stamp_s)
        image = image_to_msg(case["images"][i].numpy(), stamp=stamp, frame_id="carm_source")
        if encoding is not None:
            image.encoding = encoding
        if truncate:
            image.data = bytes(image.data)[: len(image.data) // 2]
        K = case["K"][i].numpy()
        T = case["T_ref_source"][i].numpy()
        info = CameraInfo(height=image.height + info_rows, width=image.width, k=K.ravel().tolist())
        info.header.stamp = stamp
        pose = PoseStamped()
        pose.header.frame_id = "patient_ref"
        pose.header.stamp = Time(sec=stamp_s, nanosec=int(pose_delay_s * 1e9))
        x, y, z = (T[:3, 3] / 1000.0).tolist()
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        if nan_pose:
            q[0] = np.nan
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(c) for c in q)
        self.pose.publish(pose)
        if not no_info:
            self.info.publish(info)
        self.image.publish(image)
        self.spin_until(lambda: False, 0.3)  # a C-arm takes its time between shots

    def latest_diagnostics(self) -> dict[str, str]:
        if not self.diagnostics:
            return {}
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start(env: dict, session_dir, log):
    return start_bringup(
        env,
        log,
        session_dir=session_dir,
        points_per_vertebra=500,
        diagnostics_period_s=0.2,
        device="cpu",
    )


def test_bad_input_a_crash_and_a_late_subscriber(case, tmp_path, ros_domain_id):
    env = isolated_ros_env(ros_domain_id)
    sessions = tmp_path / "sessions"
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115 (two processes write it in turn)
    process = _start(env, sessions, log)
    probe = Probe(ros_domain_id)
    try:
        probe.wait_for_listener()
        probe.send(case, 0, 100, encoding="rgb8")  # an encoding the model cannot take
        probe.send(case, 1, 101, nan_pose=True)
        probe.send(case, 0, 102, info_rows=1)  # image and camera info disagree on the size
        probe.send(case, 0, 103, truncate=True)  # half the pixel data
        probe.send(case, 0, 104, no_info=True)  # camera info never comes
        probe.send(case, 0, 105, pose_delay_s=0.4)  # the pose lags the image
        probe.send(case, 0, 108)
        probe.send(case, 0, 109)  # the same view again
        probe.send(case, 1, 110)
        expected = {
            f"rejected.{reason}"
            for reason in (
                "bad_image",
                "pose_values",
                "size_mismatch",
                "missing_camera_info",
                "stale_pose",
                "duplicate_view",
            )
        }
        assert probe.spin_until(
            lambda: (
                len(list(sessions.glob("*/shot_*.npz"))) == 2
                and probe.latest_diagnostics().get("shots_collected") == "2"
                and expected <= set(probe.latest_diagnostics())
            ),
            60,
        ), sorted(k for k in probe.latest_diagnostics() if k.startswith("rejected"))
        assert probe.latest_diagnostics()["rejected.bad_image"] == "2"
        assert process.poll() is None, "the process died on bad input"

        process.send_signal(signal.SIGKILL)  # a crash after two shots
        process.wait(10)
        process = _start(env, sessions, log)
        # The dead process's subscriptions may still count as matched: wait for the new one's
        # diagnostics instead.
        probe.diagnostics.clear()
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("shots_collected") == "2", 120
        ), "the restarted process did not resume the two shots"
        time.sleep(1.0)  # its subscriptions match ours
        probe.send(case, 2, 111)
        assert probe.spin_until(lambda: probe.clouds, 180), log_path.read_text()[-3000:]
        late: list[PointCloud2] = []
        probe.subscribe_cloud(late)  # a planner that joins after the reconstruction
        assert probe.spin_until(lambda: late, 30), "transient local did not reach a late joiner"
        assert bytes(late[0].data) == bytes(probe.clouds[-1].data)
    finally:
        stop(process)
        log.close()
    output = log_path.read_text()
    assert "resumed session" in output, output[-3000:]

    cloud_msg = probe.clouds[-1]
    assert cloud_msg.header.frame_id == "patient_ref"
    cloud = read_point_cloud(cloud_msg)
    assert set(cloud["label"].tolist()) <= {1, 2, 3, 4, 5} and len(cloud) >= 3 * 500
    # Metres, and on the spine: the mean distance to the ground-truth bone surface is small
    # against the spine's size (~200 mm).
    labels, affine = case["labels"].numpy(), case["affine"].numpy()
    surface_mm = mask_surface_mm(labels > 0, affine)
    xyz_mm = 1000.0 * np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(float)
    distance = cKDTree(surface_mm).query(xyz_mm)[0]
    print(f"cloud → ground-truth surface: mean {distance.mean():.2f} mm")
    assert np.median(distance) < 10.0
    probe.close()


def test_the_config_file_lists_every_parameter_of_every_node_with_its_default():
    from pathlib import Path

    import yaml

    from x23d_ros.ros import carm_listener, reconstructor_node, spine_publisher

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "reconstruct.yaml").read_text())
    shared = config["/**"]["ros__parameters"]
    for node, params in (
        ("carm_listener", carm_listener.PARAMS),
        ("reconstructor", reconstructor_node.PARAMS),
        ("spine_publisher", spine_publisher.PARAMS),
    ):
        section = {**shared, **config[node]["ros__parameters"]}
        assert set(section) - set(shared) <= {p.name for p in params}, node
        for p in params:
            assert section.get(p.name) == p.default, (node, p.name)
