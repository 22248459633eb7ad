"""The operator's count of a published spine (`Reconstruction.with_level_shift`): the names
move, the anatomy does not, and what leaves L1–L5 is withdrawn. The ROS service that applies it
is tested in test_bringup."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from x23d_ros.pipeline import (
    Reconstruction,
    VertebraSurface,
    describe_shift,
    expected_centres,
    levels_exposed,
)


def _vertebra(name: str, z: float) -> VertebraSurface:
    frame = np.eye(4)
    frame[2, 3] = z
    return VertebraSurface(
        level=name,
        probability=np.full((2, 2, 2), 0.9, np.float32),
        affine=np.eye(4),
        vertices=np.array([[0.0, 0.0, z], [1.0, 0.0, z], [0.0, 1.0, z]]),
        faces=np.array([[0, 1, 2]]),
        points=np.array([[0.0, 0.0, z]]),
        confidence=np.array([1.0]),
        frame=frame,
        centre_mm=np.array([0.0, 0.0, z]),
    )


def _found(names=("L1", "L2", "L3", "L4")) -> Reconstruction:
    """Levels as the networks named them, L1 highest (35 mm a level)."""
    return Reconstruction(
        vertebrae={n: _vertebra(n, -35.0 * i) for i, n in enumerate(names)},
        missing=[n for n in ("L1", "L2", "L3", "L4", "L5") if n not in names],
        timings_ms={},
        device="cpu",
        views=3,
        weights_sha256="ab" * 32,
        session="s1",
        shot_stamps=[1.0, 2.0, 3.0],
        agreement={n: 0.9 - 0.1 * i for i, n in enumerate(names)},
    )


def test_a_shift_of_one_moves_every_name_down_and_withdraws_what_leaves_the_lumbar_spine():
    found = _found(("L1", "L2", "L3", "L4", "L5"))
    counted = found.with_level_shift(+1)  # the vertebra named L1 is really L2
    assert list(counted.vertebrae) == ["L2", "L3", "L4", "L5"]
    assert counted.missing == ["L1"]
    # The anatomy stays where it was: what was called L1 is now L2, surface and all.
    assert counted.vertebrae["L2"].level == "L2"
    assert np.array_equal(counted.vertebrae["L2"].frame, found.vertebrae["L1"].frame)
    assert np.array_equal(counted.vertebrae["L5"].vertices, found.vertebrae["L4"].vertices)
    assert counted.agreement == {"L2": 0.9, "L3": 0.8, "L4": pytest.approx(0.7), "L5": 0.6}
    assert counted.level_shift == 1
    # Aligned with the published names: what the networks called each.
    assert counted.levels_as_found == ["L1", "L2", "L3", "L4"]
    assert found.levels_as_found == list(found.vertebrae)
    assert "withdrawn by the level shift (L5 as found)" in counted.notes[-1]
    # The same spine (its identity), and the found one untouched.
    assert counted.identity == found.identity and found.level_shift is None
    assert found.vertebrae["L1"].level == "L1"


def test_a_shift_of_minus_one_and_a_confirmation_as_found():
    found = _found(("L2", "L3", "L4", "L5"))
    down = found.with_level_shift(-1)  # the one named L2 is really L1
    assert list(down.vertebrae) == ["L1", "L2", "L3", "L4"] and down.missing == ["L5"]
    same = found.with_level_shift(0)
    assert list(same.vertebrae) == list(found.vertebrae) and same.level_shift == 0
    assert "names as found" in same.notes[-1]
    # Confirmed names lift the no-landmark warning: a person counted them.
    assert found.no_landmark and not same.no_landmark


def test_a_shift_starts_from_the_networks_names_and_cannot_leave_no_lumbar_level():
    found = _found()
    with pytest.raises(ValueError, match="as found"):
        found.with_level_shift(1).with_level_shift(1)
    with pytest.raises(ValueError, match="no lumbar level"):
        found.with_level_shift(5)
    assert found.with_level_shift(4).vertebrae.keys() == {"L5"}
    assert describe_shift(1) == "names moved +1 (found L1 is L2)"
    assert describe_shift(-2) == "names moved -2 (found L3 is L1)"


def test_the_identity_changes_with_the_shots_the_weights_and_the_session():
    found = _found()
    again = _found()
    assert found.identity == again.identity and len(found.identity) == 16
    for change in (
        {"shot_stamps": [1.0, 2.0, 3.5]},
        {"weights_sha256": "cd" * 32},
        {"session": "s2"},
        {"adaptation": "style transfer style.pt 1a2b3c4d"},
        {"orientation": "estimated"},
        {"patient_axes": np.diag([1.0, -1.0, -1.0])},
    ):
        other = _found()
        for key, value in change.items():
            setattr(other, key, value)
        assert other.identity != found.identity, change


def test_a_shift_exposes_the_end_levels_no_name_of_the_networks_reaches():
    assert levels_exposed(0) == []
    assert levels_exposed(1) == ["L1"] and levels_exposed(2) == ["L1", "L2"]
    assert levels_exposed(-1) == ["L5"] and levels_exposed(-2) == ["L4", "L5"]


def test_an_exposed_level_is_placed_one_local_step_beyond_its_two_neighbours():
    # A lordotic spine: the step turns from level to level.
    z = {"L1": 0.0, "L2": -34.0, "L3": -68.0, "L4": -100.0, "L5": -130.0}
    y = {"L1": 0.0, "L2": 3.0, "L3": 8.0, "L4": 15.0, "L5": 24.0}
    vertebrae = {}
    for n in z:
        v = _vertebra(n, z[n])
        v.centre_mm[1] = y[n]
        vertebrae[n] = v
    found = {n: vertebrae[n] for n in ("L2", "L3", "L4")}
    placed = expected_centres(found, ["L1", "L5"])
    # Beyond L2 by the step L3 → L2; beyond L4 by the step L3 → L4.
    np.testing.assert_allclose(placed["L1"], [0.0, -2.0, 0.0])
    np.testing.assert_allclose(placed["L5"], [0.0, 22.0, -132.0])
    # More than one step beyond the found levels: not placed.
    assert expected_centres({n: vertebrae[n] for n in ("L3", "L4")}, ["L1", "L2"]).keys() == {"L2"}
    # One step beyond L2 whose inner neighbour L3 is missing: the step of the line through all.
    gap = expected_centres({n: vertebrae[n] for n in ("L2", "L4", "L5")}, ["L1"])
    for axis, values in ((1, y), (2, z)):
        slope = np.polyfit([2, 4, 5], [values[n] for n in ("L2", "L4", "L5")], 1)[0]
        assert gap["L1"][axis] == pytest.approx(values["L2"] - slope)
    with pytest.raises(ValueError, match="two levels"):
        expected_centres({"L3": vertebrae["L3"]}, ["L1"])


def test_levels_reconstructed_where_the_count_puts_them_join_the_confirmed_spine():
    counted = _found(("L1", "L2", "L3", "L4", "L5")).with_level_shift(1)
    extra = Reconstruction(
        vertebrae={"L1": _vertebra("L1", 35.0)},
        missing=["L2", "L3", "L4", "L5"],
        timings_ms={},
        device="cpu",
        views=3,
        agreement={"L1": 0.8},
    )
    whole = counted.with_levels(extra, ["L1"])
    assert list(whole.vertebrae) == ["L1", "L2", "L3", "L4", "L5"] and whole.missing == []
    assert whole.vertebrae["L1"] is extra.vertebrae["L1"] and whole.agreement["L1"] == 0.8
    assert whole.level_shift == 1 and whole.identity == counted.identity
    assert whole.levels_as_found == ["-", "L1", "L2", "L3", "L4"]
    assert "L1 reconstructed where the operator's count puts it" in whole.notes[-1]
    # A level the fine stage did not reconstruct there stays missing, and says so.
    empty = replace(extra, vertebrae={}, missing=["L1", *extra.missing])
    partial = counted.with_levels(empty, ["L1"])
    assert partial.missing == ["L1"] and "L1: not reconstructed" in partial.notes[-1]


def test_the_publisher_never_puts_out_a_confirmation_of_a_spine_it_no_longer_holds(ros_domain_id):
    """The guards of `SpinePublisher.confirm` (a real node, in this process): a confirmed
    spine goes out only while the spine it renames is the one on the topics; a new
    reconstruction brings back unconfirmed names; a result for an older confirmation (`still`)
    and any confirmation after a reset are dropped."""
    import rclpy
    from test_spine_messages import reconstruction

    from x23d_ros.ros.spine_publisher import SpinePublisher

    first = replace(reconstruction(), session="s1", shot_stamps=[1.0, 2.0, 3.0])
    second = replace(first, shot_stamps=[1.0, 2.0, 3.0, 4.0])  # a fourth shot came
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        publisher = SpinePublisher(context=context)
        publisher.set_session("s1")
        publisher.set_active(True)
        assert publisher.publish(first)
        ok, message, levels = publisher.confirm(first.identity, -1)  # their L2 is L1
        assert ok and levels == ["L1", "L3"], message
        assert publisher.current.level_shift == -1
        assert publisher.current.vertebrae["L1"].frame is first.vertebrae["L2"].frame
        # Only one level step beyond a published level is placed: L5 (their "sacrum") is two
        # steps beyond L3, so it is said, not reconstructed.
        assert "L5 not reconstructed: more than one level beyond" in message
        # A confirmation made for the first spine, arriving after the second went out: dropped.
        stale = first.with_level_shift(-1)
        assert publisher.publish(second)
        assert publisher.current.level_shift is None  # the networks' names again
        assert not publisher.publish(stale)
        assert publisher.current is not None and publisher.current.identity == second.identity
        ok, message, _ = publisher.confirm(first.identity, 0)
        assert not ok and "not the published spine" in message
        # A result queued by a confirmation that another one has since replaced: dropped.
        assert publisher.confirm(second.identity, 1)[0]
        generation = publisher._confirmation
        assert publisher.confirm(second.identity, 0)[0]
        late = second.with_level_shift(1)
        assert not publisher.publish(late, still=lambda: publisher._confirmation == generation)
        assert publisher.current.level_shift == 0
        # The count is kept (with the networks' names): the same spine published again (a
        # restart, a reactivation) goes out as counted; the same shots named otherwise do not.
        assert publisher.stored == (second.identity, 0, ["L2", "L4"])
        assert publisher.publish(second) and publisher.current.level_shift == 0
        renamed = replace(second, vertebrae={"L3": second.vertebrae["L2"]})
        assert publisher.publish(renamed) and publisher.current.level_shift is None
        # After a reset (a new session), nothing to confirm, and the kept count is gone.
        publisher.withdraw("reset", session="s2")
        assert publisher.stored is None
        ok, message, _ = publisher.confirm(second.identity, 0)
        assert not ok and "nothing is published" in message
        assert not publisher.publish(second.with_level_shift(0))
        assert (publisher.confirmations, publisher.confirmations_refused) == (4, 2)
    finally:
        rclpy.shutdown(context=context)
