"""The stamp matcher pairs images with camera info and pose, and reports what never came."""

from __future__ import annotations

import pytest

from x23d_ros.ros.sync import StampMatcher, nearest_sample


def test_an_image_leaves_with_the_nearest_info_and_pose_within_tolerance():
    m = StampMatcher(tolerance_s=0.05, need_pose=True)
    for t in (0.90, 0.97, 1.02, 1.20):
        assert m.add_pose(t, f"pose@{t}") == ([], [])
    assert m.add_image(1.0, "image") == ([], [])  # no camera info yet: it waits
    matches, expired = m.add_info(1.0, "info")
    assert expired == [] and len(matches) == 1
    match = matches[0]
    assert (match.image, match.info, match.pose, match.pose_stamp) == (
        "image",
        "info",
        "pose@1.02",
        1.02,
    )
    assert m.pending() == 0


def test_poses_outside_the_tolerance_do_not_match_and_the_image_expires_as_stale_pose():
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=1.0)
    m.add_pose(0.5, "old pose")
    m.add_info(1.0, "info")
    assert m.add_image(1.0, "image") == ([], [])
    matches, expired = m.add_info(2.5, "later info")  # time moves on past wait_s
    assert matches == [] and [(e.image, e.reason) for e in expired] == [("image", "stale_pose")]
    assert "-0.500 s" in expired[0].detail


def test_an_image_expires_as_missing_pose_when_no_pose_ever_came():
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=1.0)
    m.add_image(1.0, "image")
    m.add_info(1.0, "info")
    _, expired = m.add_info(2.5, "later info")
    assert [e.reason for e in expired] == ["missing_pose"]


def test_an_image_without_camera_info_expires_with_that_reason_and_others_still_match():
    m = StampMatcher(tolerance_s=0.01, need_pose=False, wait_s=1.0)
    m.add_image(1.0, "orphan")
    _, expired = m.add_image(3.0, "second")  # the newest stamp is now 2 s past the orphan
    assert [(e.image, e.reason) for e in expired] == [("orphan", "missing_camera_info")]
    matches, expired = m.add_info(3.0, "info")
    assert expired == []
    assert [x.image for x in matches] == ["second"] and matches[0].pose is None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="tolerance"):
        StampMatcher(tolerance_s=-1, need_pose=True)


def test_at_30_hz_an_image_waits_for_its_own_pose_not_the_previous_frames():
    """The previous frame's pose (33 ms earlier) is within the 50 ms tolerance; the image must
    not leave with it while its own may still come. Once the pose stream has passed the
    image, or the wait is over, the nearest there is serves."""
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=1.0)
    m.add_pose(1.0, "pose 1.000")
    m.add_info(1.0, "info 1.000")
    m.add_info(1.0333, "info 1.033")
    assert m.add_image(1.0333, "image 1.033") == ([], [])  # its pose is on its way
    matches, _ = m.add_pose(1.0333, "pose 1.033")
    assert [(x.image, x.pose) for x in matches] == [("image 1.033", "pose 1.033")]
    # A pose stream slower than the images: the older pose serves once a newer one has come.
    m.add_info(1.07, "info 1.070")
    assert m.add_image(1.07, "image 1.070") == ([], [])
    matches, _ = m.add_pose(1.2, "pose 1.200")
    assert [(x.image, x.pose) for x in matches] == [("image 1.070", "pose 1.033")]
    # A pose stream that stops: at the end of the wait, the nearest within tolerance serves.
    m.add_info(2.0, "info 2.000")
    m.add_pose(1.98, "pose 1.980")
    assert m.add_image(2.0, "image 2.000") == ([], [])
    matches, expired = m.add_info(3.1, "info 3.100")
    assert expired == [] and [(x.image, x.pose) for x in matches] == [("image 2.000", "pose 1.980")]


