"""The reconstruction process over real DDS: shots in, spine out, bad input survived, a crash
recovered from the persisted session, and a late subscriber still served."""

from __future__ import annotations

import signal
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from shape_msgs.msg import Mesh

from x23d_ros import landmarks
from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.ros.processes import start_bringup, stop
from x23d_ros.ros.spine_messages import read_point_cloud
from x23d_ros.ros.spine_publisher import LATCHED, SESSION_TOPIC
from x23d_ros.ros.transport_check import isolated_ros_env
from x23d_ros.surface import mask_surface_mm


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

    def wait_until_warm(self) -> None:
        """The listener subscribed and the networks warmed up (diagnostics say `warm_up_ms`)."""
        self.wait_for_listener()
        assert self.spin_until(lambda: self.latest_diagnostics().get("warm_up_ms"), 120)

    def subscribe_sessions(self) -> list[DiagnosticArray]:
        """The latched `/x23d/session` records, appended as they come."""
        records: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, SESSION_TOPIC, records.append, LATCHED)
        return records

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
        distortion=("", []),
        turn: np.ndarray | None = None,
    ) -> None:
        """Shot `i` of `case` with its camera info and pose; `turn` (3×3): the poses given in
        a reference frame turned by it (T_ref' = turn · T_ref), as a tracker's patient array
        mounted at another orientation would give them."""
        stamp = Time(sec=stamp_s)
        image = image_to_msg(case["images"][i].numpy(), stamp=stamp, frame_id="carm_source")
        if encoding is not None:
            image.encoding = encoding
        if truncate:
            image.data = bytes(image.data)[: len(image.data) // 2]
        K = case["K"][i].numpy()
        T = case["T_ref_source"][i].numpy().astype(float)
        if turn is not None:
            T = np.vstack([np.hstack([turn, np.zeros((3, 1))]), [0, 0, 0, 1]]) @ T
        info = CameraInfo(height=image.height + info_rows, width=image.width, k=K.ravel().tolist())
        info.header.stamp = stamp
        info.distortion_model, info.d = distortion[0], list(distortion[1])
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


def start_test_bringup(env: dict, session_dir, log, **params):
    """bringup on the CPU, diagnostics at 5 Hz, 500 points a vertebra unless `params` say."""
    defaults = {"points_per_vertebra": 500, "diagnostics_period_s": 0.2, "device": "cpu"}
    return start_bringup(env, log, session_dir=session_dir, **{**defaults, **params})


def test_bad_input_a_crash_and_a_late_subscriber(case, tmp_path, ros_domain_id):
    env = isolated_ros_env(ros_domain_id)
    sessions = tmp_path / "sessions"
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115 (two processes write it in turn)
    process = start_test_bringup(env, sessions, log)
    probe = Probe(ros_domain_id)
    try:
        probe.wait_for_listener()
        probe.send(case, 0, 100, encoding="rgb8")  # an encoding the model cannot take
        probe.send(case, 1, 101, nan_pose=True)
        probe.send(case, 0, 102, info_rows=1)  # image and camera info disagree on the size
        probe.send(case, 0, 103, truncate=True)  # half the pixel data
        probe.send(case, 0, 104, no_info=True)  # camera info never comes
        probe.send(case, 0, 105, pose_delay_s=0.4)  # the pose lags the image
        probe.send(case, 0, 106, distortion=("equidistant", [0.1, 0, 0, 0]))  # cannot undo
        probe.send(case, 0, 108, distortion=("plumb_bob", [0.0] * 5))  # nothing to undo
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
                "distortion",
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
        # Let the first start finish its warm-up (a slow machine may not have yet), so that
        # the log's count of warm-ups below is once a start.
        assert probe.spin_until(lambda: probe.latest_diagnostics().get("warm_up_ms"), 120)

        process.send_signal(signal.SIGKILL)  # a crash after two shots
        process.wait(10)
        process = start_test_bringup(env, sessions, log)
        # The dead process's subscriptions may still count as matched: wait for the new one's
        # diagnostics instead.
        probe.diagnostics.clear()
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("shots_collected") == "2", 120
        ), "the restarted process did not resume the two shots"
        # Configured, it warms the networks up on its worker thread and then says so.
        assert probe.spin_until(lambda: probe.latest_diagnostics().get("warm_up_ms"), 120)
        assert float(probe.latest_diagnostics()["warm_up_ms"]) > 0
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
    assert output.count("warmed up in") == 2, output[-3000:]  # once a start

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


