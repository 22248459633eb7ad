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
    session_id = session.id
    del session  # the process dies here
    resumed, why = ShotSession.resume(tmp_path)
    assert why == "" and len(resumed) == 2 and resumed.meta["shots"] == 2
    for a, b in zip(shots, resumed.shots, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.T_ref_source, b.T_ref_source)
        assert a.stamp == b.stamp
    resumed.add(_shot(45))
    assert len(resumed.shot_set().shots) == 3
    assert resumed.shot_set().session == resumed.id == session_id
    assert sorted(p.name for p in resumed.folder.iterdir()) == [
        "session.json",
        "shot_000.npz",
        "shot_001.npz",
        "shot_002.npz",
    ]
    fresh = ShotSession.new(tmp_path)
    assert fresh.folder != resumed.folder and len(fresh) == 0
    assert ShotSession.resume(tmp_path)[0].folder == fresh.folder


def test_only_a_recent_session_of_the_same_patient_is_resumed(tmp_path):
    """#23: a restart the next morning, or for another patient, starts a new session and says
    why; within the age limit and for the same patient the shots come back."""
    session = ShotSession.new(tmp_path, patient_id="P-17")
    session.add(_shot(0))
    updated = session.meta["updated"]
    resumed, why = ShotSession.resume(tmp_path, max_age_s=1800, patient_id="P-17", now=updated + 60)
    assert why == "" and resumed.id == session.id and len(resumed) == 1
    late, why = ShotSession.resume(tmp_path, max_age_s=1800, now=updated + 12 * 3600)
    assert late.id != session.id and len(late) == 0 and "old" in why
    # (the newest session is now the empty one just made: resume the shots' one by age again)
    late.folder.joinpath("session.json").unlink()
    late.folder.rmdir()
    other, why = ShotSession.resume(tmp_path, max_age_s=1800, patient_id="P-18", now=updated + 60)
    assert other.id != session.id and len(other) == 0 and "P-17" in why
    assert other.meta["patient_id"] == "P-18"


def test_a_damaged_session_is_set_aside_with_its_reason_not_resumed_and_not_deleted(tmp_path):
    """#23: a session.json cut short by a crash, or a damaged shot file: the folder is renamed
    with the reason beside it, and a new session starts."""
    for damage in ("meta", "shot", "types"):
        root = tmp_path / damage
        session = ShotSession.new(root)
        session.add(_shot(0))
        if damage == "meta":
            (session.folder / "session.json").write_text('{"id": "x", "shots"')
        elif damage == "types":  # valid JSON, written by something else
            (session.folder / "session.json").write_text('{"id": "x", "updated": null}')
        else:
            (session.folder / "shot_000.npz").write_bytes(b"PK\x03\x04 not a zip")
        fresh, why = ShotSession.resume(root)
        assert fresh.id != session.id and len(fresh) == 0 and "cannot be read" in why
        aside = root / f"{session.folder.name}.set-aside"
        assert (aside / "shot_000.npz").exists() and not session.folder.exists()
        assert (aside / "SET_ASIDE.txt").read_text().strip()
        # The set-aside folder is never picked again.
        assert ShotSession.resume(root)[0].id == fresh.id
    # A shot written under its temporary name (a crash mid-write) is no shot.
    session = ShotSession.new(tmp_path / "tmp")
    session.add(_shot(0))
    (session.folder / "shot_001.tmp.npz").write_bytes(b"half")
    resumed, why = ShotSession.resume(tmp_path / "tmp")
    assert why == "" and len(resumed) == 1


def test_a_session_too_old_to_resume_is_judged_by_its_record_alone(tmp_path):
    """Whether to resume is decided from session.json: an old session's shots are not read
    (a start costs nothing however large it is), so an old folder with a damaged shot is left
    as it is, and the reason given is its age."""
    session = ShotSession.new(tmp_path)
    session.add(_shot(0))
    (session.folder / "shot_000.npz").write_bytes(b"PK\x03\x04 not a zip")
    updated = session.meta["updated"]
    fresh, why = ShotSession.resume(tmp_path, max_age_s=1800, now=updated + 12 * 3600)
    assert fresh.id != session.id and "old" in why
    assert session.folder.exists() and not any(tmp_path.glob("*.set-aside"))


def test_the_operators_count_is_kept_with_the_session_and_a_damaged_one_is_ignored(tmp_path):
    session = ShotSession(tmp_path / "s")
    assert session.level_confirmation() is None
    session.add(_shot(0.0))
    session.record_confirmation("0123456789abcdef", -1, ["L2", "L3"])
    reopened = ShotSession(tmp_path / "s")
    assert reopened.level_confirmation() == ("0123456789abcdef", -1, ["L2", "L3"])
    assert len(reopened) == 1
    reopened.meta["level_confirmation"] = {"reconstruction": "x", "shift": 1}  # no names
    assert reopened.level_confirmation() is None
