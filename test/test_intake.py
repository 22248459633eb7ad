"""The listener's `domain: auto` (#22 item 1): each shot's domain from its encoding and values,
one domain per session, a shot of the other domain refused with a reason and the shots kept.

A real carm_listener node takes the messages through its own callbacks (as in test_fuzz);
test_bringup sends images over real DDS."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from test_fuzz import _T, SIZE, _info, _pose

from x23d_ros.pipeline import infer_domain
from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.session import ShotSession


def test_a_shots_domain_follows_its_encoding_then_its_values():
    mu = np.linspace(0.0, 2.6, 16, dtype=np.float32).reshape(4, 4)  # line integrals μ·L
    display = mu / 2.6
    assert infer_domain(np.zeros((4, 4), np.uint8), "mono8") == "realistic"
    assert infer_domain(np.zeros((4, 4), np.uint16), "mono16") == "realistic"
    assert infer_domain(np.zeros((4, 4), np.uint16), "16UC1") == "realistic"
    assert infer_domain(mu, "32FC1") == "synthetic"
    assert infer_domain(mu, "32FC1", "realistic") == "synthetic"  # values decide, not the session
    # Within [0, 1] both fit: the session's domain, else display values.
    assert infer_domain(display, "32FC1") == "realistic"
    assert infer_domain(display, "32FC1", "synthetic") == "synthetic"
    assert infer_domain(display, "32FC1", "auto") == "realistic"


@pytest.fixture
def auto_listener(tmp_path):
    from x23d_ros.ros.carm_listener import CArmListener

    params = [f"session_dir:={tmp_path}", "sync_wait_s:=0.01", "domain:=auto"]
    rclpy.init(args=["--ros-args", *(a for p in params for a in ("-p", p))])
    node = CArmListener()
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()


def _send(node, image: np.ndarray, angle: float, sec: int) -> None:
    stamp = Time(sec=sec)
    node._on_pose(_pose(_T(angle), stamp))
    node._on_info(_info(stamp))
    node._on_image(image_to_msg(image, stamp=stamp, frame_id="carm_source"))


def _frame(seed: int, dtype) -> np.ndarray:
    values = np.random.default_rng(seed).random((SIZE, SIZE))
    if dtype == np.float32:
        return (values * 2.6).astype(np.float32)  # μ·L
    return (values * np.iinfo(dtype).max).astype(dtype)


@pytest.mark.parametrize(
    ("first", "other", "domain"),
    [
        (np.uint8, np.float32, "realistic"),
        (np.uint16, np.float32, "realistic"),
        (np.float32, np.uint8, "synthetic"),
    ],
)
def test_auto_fixes_the_sessions_domain_on_its_first_shot_and_refuses_the_other(
    auto_listener, first, other, domain
):
    node = auto_listener
    assert node.session.meta["domain"] == "auto"
    for i, angle in enumerate((0.0, 60.0)):
        _send(node, _frame(i, first), angle, 10 + i)
    assert len(node.session) == 2, dict(node.rejections)
    assert node.session.meta["domain"] == domain
    shots = node.session.shot_set()
    assert shots.domain == domain
    image = np.asarray(shots.shots[0].image)
    if domain == "realistic":  # display frames scaled by their full scale to [0, 1]
        full = np.iinfo(first).max
        np.testing.assert_allclose(image, _frame(0, first) / full, rtol=1e-6)
    else:
        np.testing.assert_array_equal(image, _frame(0, first))
    # A shot of the other domain: refused with its reason, the two shots kept.
    _send(node, _frame(5, other), 120.0, 20)
    assert node.rejections["domain_mismatch"] == 1
    assert len(node.session) == 2
    # The same kind as the first ones is still accepted.
    _send(node, _frame(6, first), 120.0, 21)
    assert len(node.session) == 3 and node.session.meta["domain"] == domain


def test_a_reset_in_auto_starts_a_session_that_the_next_shot_decides(auto_listener):
    node = auto_listener
    _send(node, _frame(0, np.uint8), 0.0, 10)
    assert node.session.meta["domain"] == "realistic"
    node._srv_reset(None, type("R", (), {"success": False, "message": ""})())
    assert node.session.meta["domain"] == "auto" and len(node.session) == 0
    _send(node, _frame(1, np.float32), 0.0, 30)
    assert node.session.meta["domain"] == "synthetic" and len(node.session) == 1


def test_resuming_keeps_one_domain_per_session(tmp_path):
    realistic = ShotSession.new(tmp_path, "realistic")
    again, why = ShotSession.resume(tmp_path, "auto")
    assert why == "" and again.id == realistic.id  # auto continues a session of either domain
    other, why = ShotSession.resume(tmp_path, "synthetic")
    assert other.id != realistic.id and "holds realistic shots" in why
    # An auto session whose first shot has not come: a listener of either domain continues it,
    # and its first shot decides.
    undecided = ShotSession.new(tmp_path, "auto")
    resumed, why = ShotSession.resume(tmp_path, "synthetic")
    assert why == "" and resumed.id == undecided.id
    with pytest.raises(ValueError, match="synthetic or realistic"):
        resumed.set_domain("auto")
    resumed.set_domain("synthetic")
    assert ShotSession(resumed.folder).meta["domain"] == "synthetic"  # persisted