def test_poses_from_tf_without_tf2_ros(case, tmp_path, ros_domain_id):
    """`pose_source: tf`: the image's frame in `reference_frame` at the image's stamp, through a
    static link and a dynamic one (here read by TfReader: tf2_ros is not on PyPI). A shot whose
    transform comes after it waits for it; one whose transform never comes is refused with
    `tf_lookup`; the others make the spine. The networks run on one thread (`threads: 1`)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from x23d_ros.ros.spine_publisher import TF_STATIC_QOS

    def transform(parent, child, T_mm, stamp):
        t = TransformStamped(child_frame_id=child)
        t.header.frame_id, t.header.stamp = parent, stamp
        v = t.transform.translation
        v.x, v.y, v.z = (T_mm[:3, 3] / 1000.0).tolist()
        r = t.transform.rotation
        r.x, r.y, r.z, r.w = Rotation.from_matrix(T_mm[:3, :3]).as_quat().tolist()
        return t

    env = isolated_ros_env(ros_domain_id)
    log = open(tmp_path / "bringup.log", "w")  # noqa: SIM115
    process = start_test_bringup(env, tmp_path / "sessions", log, pose_source="tf", threads=1)
    probe = Probe(ros_domain_id)
    tf = probe.node.create_publisher(TFMessage, "/tf", 100)
    tf_static = probe.node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
    # patient_ref → carm_base fixed (a tracker's reference), carm_base → carm_source per shot.
    T_ref_base = np.eye(4)
    T_ref_base[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    T_ref_base[:3, 3] = [100.0, -50.0, 20.0]
    tf_static.publish(
        TFMessage(transforms=[transform("patient_ref", "carm_base", T_ref_base, Time())])
    )
    try:
        # The listener must hear /tf (volatile) before the first transform goes out, or that
        # shot is refused as unconnected (seen on a loaded CI machine).
        assert probe.spin_until(
            lambda: (
                probe.image.get_subscription_count() > 0
                and tf.get_subscription_count() > 0
                and tf_static.get_subscription_count() > 0
            ),
            60,
        )
        # And after the warm-up, so that the 0.5 s between shot 403 and its late transform is
        # not stretched by the warm-up holding both cores.
        assert probe.spin_until(lambda: probe.latest_diagnostics().get("warm_up_ms"), 120)
        # Shot 401 never gets a transform (refused when sync_wait_s has passed); shot 403's
        # comes 0.5 s after its image (held until it arrives, as tf2's MessageFilter does).
        for i, stamp_s in ((0, 400), (1, 401), (1, 402), (2, 403)):
            T_base_source = np.linalg.inv(T_ref_base) @ case["T_ref_source"][i].numpy()
            stamp = Time(sec=stamp_s)
            message = TFMessage(
                transforms=[transform("carm_base", "carm_source", T_base_source, stamp)]
            )
            if stamp_s in (400, 402):
                tf.publish(message)
            probe.spin_until(lambda: False, 0.2)
            image = image_to_msg(case["images"][i].numpy(), stamp=stamp, frame_id="carm_source")
            K = case["K"][i].numpy()
            info = CameraInfo(height=image.height, width=image.width, k=K.ravel().tolist())
            info.header.stamp = stamp
            probe.info.publish(info)
            probe.image.publish(image)
            probe.spin_until(lambda: False, 0.5)
            if stamp_s == 403:
                tf.publish(message)
        assert probe.spin_until(lambda: probe.clouds, 180), (tmp_path / "bringup.log").read_text()[
            -3000:
        ]
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("rejected.tf_lookup") == "1", 10
        ), probe.latest_diagnostics()
        cloud = read_point_cloud(probe.clouds[-1])
        assert sorted(set(cloud["label"].tolist())) == [1, 2, 3, 4, 5]
        # The chained poses put the spine where it is: near the ground-truth bone surface.
        surface_mm = mask_surface_mm(case["labels"].numpy() > 0, case["affine"].numpy())
        xyz_mm = 1000.0 * np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(float)
        assert np.median(cKDTree(surface_mm).query(xyz_mm)[0]) < 10.0
        assert probe.latest_diagnostics()["threads"] == "1"  # `threads` caps the networks
    finally:
        stop(process)
        log.close()
        probe.close()


def test_a_model_that_fails_at_run_time_is_reported_and_the_shots_are_kept(
    case, tmp_path, ros_domain_id
):
    """Weights that load but cannot run (their fine stage's crops 0 pixels wide): the warm-up
    and the reconstruction fail, the node says why in diagnostics and its log, stays up, keeps
    the shots and publishes nothing."""
    import torch

    from x23d_ros.pipeline import resolve_weights

    bundle = torch.load(resolve_weights("default"), weights_only=True)
    bundle["fine"]["crop_px"] = 0
    broken = tmp_path / "broken.pt"
    torch.save(bundle, broken)
    env = isolated_ros_env(ros_domain_id)
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115
    process = start_test_bringup(env, tmp_path / "sessions", log, weights=str(broken))
    probe = Probe(ros_domain_id)
    try:
        probe.wait_for_listener()
        for i, stamp in enumerate((300, 301, 302)):
            probe.send(case, i, stamp)
        assert probe.spin_until(
            lambda: (
                probe.latest_diagnostics().get("last_error", "").startswith("reconstruction failed")
            ),
            120,
        ), probe.latest_diagnostics()
        diagnostics = probe.latest_diagnostics()
        assert diagnostics["shots_collected"] == "3" and diagnostics["warm_up_ms"] == "nan"
        assert probe.diagnostics[-1].status[0].level == DiagnosticStatus.WARN
        assert process.poll() is None and not probe.clouds
    finally:
        stop(process)
        log.close()
        probe.close()
    output = log_path.read_text()
    assert "warm-up failed" in output and "reconstruction failed" in output, output[-3000:]


def test_a_reset_during_a_reconstruction_publishes_nothing_of_the_old_session(
    case, tmp_path, ros_domain_id
):
    """#23: `/x23d/reset` while the first session's reconstruction runs (one thread, so it
    takes seconds): that spine is dropped, never published. The next session's spine is
    named on `/x23d/session` (latched) with its session, its shots' stamps (the newest as
    `imaged_at`) and the weights."""
    from std_srvs.srv import Trigger

    env = isolated_ros_env(ros_domain_id)
    log = open(tmp_path / "bringup.log", "w")  # noqa: SIM115
    process = start_test_bringup(env, tmp_path / "sessions", log, threads=1)
    probe = Probe(ros_domain_id)
    sessions = probe.subscribe_sessions()
    reset = probe.node.create_client(Trigger, "/x23d/reset")
    started = time.time()
    try:
        probe.wait_until_warm()
        first = probe.latest_diagnostics()["session"]
        for i, stamp_s in enumerate((100, 101)):
            probe.send(case, i, stamp_s)
        # The third shot starts the reconstruction; reset while it runs.
        probe.send(case, 2, 102)
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("state") == "reconstructing", 10
        ), probe.latest_diagnostics()
        assert probe.spin_until(reset.service_is_ready, 10)
        future = reset.call_async(Trigger.Request())
        assert probe.spin_until(future.done, 30) and future.result().success
        clouds_before, records_before = len(probe.clouds), len(sessions)
        # The old reconstruction ends (it counts as run) and is dropped, not published.
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("reconstructions") == "1", 120
        ), (tmp_path / "bringup.log").read_text()[-3000:]
        probe.spin_until(lambda: False, 1.0)
        second = probe.latest_diagnostics()["session"]
        assert second != first
        after = probe.clouds[clouds_before:]
        assert all(len(c.data) == 0 for c in after), "the old session's spine went out"
        assert not any(
            {kv.key: kv.value for kv in r.status[0].values}.get("published") == "true"
            for r in sessions[records_before:]
        )
        assert len(probe.clouds[-1].data) == 0  # what a planner holds now: nothing
        late_meshes: list = []  # a late subscriber to a latched mesh topic: an empty mesh
        probe.node.create_subscription(Mesh, "/x23d/spine/L3/mesh", late_meshes.append, LATCHED)
        assert probe.spin_until(lambda: late_meshes, 10)
        assert len(late_meshes[-1].vertices) == 0 and len(late_meshes[-1].triangles) == 0
        # On any machine where a reconstruction on one thread outlasts a service call (the
        # usual case), the reset caught it running: then it was dropped (counted once the
        # publisher has refused it, shortly after the reconstruction ends).
        probe.spin_until(
            lambda: probe.latest_diagnostics().get("reconstructions_dropped") == "1", 10
        )
        dropped = probe.latest_diagnostics().get("reconstructions_dropped")
        log_text = (tmp_path / "bringup.log").read_text()
        assert dropped == "1" or log_text.index("vertebrae from 3 shots") < log_text.index(
            "reset:"
        ), log_text[-3000:]

        for i, stamp_s in enumerate((200, 201)):
            probe.send(case, i, stamp_s)
        probe.send(case, 2, 202)
        assert probe.spin_until(lambda: any(len(c.data) for c in probe.clouds), 180), (
            tmp_path / "bringup.log"
        ).read_text()[-3000:]
        assert probe.spin_until(
            lambda: sessions and sessions[-1].status[0].values[1].value == "true", 10
        )
    finally:
        stop(process)
        log.close()
    cloud = next(c for c in probe.clouds if len(c.data))
    # Stamped when published (the spine is fixed in reference_frame; a planner looks its TF up
    # now); when it was imaged is in the session record.
    assert abs(cloud.header.stamp.sec - started) < 600
    record = {kv.key: kv.value for kv in sessions[-1].status[0].values}
    assert record["session"] == second and record["published"] == "true"
    assert [float(t) for t in record["shot_stamps"].split(",")] == [200.0, 201.0, 202.0]
    assert float(record["imaged_at"]) == 202.0
    assert record["weights_sha256"] and record["levels"]
    # The patient's axes the spine was made in are named with it: given (the default), the
    # identity quaternion's.
    assert record["patient_orientation"] == "given"
    axes = np.array([float(v) for v in record["patient_axes"].split(",")]).reshape(3, 3)
    np.testing.assert_allclose(axes, np.eye(3), atol=1e-6)
    # Whether the shots show bone where the ends of the count should be: the shots showing
    # each, and those shown by enough shots; none makes the record a warning that says so.
    shown = {k: int(record[f"landmark_shots.{k}"]) for k in landmarks.LANDMARKS}
    in_view = [k for k in landmarks.LANDMARKS if shown[k] >= landmarks.MIN_SHOTS]
    assert record["count_landmarks"] == (",".join(in_view) or "none")
    status = sessions[-1].status[0]
    assert (status.level == DiagnosticStatus.WARN) == (record["count_landmarks"] == "none")
    assert ("no counting landmark" in status.message) == (record["count_landmarks"] == "none")
    probe.close()


def test_the_patient_axes_read_from_the_shots_in_a_turned_reference_frame(
    case, tmp_path, ros_domain_id
):
    """#23 item 5 over ROS: the listener's `patient_orientation: shots` and the reconstructor's
    shipped orientation estimator. The poses come in a reference frame turned 90° about x and
    30° about z (a patient array mounted on its side): the session record says the axes were
    estimated and gives them near the turn, and the cloud, in the turned frame, lies on the
    case's bone turned the same way."""
    turn = Rotation.from_euler("xz", [90.0, 30.0], degrees=True).as_matrix()
    env = isolated_ros_env(ros_domain_id)
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115
    process = start_test_bringup(
        env,
        tmp_path / "sessions",
        log,
        patient_orientation="shots",
        orientation_estimator="default",
    )
    probe = Probe(ros_domain_id)
    sessions = probe.subscribe_sessions()
    try:
        probe.wait_until_warm()
        for i in range(3):
            probe.send(case, i, 300 + i, turn=turn)
        assert probe.spin_until(lambda: any(len(c.data) for c in probe.clouds), 180), (
            log_path.read_text()[-3000:]
        )
        assert probe.spin_until(
            lambda: sessions and sessions[-1].status[0].values[1].value == "true", 10
        )
    finally:
        stop(process)
        log.close()
    record = {kv.key: kv.value for kv in sessions[-1].status[0].values}
    assert record["patient_orientation"] == "estimated", record
    axes = np.array([float(v) for v in record["patient_axes"].split(",")]).reshape(3, 3)
    # Columns: the patient's axes in the turned frame, i.e. the turn's columns; each within
    # 20° (the estimator's 90th percentile on simulated spines is under 15°).
    angles = np.degrees(np.arccos(np.clip(np.sum(axes * turn, axis=0), -1.0, 1.0)))
    print(f"estimated axes off by {np.round(angles, 1)} deg")
    assert np.all(angles < 20.0), angles
    cloud = read_point_cloud(next(c for c in probe.clouds if len(c.data)))
    xyz_mm = 1000.0 * np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(float)
    labels, affine = case["labels"].numpy(), case["affine"].numpy()
    surface_mm = mask_surface_mm(labels > 0, affine) @ turn.T  # the bone in the turned frame
    distance = cKDTree(surface_mm).query(xyz_mm)[0]
    print(f"cloud → turned ground-truth surface: median {np.median(distance):.2f} mm")
    assert np.median(distance) < 3.0
    probe.close()


