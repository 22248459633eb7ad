"""Fuzz (#23): a real carm_listener node fed property-based malformed messages.

Images with a wrong step, size, encoding, NaN/inf, 0×0 or 8192² pixels; camera infos with a
singular or non-finite K, a size that disagrees, odd distortion; poses with NaN, a non-unit
or zero quaternion; stamps far in the past or the future. The node's own callbacks take them
(a real rclpy node; DDS would only slow the thousands of examples down, and test_bringup sends
the same kinds over real DDS). Properties: no callback raises, every refusal is counted under
a known reason, the two shots collected first are never touched, and nothing that joins the
session breaks the invariants a reconstruction relies on (finite image, positive focal
lengths, an orthonormal rotation)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from x23d_ros import geometry
from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.session import REASONS

SIZE = 32
K = geometry.intrinsics(1000.0, 10.0, SIZE, SIZE)  # a 32² detector, 100 px focal length
KNOWN = set(REASONS) | {
    "bad_image",
    "pose_frame",
    "missing_camera_info",
    "missing_pose",
    "sync_overflow",
    "before_reset",
}


def _T(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return geometry.look_at(600 * np.array([np.sin(a), -np.cos(a), 0.0]), np.zeros(3), [0, 0, 1])


def _pose(T: np.ndarray, stamp: Time, quaternion=None) -> PoseStamped:
    pose = PoseStamped()
    pose.header.frame_id, pose.header.stamp = "patient_ref", stamp
    p = pose.pose.position
    p.x, p.y, p.z = (T[:3, 3] / 1000.0).tolist()
    q = Rotation.from_matrix(T[:3, :3]).as_quat() if quaternion is None else quaternion
    o = pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(c) for c in q)
    return pose


def _info(stamp: Time, k=K, height=SIZE, width=SIZE, model="", d=()) -> CameraInfo:
    info = CameraInfo(height=height, width=width, k=np.asarray(k, float).ravel().tolist())
    info.header.stamp = stamp
    info.distortion_model, info.d = model, list(d)
    return info


@pytest.fixture
def listener(tmp_path):
    from x23d_ros.ros.carm_listener import CArmListener

    args = ["--ros-args", "-p", f"session_dir:={tmp_path}", "-p", "sync_wait_s:=0.01"]
    rclpy.init(args=args)  # the default context, for this test alone
    node = CArmListener()
    try:
        for i, angle in enumerate((0.0, 90.0)):  # two good shots first
            stamp = Time(sec=10 + i)
            image = np.random.default_rng(i).random((SIZE, SIZE)).astype(np.float32)
            node._on_pose(_pose(_T(angle), stamp))
            node._on_info(_info(stamp))
            node._on_image(image_to_msg(image, stamp=stamp, frame_id="carm_source"))
        assert len(node.session) == 2, dict(node.rejections)
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()


finite = st.floats(-1e6, 1e6, allow_nan=False)
odd_float = st.one_of(finite, st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0]))
stamps = st.builds(
    Time,
    sec=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(20, 40)),
    nanosec=st.integers(0, 999_999_999),
)


@st.composite
def images(draw, stamp):
    encoding = draw(
        st.sampled_from(["32FC1", "mono8", "mono16", "16UC1", "rgb8", "bgr8", "", "8UC3"])
    )
    height = draw(st.sampled_from([0, 1, SIZE, 33, 8192]))
    width = draw(st.sampled_from([0, 1, SIZE, 8192])) if height != 8192 else draw(st.just(1))
    itemsize = {"32FC1": 4, "mono16": 2, "16UC1": 2}.get(encoding, 1)
    step = draw(st.sampled_from([width * itemsize, width * itemsize + 3, 0, max(width - 1, 0)]))
    size = step * height
    if encoding == "32FC1" and size:
        values = draw(st.lists(odd_float, min_size=1, max_size=4))
        row = np.resize(np.array(values, "<f4"), size // 4).tobytes()
        data = row + bytes(size - len(row))
    else:
        data = bytes(draw(st.integers(0, 255)) for _ in range(1)) * size
    data = data[: draw(st.sampled_from([size, size // 2, 0]))]
    msg = Image(height=height, width=width, encoding=encoding, step=step, data=data)
    msg.header.stamp, msg.header.frame_id = stamp, "carm_source"
    return msg


@st.composite
def infos(draw, stamp):
    k = draw(
        st.sampled_from(
            [K, np.zeros((3, 3)), np.full((3, 3), np.nan), np.diag([1e-9, 1e-9, 1.0]), -K]
        )
    )
    model, d = draw(
        st.sampled_from(
            [
                ("", []),
                ("plumb_bob", [0.0] * 5),
                ("plumb_bob", [0.1, 0, 0, 0, 0]),
                ("equidistant", [0.1, 0, 0, 0]),
                ("plumb_bob", [np.nan] * 5),
                ("plumb_bob", [0.1] * 9),
            ]
        )
    )
    height = draw(st.sampled_from([SIZE, SIZE + 1, 0]))
    return _info(stamp, k, height, SIZE, model, d)


@st.composite
def poses(draw, stamp):
    angle = draw(st.floats(0, 360))
    quaternion = draw(
        st.one_of(
            st.none(),
            st.lists(odd_float, min_size=4, max_size=4),
            st.just([0.0, 0.0, 0.0, 0.0]),
            st.just([0.0, 0.0, 0.0, 2.0]),
        )
    )
    pose = _pose(_T(angle), stamp, quaternion)
    if draw(st.booleans()):
        pose.pose.position.x = draw(odd_float)
    if draw(st.integers(0, 9)) == 0:
        pose.header.frame_id = "elsewhere"
    return pose


@st.composite
def shot_messages(draw):
    stamp = draw(stamps)
    messages = [draw(images(stamp)), draw(infos(stamp)), draw(poses(stamp))]
    order = draw(st.permutations(range(3)))
    return [messages[i] for i in order]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=shot_messages())
def test_malformed_messages_are_refused_with_a_reason_and_the_shots_kept(listener, messages):
    first = [s.image.copy() for s in listener.session.shots[:2]]
    before = sum(listener.rejections.values())
    for msg in messages:
        {Image: listener._on_image, CameraInfo: listener._on_info, PoseStamped: listener._on_pose}[
            type(msg)
        ](msg)
    assert set(listener.rejections) <= KNOWN, set(listener.rejections) - KNOWN
    assert sum(listener.rejections.values()) >= before
    assert len(listener.session) >= 2
    for a, shot in zip(first, listener.session.shots[:2], strict=True):
        np.testing.assert_array_equal(a, shot.image)
    for shot in listener.session.shots:
        assert np.isfinite(shot.image).all() and shot.image.ndim == 2
        assert shot.K[0, 0] > 0 and shot.K[1, 1] > 0
        R = np.asarray(shot.T_ref_source)[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)


def test_refusals_are_logged_once_a_second_per_reason_and_none_goes_unnamed(listener, capfd):
    """A 30 Hz stream of refused frames must not flood the log, and the last refusals of a
    burst must still reach it (with how many there were) once their reason's second is over."""
    from x23d_ros.ros.carm_listener import REJECT_LOG_PERIOD_S

    capfd.readouterr()
    for i in range(5):
        listener._reject("bad_image", f"frame {i}")
    listener._reject("stale_pose", "frame 5")
    listener._flush_refusals()  # within the second: nothing more
    lines = [x for x in capfd.readouterr().err.splitlines() if "shot refused" in x]
    assert len(lines) == 2 and "frame 0" in lines[0] and "frame 5" in lines[1]
    time.sleep(REJECT_LOG_PERIOD_S + 0.1)
    listener._flush_refusals()
    lines = [x for x in capfd.readouterr().err.splitlines() if "shot refused" in x]
    assert len(lines) == 1 and "frame 4" in lines[0] and "(3 more for this reason" in lines[0]
    assert listener.rejections["bad_image"] >= 5