def test_a_reset_drops_the_waiting_images_but_keeps_infos_and_poses():
    """Images still waiting at a reset were acquired for the old session: they must not be
    matched into the new one. The C-arm's infos and poses stay usable."""
    m = StampMatcher(tolerance_s=0.05, need_pose=True)
    m.add_info(1.0, "info")
    m.add_image(1.0, "old patient's image")  # waits for its pose
    assert m.drop_images() == 1 and m.pending() == 0
    assert m.add_pose(1.0, "pose") == ([], [])  # nothing left to match
    matches, _ = m.add_image(1.0, "new image")  # the same stamps serve a new shot
    assert [x.image for x in matches] == ["new image"]


def test_nearest_sample_waits_for_the_image_own_sample_and_says_none_once_the_stream_passed():
    samples = [(0.95, "old"), (1.20, "late")]
    assert nearest_sample([], 1.0, 0.1, final=False) == (None, "wait")
    assert nearest_sample(samples[:1], 1.0, 0.1, final=False) == ((0.95, "old"), "wait")
    assert nearest_sample(samples[:1], 1.0, 0.1, final=True) == ((0.95, "old"), "match")
    assert nearest_sample(samples, 1.0, 0.1, final=False) == ((0.95, "old"), "match")
    assert nearest_sample(samples, 1.5, 0.1, final=False) == ((1.20, "late"), "wait")
    assert nearest_sample(samples, 1.1, 0.05, final=True) == ((1.20, "late"), "none")


def test_waiting_images_are_bounded_when_no_stream_advances():
    """A driver that leaves every stamp at 0 and sends no camera info: without a bound every
    frame of a 30 Hz stream would wait for ever (a megabyte each at 512²). The newest stay."""
    m = StampMatcher(tolerance_s=0.05, need_pose=True, max_pending=8)
    reasons, gone = [], []
    for i in range(100):
        _, expired = m.add_image(0.0, i)
        reasons += [e.reason for e in expired]
        gone += [e.image for e in expired]
    assert m.pending() == 8
    assert reasons == ["sync_overflow"] * 92 and sorted(gone) == list(range(92))
    # By default the bound is what the wait holds at 30 Hz, and some.
    assert StampMatcher(0.05, True, wait_s=2.0).max_pending >= 2.05 * 30
    assert StampMatcher(0.05, True, wait_s=10.0).max_pending >= 10.05 * 30


def test_the_image_an_update_matches_is_not_dropped_by_the_bound():
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=1.0, max_pending=2)
    m.add_info(0.98, "info")
    m.add_pose(0.98, "pose")
    assert m.add_image(1.0, "first") == ([], [])  # its streams have not passed it yet
    m.add_image(1.5, "second")
    matches, expired = m.add_image(2.1, "third")  # 1.1 s past "first": it takes what there is
    assert [x.image for x in matches] == ["first"] and expired == []
    assert m.pending() == 2


def test_images_late_by_almost_the_wait_still_find_their_own_info_and_pose_at_30_hz(fake_clock):
    """Images that reach the listener 1.9 s after their camera info and pose (a busy
    process): each must leave with its own, although 57 newer ones of each came meanwhile."""
    clock = fake_clock
    m = StampMatcher(tolerance_s=0.01, need_pose=True, wait_s=2.0, clock=clock)
    matches, expired = [], []
    for i in range(300):
        clock.now = t = i / 30
        for found, lost in (m.add_info(t, f"info {i}"), m.add_pose(t, f"pose {i}")):
            matches += found
            expired += lost
        late = i - 57  # the image stamped 1.9 s earlier arrives now
        if late >= 0:
            found, lost = m.add_image(late / 30, f"image {late}")
            matches += found
            expired += lost
    assert expired == [] and len(matches) == 243
    assert all(x.info == x.image.replace("image", "info") for x in matches)
    assert all(x.pose == x.image.replace("image", "pose") for x in matches)
    # What is kept covers the wait (and a second), not the whole stream.
    assert len(m.infos) <= (2.0 + 0.01 + 1.0) * 30 + 2 and len(m.poses) == len(m.infos)