def test_a_30_hz_fluoroscopy_stream_loses_no_accepted_shot(ros_domain_id, tmp_path):
    """#23 load, short: 8 s of 256² 32FC1 frames at 30 Hz with pose and camera info while the
    C-arm turns 6°/s. Every shot the listener's rules accept from the frames sent is in the
    session folder, every frame received is a shot or a refusal with its reason (duplicate
    views, then too_many), and the process's memory stays bounded. On a loaded host DDS's
    keep-last image queue may drop a frame (a newer one supersedes it) and a frame may miss
    its camera info or pose: counted, at most a tenth of the stream (in about one full suite
    run in ten on 2 cores, 6 to 10 frames). bench/load.py runs 10 minutes."""
    from x23d_ros.ros.load_check import stream

    result = stream(
        seconds=8.0,
        rate_hz=30.0,
        size=256,
        domain_id=ros_domain_id,
        workdir=tmp_path,
        rss_every_s=2.0,
    )
    print(result.as_dict())
    assert result.lost == 0, result
    assert result.accepted_shots == result.expected_shots >= 5
    load = {"missing_camera_info", "stale_pose", "missing_pose"}  # a frame that came alone
    assert set(result.rejected) <= {"duplicate_view", "too_many", *load}, result.rejected
    assert sum(result.rejected.values()) == result.images_received - result.accepted_shots
    dropped = result.lost_frames + sum(result.rejected.get(k, 0) for k in load)
    assert dropped <= result.frames_sent // 10, result
    assert result.achieved_rate_hz > 20.0  # the sender's own pace, on a loaded machine
    assert result.rss_mb_end < result.rss_mb_start + 300.0, result
    assert result.rss_series[0] == [0.0, result.rss_mb_start]
    assert result.rss_series[-1][1] == result.rss_mb_end
    during = [t for t, _ in result.rss_series[1:-1]]  # every 2 s while streaming
    assert len(during) >= 3 and np.all(np.diff(during) < 3.0), during


