"""Shots are checked before they join a session, and a session survives a restart."""

from __future__ import annotations

import numpy as np
import pytest

from x23d_ros import geometry
from x23d_ros.pipeline import Shot
from x23d_ros.session import REASONS, ShotChecks, ShotRejectedError, ShotSession, check_shot

K = geometry.intrinsics(1000.0, 2.3, 64, 64)


def _shot(angle_deg: float, stamp: float = 10.0) -> Shot:
    a = np.radians(angle_deg)
    T = geometry.look_at(600 * np.array([np.sin(a), -np.cos(a), 0.0]), np.zeros(3), [0, 0, 1])
    image = np.random.default_rng(int(angle_deg * 10)).random((64, 64)).astype(np.float32)
    return Shot(image, K, T, stamp)


def _with(shot: Shot, **changes) -> Shot:
    fields = {"image": shot.image, "K": shot.K, "T_ref_source": shot.T_ref_source, "stamp": 10.0}
    return Shot(**{**fields, **changes})


def _bad_rotation() -> np.ndarray:
    T = _shot(0).T_ref_source.copy()
    T[:3, 0] *= 1.1
    return T


@pytest.mark.parametrize(
    ("shot", "kwargs", "reason"),
    [
        (_with(_shot(0), image=np.zeros(64)), {}, "image_shape"),
        (_with(_shot(0), image=np.full((64, 64), np.nan)), {}, "image_values"),
        (_shot(0), {"info_size": (64, 48)}, "size_mismatch"),
        (_with(_shot(0), K=K * np.nan), {}, "intrinsics"),
        (_with(_shot(0), K=np.diag([-1000.0, 1000.0, 1.0])), {}, "intrinsics"),
        (_with(_shot(0), T_ref_source=np.full((4, 4), np.nan)), {}, "pose_values"),
        (_with(_shot(0), T_ref_source=_bad_rotation()), {}, "rotation"),
        (_shot(0, stamp=10.0), {"pose_stamp": 7.0}, "stale_pose"),
        (_shot(92.0), {}, "duplicate_view"),
    ],
)
def test_each_bad_shot_is_refused_with_its_reason(shot, kwargs, reason):
    collected = [_shot(90.0)]
    with pytest.raises(ShotRejectedError) as error:
        check_shot(shot, collected, ShotChecks(min_view_separation_deg=5.0), **kwargs)
    assert error.value.reason == reason
    assert REASONS[reason] in str(error.value)


def test_a_good_shot_passes_and_a_full_session_refuses_more():
    check_shot(_shot(0), [_shot(90)], pose_stamp=9.9, info_size=(64, 64))
    full = [_shot(a) for a in (0, 30, 60)]
    with pytest.raises(ShotRejectedError, match="3 shots"):
        check_shot(_shot(90), full, ShotChecks(max_shots=3))


def test_a_session_resumed_after_a_restart_has_every_shot_bit_for_bit(tmp_path):
    session = ShotSession.new(tmp_path, domain="synthetic")
    shots = [_shot(0), _shot(90, stamp=None)]
    for shot in shots:
        session.add(shot)
    del session  # the process dies here
    resumed = ShotSession.resume(tmp_path)
    assert len(resumed) == 2 and resumed.meta["shots"] == 2
    for a, b in zip(shots, resumed.shots, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.T_ref_source, b.T_ref_source)
        assert a.stamp == b.stamp
    resumed.add(_shot(45))
    assert len(resumed.shot_set().shots) == 3
    assert sorted(p.name for p in resumed.folder.iterdir()) == [
        "session.json",
        "shot_000.npz",
        "shot_001.npz",
        "shot_002.npz",
    ]
    fresh = ShotSession.new(tmp_path)
    assert fresh.folder != resumed.folder and len(fresh) == 0
    assert ShotSession.resume(tmp_path).folder == fresh.folder