def test_an_image_later_than_the_wait_still_matches_its_kept_info_and_pose(fake_clock):
    """Slow streams (5 Hz) and an image stamped 2.8 s before the newest stamp: it leaves at
    once, with its own info and pose, as long as they are kept."""
    clock = fake_clock
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=2.0, clock=clock)
    for i in range(30):
        clock.now = t = i / 5
        m.add_info(t, f"info {t:.1f}")
        m.add_pose(t, f"pose {t:.1f}")
    matches, expired = m.add_image(3.0, "late image")  # the newest stamp is 5.8
    assert expired == [] and [(x.info, x.pose) for x in matches] == [("info 3.0", "pose 3.0")]


def test_stamps_that_jump_back_do_not_wedge_the_matcher(fake_clock):
    """A driver or a bag that restarts on another clock: within the keeping time the old
    samples leave, and the new clock's images are matched with their own samples again."""
    clock = fake_clock
    m = StampMatcher(tolerance_s=0.01, need_pose=True, wait_s=2.0, clock=clock)
    matched = []

    def frame(t: float, i: int) -> None:
        m.add_info(t, f"info {i}")
        m.add_pose(t, f"pose {i}")
        found, _ = m.add_image(t, f"image {i}")
        matched.extend((x.image, x.info, x.pose) for x in found)

    for i in range(60):
        clock.now = i / 30
        frame(1000 + i / 30, i)
    for i in range(60, 300):  # the stamps start again at 10 s
        clock.now = i / 30
        frame(10 + i / 30, i)
    new_clock = [x for x in matched if int(x[0].split()[1]) >= 60]
    assert all(
        image.split()[1] == info.split()[1] == pose.split()[1] for image, info, pose in matched
    )
    assert len(new_clock) >= 240 - 4 * 30  # all but the keeping time's after the jump
    assert m.newest < 100  # the old clock's stamps are gone


def test_nearest_sample_breaks_ties_by_the_older_stamp_then_the_first_to_come():
    samples = [(0.97, "first"), (0.97, "second"), (1.03, "after")]
    assert nearest_sample(samples, 1.0, 0.05, final=True)[0] == (0.97, "first")
    assert nearest_sample(samples, 0.95, 0.05, final=True)[0] == (0.97, "first")
    assert nearest_sample(samples, 1.02, 0.05, final=True)[0] == (1.03, "after")


def test_the_last_sample_to_come_is_kept_however_old(fake_clock):
    clock = fake_clock
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=1.0, clock=clock)
    m.add_pose(1.0, "the only pose")
    clock.now = 100.0
    m.add_info(100.0, "info")
    m.add_image(100.0, "image")
    assert m.poses == [(1.0, "the only pose")]  # so an expiry can say how stale the pose is
    _, expired = m.add_info(102.0, "later info")
    assert [e.reason for e in expired] == ["stale_pose"] and "-99.000 s" in expired[0].detail


def test_the_last_image_of_a_stream_that_stops_leaves_once_its_wait_is_over(fake_clock):
    """A C-arm's last frame, its info and pose sent before it and nothing after: no arrival
    decides it, so `poll` (the listener's timer) does once it has waited `keep_s` on the wall
    clock; until then it waits for a nearer sample that may still come."""
    clock = fake_clock
    m = StampMatcher(tolerance_s=0.05, need_pose=True, wait_s=2.0, clock=clock)
    m.add_info(9.98, "info")
    m.add_pose(9.99, "pose")
    assert m.add_image(10.0, "last") == ([], [])  # a pose after it may still come
    clock.now = m.keep_s - 0.1
    assert m.poll() == ([], []) and m.pending() == 1
    clock.now = m.keep_s + 0.1
    matches, expired = m.poll()
    assert expired == [] and [(x.image, x.info, x.pose) for x in matches] == [
        ("last", "info", "pose")
    ]
    assert m.pending() == 0
    # Without a pose within the tolerance it expires with its reason instead.
    m.add_info(20.0, "info")
    m.add_image(20.0, "no pose near")
    clock.now += m.keep_s + 0.1
    assert [e.reason for e in m.poll()[1]] == ["stale_pose"]