def test_the_load_run_reads_a_plateau_and_a_leak_from_its_rss_series():
    """The slope over the second half of the run: ≈ 0 for memory that grew at the start and
    then stayed, the leak's rate for memory that keeps growing."""
    from x23d_ros.ros.load_check import LoadResult

    def run(series):
        return LoadResult(600.0, 30.0, 512, 0, 0, 0, 0, 0, 0, rss_series=series)

    t = np.arange(0.0, 601.0, 10.0)
    plateau = run([[s, 640.0 + 80.0 * min(s, 120.0) / 120.0] for s in t])
    leak = run([[s, 640.0 + 5.0 * s / 60.0] for s in t])
    assert abs(plateau.rss_slope_mb_per_min()) < 1e-9
    assert abs(leak.rss_slope_mb_per_min() - 5.0) < 1e-9
    assert np.isnan(run([[0.0, 640.0], [600.0, 700.0]]).rss_slope_mb_per_min())
    # The end point comes after the last reconstruction, past the stream: not in the slope.
    after = run([[s, 700.0] for s in t] + [[700.0, 900.0]])
    assert abs(after.rss_slope_mb_per_min()) < 1e-9


def test_a_crash_mid_reconstruction_resumes_the_same_shots_and_publishes_under_the_same_session(
    case, tmp_path, ros_domain_id
):
    """#23: SIGKILL while the reconstruction runs (one thread: it takes seconds); after a
    restart the process resumes the session's three shots, reconstructs them without being
    asked and publishes the spine under the same session id."""
    env = isolated_ros_env(ros_domain_id)
    sessions_dir = tmp_path / "sessions"
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115 (two processes write it in turn)
    process = start_test_bringup(env, sessions_dir, log, threads=1)
    probe = Probe(ros_domain_id)
    records = probe.subscribe_sessions()
    try:
        probe.wait_until_warm()
        first = probe.latest_diagnostics()["session"]
        for i in range(3):
            probe.send(case, i, 500 + i)
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("state") == "reconstructing", 10
        ), probe.latest_diagnostics()
        process.send_signal(signal.SIGKILL)  # mid-reconstruction
        process.wait(10)
        assert not any(len(c.data) for c in probe.clouds), "the spine went out before the kill"
        process = start_test_bringup(env, sessions_dir, log, threads=1)
        assert probe.spin_until(lambda: any(len(c.data) for c in probe.clouds), 180), (
            log_path.read_text()[-3000:]
        )
        assert probe.spin_until(
            lambda: (
                records
                and {kv.key: kv.value for kv in records[-1].status[0].values}.get("published")
                == "true"
            ),
            10,
        )
    finally:
        stop(process)
        log.close()
    record = {kv.key: kv.value for kv in records[-1].status[0].values}
    assert record["session"] == first
    assert [float(t) for t in record["shot_stamps"].split(",")] == [500.0, 501.0, 502.0]
    assert "resumed with 3 shots: reconstructing" in log_path.read_text()
    assert len(list(sessions_dir.glob("*/shot_*.npz"))) == 3
    probe.close()


