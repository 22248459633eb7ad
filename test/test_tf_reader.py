"""TfTree: the listener's TF lookups where tf2_ros is not installed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from x23d_ros.ros.tf_reader import TfTree


def _rigid(seed: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = np.random.default_rng(seed).normal(0, 100, 3)
    return T


def test_a_lookup_chains_links_through_the_common_ancestor_at_the_nearest_sample():
    tree = TfTree(tolerance_s=0.1)
    world_room, room_ref, room_base = _rigid(1), _rigid(2), _rigid(3)
    tree.add("world", "room", world_room, stamp=5.0)  # stale, but above the common ancestor
    tree.add("room", "patient_ref", room_ref, stamp=None)
    tree.add("room", "carm_base", room_base, stamp=None)
    early, late = _rigid(4), _rigid(5)
    tree.add("carm_base", "carm_source", late, stamp=10.5)
    tree.add("carm_base", "carm_source", early, stamp=10.0)  # out of order is fine
    got = tree.lookup("patient_ref", "carm_source", 10.04)
    np.testing.assert_allclose(got, np.linalg.inv(room_ref) @ room_base @ early, atol=1e-9)
    got = tree.lookup("patient_ref", "carm_source", 10.45)
    np.testing.assert_allclose(got, np.linalg.inv(room_ref) @ room_base @ late, atol=1e-9)
    np.testing.assert_allclose(tree.lookup("carm_source", "carm_source", 0.0), np.eye(4))


def test_a_lookup_says_why_it_cannot_answer():
    tree = TfTree(tolerance_s=0.1)
    tree.add("patient_ref", "carm_source", _rigid(1), stamp=10.0)
    tree.add("robot_base", "tool", _rigid(2), stamp=None)
    with pytest.raises(LookupError, match="nearest sample"):
        tree.lookup("patient_ref", "carm_source", 10.5)
    with pytest.raises(LookupError, match="not connected"):
        tree.lookup("patient_ref", "tool", 10.0)


def test_an_older_sample_counts_only_once_the_link_has_passed_the_stamp_or_at_the_end():
    """At a tracker's rate the previous sample lies within the tolerance: while nothing at or
    after the image's stamp has come, the image's own may be on its way (TfNotYetError, it waits);
    once one has come, or when it waits no longer (`final`), the nearest within the
    tolerance answers."""
    from x23d_ros.ros.tf_reader import TfNotYetError

    tree = TfTree(tolerance_s=0.1)
    previous, own = _rigid(1), _rigid(2)
    tree.add("patient_ref", "carm_source", previous, stamp=9.99)
    with pytest.raises(TfNotYetError, match="at or after"):
        tree.lookup("patient_ref", "carm_source", 10.0, final=False)
    np.testing.assert_allclose(tree.lookup("patient_ref", "carm_source", 10.0), previous)
    tree.add("patient_ref", "carm_source", own, stamp=10.0)
    np.testing.assert_allclose(
        tree.lookup("patient_ref", "carm_source", 10.0, final=False), own, atol=1e-12
    )
    # Unconnected frames and a link not seen yet may still come: not yet, not never.
    with pytest.raises(TfNotYetError):
        tree.lookup("patient_ref", "tracker", 10.0, final=False)


def test_samples_are_kept_by_the_wall_clock_so_stamps_that_jump_back_recover(fake_clock):
    """A tracker (or a bag) restarts and its stamps jump back by an hour: the old samples,
    stamped in the 'future', leave within keep_s of their arrival, after which the new stamps
    answer as before; the last sample to arrive stays however old, and the count is bounded."""
    from x23d_ros.ros.tf_reader import TfNotYetError

    clock = fake_clock
    tree = TfTree(tolerance_s=0.05, keep_s=3.0, history=50, clock=clock)
    old = _rigid(1)
    for k in range(100):  # 100 Hz for 1 s at t = 3600 s
        clock.now = 0.01 * k
        tree.add("patient_ref", "carm_source", old, stamp=3600.0 + 0.01 * k)
    assert len(tree.samples("carm_source")) == 50  # the count bound
    # The restart: stamps near 10 s. Before keep_s has passed, a new image's stamp sees the
    # old samples as "passed" and its own new sample answers once it has come.
    new = _rigid(2)
    clock.now = 1.5
    tree.add("patient_ref", "carm_source", new, stamp=10.0)
    np.testing.assert_allclose(
        tree.lookup("patient_ref", "carm_source", 10.0, final=False), new, atol=1e-12
    )
    # Once keep_s has passed since the old samples came, only the newest arrival is left.
    clock.now = 1.0 + 3.0 + 0.01
    assert [s for s, _ in tree.samples("carm_source")] == [10.0]
    # ... and with no sample at or after 10.02 s, the nearest may still change: not yet.
    with pytest.raises(TfNotYetError, match="at or after"):
        tree.lookup("patient_ref", "carm_source", 10.02, final=False)
    # The last arrival stays however long the link is silent.
    clock.now = 1e6
    np.testing.assert_allclose(tree.lookup("patient_ref", "carm_source", 10.0), new)