def _send_shot(node, stamp: Time, angle: float, seed: int) -> None:
    image = np.random.default_rng(seed).random((SIZE, SIZE)).astype(np.float32)
    node._on_pose(_pose(_T(angle), stamp))
    node._on_info(_info(stamp))
    node._on_image(image_to_msg(image, stamp=stamp, frame_id="carm_source"))


def test_an_image_in_transit_at_a_reset_is_refused_and_later_ones_join_the_new_session(
    listener, monkeypatch
):
    """#23: an image acquired before `/x23d/reset` but received after it (in transit on DDS)
    belongs to the previous patient. Its stamp, moved into the node's clock by the arrival lag
    of the images before the reset (here the stamps run ~1.7e9 s behind the wall clock, as an
    unsynchronised C-arm's might), lies before the reset: refused as `before_reset`. An image
    acquired after the reset joins the new session; and the check lasts RESET_TRANSIT_S only,
    so a driver whose clock jumps back cannot lose more than that."""
    from std_srvs.srv import Trigger

    from x23d_ros.ros import carm_listener

    t0 = time.time()  # after the fixture's two shots (stamps 10 s, 11 s) have arrived
    old = listener.session.folder
    assert listener._srv_reset(Trigger.Request(), Trigger.Response()).success
    assert listener.session.folder != old and len(listener.session) == 0
    _send_shot(listener, Time(sec=10, nanosec=500_000_000), 45.0, 3)  # between the old two
    assert listener.rejections["before_reset"] == 1 and len(listener.session) == 0
    # Acquired after the reset: later than the last old shot by more than the time since.
    later = 11.0 + (time.time() - t0) + 1.0
    _send_shot(listener, Time(sec=int(later), nanosec=int(later % 1 * 1e9)), 45.0, 4)
    assert len(listener.session) == 1 and listener.rejections["before_reset"] == 1
    # Past RESET_TRANSIT_S, an old stamp is no longer taken for one in transit.
    monkeypatch.setattr(carm_listener, "RESET_TRANSIT_S", 0.0)
    _send_shot(listener, Time(sec=10, nanosec=800_000_000), 100.0, 5)
    assert len(listener.session) == 2 and listener.rejections["before_reset"] == 1