def test_fluoroscopy_frames_go_through_the_style_transfer_and_the_gate_refuses_noise(
    paired, tmp_path, ros_domain_id
):
    """#22 over ROS: with `domain` realistic and `style_transfer` default (off unless asked),
    mono8 fluoroscopy frames are scaled to [0, 1], turned into the synthetic domain by the
    shipped style transfer and reconstructed; the
    diagnostics name the adaptation and its time. Three noise frames before them are refused
    by the domain gate (counted by reason), the shots kept, nothing published."""
    import pytest
    import torch
    from std_srvs.srv import Trigger

    from x23d_ros.data.dataset import ShotDataset
    from x23d_ros.model.style import DEFAULT_STYLE

    if not DEFAULT_STYLE.is_file():
        pytest.skip("no shipped style transfer")
    item = ShotDataset(paired, "realistic")[0]
    frames = dict(item, images=torch.round(item["images"] * 255).to(torch.uint8))
    rng = np.random.default_rng(0)
    noise = dict(item, images=torch.from_numpy(rng.integers(0, 256, (3, 320, 320), np.uint8)))
    env = isolated_ros_env(ros_domain_id)
    log = open(tmp_path / "bringup.log", "w")  # noqa: SIM115
    process = start_test_bringup(
        env, tmp_path / "sessions", log, domain="realistic", style_transfer="default"
    )
    probe = Probe(ros_domain_id)
    reset = probe.node.create_client(Trigger, "/x23d/reset")
    try:
        probe.wait_until_warm()
        for i, stamp_s in enumerate((100, 101, 102)):
            probe.send(noise, i, stamp_s)
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("gate_refused.noise") == "1", 120
        ), (tmp_path / "bringup.log").read_text()[-3000:]
        diagnostics = probe.latest_diagnostics()
        assert diagnostics["shots_collected"] == "3" and "noise" in diagnostics["last_error"]
        assert diagnostics["style_transfer"] not in ("", "none")
        assert not any(len(c.data) for c in probe.clouds)
        assert probe.spin_until(reset.service_is_ready, 10)
        future = reset.call_async(Trigger.Request())
        assert probe.spin_until(future.done, 30) and future.result().success
        for i, stamp_s in enumerate((200, 201, 202)):
            probe.send(frames, i, stamp_s)
        assert probe.spin_until(lambda: any(len(c.data) for c in probe.clouds), 180), (
            tmp_path / "bringup.log"
        ).read_text()[-3000:]
        assert probe.spin_until(lambda: "adaptation" in probe.latest_diagnostics(), 10)
        diagnostics = probe.latest_diagnostics()
        assert diagnostics["adaptation"].startswith("style transfer style.pt")
        assert float(diagnostics["latency_ms.style"]) > 0
    finally:
        stop(process)
        log.close()
        probe.close()


def test_weights_that_cannot_read_the_shots_domain_are_refused_at_configure(
    tmp_path, ros_domain_id
):
    """`domain: realistic` with the shipped synthetic-domain weights and no style transfer
    (the default): the reconstructor does not configure, and says why in diagnostics."""
    env = isolated_ros_env(ros_domain_id)
    log = open(tmp_path / "bringup.log", "w")  # noqa: SIM115
    process = start_test_bringup(env, tmp_path / "sessions", log, domain="realistic")
    probe = Probe(ros_domain_id)
    try:
        assert probe.spin_until(
            lambda: "no style transfer" in probe.latest_diagnostics().get("last_error", ""), 120
        ), (tmp_path / "bringup.log").read_text()[-3000:]
        diagnostics = probe.latest_diagnostics()
        assert diagnostics["lifecycle"] == "unconfigured" and process.poll() is None
    finally:
        stop(process)
        log.close()
        probe.close()


def test_the_operator_confirms_or_corrects_the_level_names_of_the_published_spine(
    case, tmp_path, ros_domain_id
):
    """`/x23d/confirm_levels`: a confirmation that names another spine is refused and changes
    nothing; a count one level off renames every output (cloud labels, mesh topics, session
    record) without moving the anatomy, withdraws a level that leaves L1–L5 and reconstructs
    the one it exposes; after a crash the same spine comes back as counted; a second call
    replaces the first; after a reset there is nothing to confirm."""
    from std_srvs.srv import Trigger
    from x23d_interfaces.srv import ConfirmLevels

    env = isolated_ros_env(ros_domain_id)
    log_path = tmp_path / "bringup.log"
    log = open(log_path, "w")  # noqa: SIM115
    process = start_test_bringup(env, tmp_path / "sessions", log)
    probe = Probe(ros_domain_id)
    sessions = probe.subscribe_sessions()
    confirm = probe.node.create_client(ConfirmLevels, "/x23d/confirm_levels")
    reset = probe.node.create_client(Trigger, "/x23d/reset")

    def record() -> dict[str, str]:
        return {kv.key: kv.value for kv in sessions[-1].status[0].values} if sessions else {}

    def call(reconstruction: str, shift: int):
        future = confirm.call_async(
            ConfirmLevels.Request(reconstruction=reconstruction, shift=shift)
        )
        assert probe.spin_until(future.done, 60), log_path.read_text()[-3000:]
        return future.result()

    def cloud_by_label() -> dict[int, np.ndarray]:
        points = read_point_cloud(probe.clouds[-1])
        xyz = np.stack([points["x"], points["y"], points["z"]], 1)
        return {int(k): xyz[points["label"] == k] for k in np.unique(points["label"])}

    try:
        probe.wait_until_warm()
        for i in range(3):
            probe.send(case, i, 300 + i)
        assert probe.spin_until(lambda: record().get("published") == "true", 180), (
            log_path.read_text()[-3000:]
        )
        found = record()
        assert found["levels_confirmed"] == "false" and found["level_shift"] == ""
        assert found["levels_as_found"] == found["levels"]
        names = found["levels"].split(",")
        assert names and set(names) <= {"L1", "L2", "L3", "L4", "L5"}, found
        before = cloud_by_label()
        assert sorted(before) == sorted(int(n[1]) for n in names)
        assert probe.spin_until(confirm.service_is_ready, 10)

        # A confirmation of a spine the operator has not seen: refused, nothing re-sent.
        clouds, records = len(probe.clouds), len(sessions)
        refused = call("0123456789abcdef", 0)
        assert not refused.success and "not the published spine" in refused.message
        assert list(refused.levels) == []
        probe.spin_until(lambda: False, 1.0)
        assert len(probe.clouds) == clouds and len(sessions) == records

        # Counted one level off: the vertebra the networks named L1 is L2. What they took for
        # T12 is L1: the fine stage runs there, one level step above L2, and it goes out too.
        answer = call(found["reconstruction"], 1)
        expected = [f"L{int(n[1]) + 1}" for n in names if int(n[1]) < 5]
        assert answer.success, answer.message
        assert list(answer.levels) == expected
        assert "reconstructing L1 where the count puts it" in answer.message
        final = ["L1", *expected]
        assert probe.spin_until(lambda: record().get("levels") == ",".join(final), 60), (
            log_path.read_text()[-3000:]
        )
        counted = record()
        assert counted["levels_confirmed"] == "true" and counted["level_shift"] == "+1"
        # What the networks called each published level ("-": placed by the count).
        assert counted["levels_as_found"] == ",".join(["-", *[n for n in names if n != "L5"]])
        assert counted["reconstruction"] == found["reconstruction"]
        assert sessions[-1].status[0].level == DiagnosticStatus.OK
        assert "confirmed by the operator" in sessions[-1].status[0].message
        after_labels = [int(n[1]) for n in expected]
        assert probe.spin_until(lambda: sorted(cloud_by_label()) == [1, *after_labels], 10)
        after = cloud_by_label()
        for label in after_labels:  # the same bone under the counted name
            np.testing.assert_array_equal(after[label], before[label - 1])
        # The new L1 lies a level step above L2 (z is the patient's superior axis here).
        step = after[1].mean(0) - after[2].mean(0)
        assert 0.015 < np.linalg.norm(step) < 0.05 and step[2] > 0.01, step
        l1_meshes: list = []
        probe.node.create_subscription(Mesh, "/x23d/spine/L1/mesh", l1_meshes.append, LATCHED)
        assert probe.spin_until(lambda: l1_meshes and len(l1_meshes[-1].triangles), 10)
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("levels") == ",".join(final), 10
        )
        assert probe.latest_diagnostics()["levels_confirmed"] == "true"

        # A crash: the restarted process resumes the session, reconstructs the same shots and
        # publishes them as the operator counted them (the count is kept with the session).
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        before_restart = len(sessions)
        process = start_test_bringup(env, tmp_path / "sessions", log)
        assert probe.spin_until(
            lambda: (
                len(sessions) > before_restart
                and record().get("levels_confirmed") == "true"
                and record().get("levels") == ",".join(final)
            ),
            240,
        ), log_path.read_text()[-3000:]
        restored = record()
        assert restored["reconstruction"] == found["reconstruction"]
        assert restored["level_shift"] == "+1" and restored["session"] == found["session"]
        assert "applied again" in log_path.read_text()
        assert probe.spin_until(confirm.service_is_ready, 30)

        # A second call replaces the first: back to the networks' names, confirmed.
        again = call(found["reconstruction"], 0)
        assert again.success and list(again.levels) == names
        assert probe.spin_until(lambda: record().get("level_shift") == "+0", 10)
        assert record()["levels"] == record()["levels_as_found"] == found["levels"]
        assert probe.spin_until(lambda: sorted(cloud_by_label()) == sorted(before), 10)

        # After a reset there is no spine to confirm.
        assert probe.spin_until(reset.service_is_ready, 10)
        future = reset.call_async(Trigger.Request())
        assert probe.spin_until(future.done, 30) and future.result().success
        late = call(found["reconstruction"], 1)
        assert not late.success and "nothing is published" in late.message
        # (Counted since the restart: the count applied again, the call with 0, the late one.)
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("level_confirmations_refused") == "1", 10
        )
        assert probe.latest_diagnostics()["level_confirmations"] == "2"
    finally:
        stop(process)
        log.close()
        probe.close()
