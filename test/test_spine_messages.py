"""Reconstructions become planner messages in metres, with labels, colours and frames."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from scipy.spatial.transform import Rotation
from visualization_msgs.msg import Marker

from x23d_ros.pipeline import Reconstruction, VertebraSurface
from x23d_ros.ros import spine_messages as sm


def _recon() -> Reconstruction:
    rng = np.random.default_rng(0)
    vertebrae = {}
    for i, name in enumerate(("L2", "L4")):
        frame = np.eye(4)
        frame[:3, :3] = Rotation.from_rotvec([0.1 * i, 0.2, -0.3]).as_matrix()
        frame[:3, 3] = [10.0, -20.0, 100.0 - 40 * i]
        vertebrae[name] = VertebraSurface(
            level=name,
            probability=np.zeros((2, 2, 2), np.float32),
            affine=np.eye(4),
            vertices=rng.normal(0, 20, (6, 3)) + frame[:3, 3],
            faces=np.array([[0, 1, 2], [3, 4, 5]]),
            points=rng.normal(0, 20, (7, 3)) + frame[:3, 3],
            confidence=rng.random(7).astype(np.float32),
            frame=frame,
            centre_mm=frame[:3, 3],
        )
    return Reconstruction(vertebrae, ["L1", "L3", "L5"], {}, "cpu", 3)


def test_the_point_cloud_carries_points_in_metres_with_labels_and_confidence():
    recon = _recon()
    msg = sm.point_cloud(recon, "patient_ref", Time(sec=5))
    assert msg.header.frame_id == "patient_ref" and msg.width == 14 and msg.height == 1
    assert [f.name for f in msg.fields] == ["x", "y", "z", "confidence", "label"]
    assert len(msg.data) == msg.row_step == 14 * msg.point_step
    cloud = sm.read_point_cloud(msg)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1)
    expected = np.concatenate([recon.vertebrae[n].points for n in ("L2", "L4")]) / 1000
    np.testing.assert_allclose(xyz, expected, rtol=1e-6)
    assert cloud["label"].tolist() == [2] * 7 + [4] * 7
    np.testing.assert_allclose(cloud["confidence"][:7], recon.vertebrae["L2"].confidence)


def test_markers_clear_old_ones_then_draw_one_triangle_list_per_level():
    recon = _recon()
    markers = sm.marker_array(recon, "patient_ref", Time(sec=5)).markers
    assert markers[0].action == Marker.DELETEALL
    assert [(m.id, m.type) for m in markers[1:]] == [(2, Marker.TRIANGLE_LIST)] * 1 + [
        (4, Marker.TRIANGLE_LIST)
    ]
    l2 = markers[1]
    assert len(l2.points) == 6  # two triangles, three corners each
    assert l2.points[0].x == pytest.approx(recon.vertebrae["L2"].vertices[0, 0] / 1000)
    assert markers[1].color != markers[2].color


def test_meshes_and_frames_round_trip_in_metres():
    recon = _recon()
    v = recon.vertebrae["L4"]
    mesh = sm.mesh(v)
    assert [list(t.vertex_indices) for t in mesh.triangles] == v.faces.tolist()
    assert mesh.vertices[5].z == pytest.approx(v.vertices[5, 2] / 1000)
    poses = sm.pose_array(recon, "patient_ref", Time(sec=5)).poses
    assert len(poses) == 2
    q = poses[1].orientation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    np.testing.assert_allclose(R, v.frame[:3, :3], atol=1e-9)
    assert poses[1].position.z == pytest.approx(v.frame[2, 3] / 1000)


def test_an_empty_reconstruction_gives_an_empty_cloud():
    empty = Reconstruction({}, ["L1", "L2", "L3", "L4", "L5"], {}, "cpu", 3)
    msg = sm.point_cloud(empty, "patient_ref", Time(sec=5))
    assert msg.width == 0 and msg.row_step == 0 and len(msg.data) == 0
    assert len(sm.read_point_cloud(msg)) == 0


def test_collision_objects_carry_the_level_meshes_and_a_body_centre_subframe():
    from moveit_msgs.msg import CollisionObject

    from x23d_ros.ros import planner_scene as ps

    recon = _recon()
    objects = ps.collision_objects(recon, "patient_ref", Time(sec=5), prefix="spine/")
    assert [o.id for o in objects] == ["spine/L2", "spine/L4"]
    for o, name in zip(objects, ("L2", "L4"), strict=True):
        v = recon.vertebrae[name]
        assert o.operation == CollisionObject.ADD and o.header.frame_id == "patient_ref"
        assert o.pose.orientation.w == 1.0 and len(o.meshes) == len(o.mesh_poses) == 1
        assert len(o.meshes[0].vertices) == 6 and len(o.meshes[0].triangles) == 2
        assert o.meshes[0].vertices[1].y == pytest.approx(v.vertices[1, 1] / 1000)
        assert list(o.subframe_names) == ["body_centre"]
        centre = o.subframe_poses[0].position
        np.testing.assert_allclose([centre.x, centre.y, centre.z], v.frame[:3, 3] / 1000)
    removed = ps.removals(["spine/L2"], "patient_ref", Time(sec=6))
    assert removed[0].operation == CollisionObject.REMOVE and not removed[0].meshes


def test_static_frames_follow_the_vertebra_frames_and_the_registration_is_checked():
    from x23d_ros.ros import planner_scene as ps

    recon = _recon()
    frames = ps.vertebra_transforms(recon, "patient_ref", Time(sec=5), prefix="x_")
    assert [(t.header.frame_id, t.child_frame_id) for t in frames] == [
        ("patient_ref", "x_L2"),
        ("patient_ref", "x_L4"),
    ]
    q = frames[1].transform.rotation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    np.testing.assert_allclose(R, recon.vertebrae["L4"].frame[:3, :3], atol=1e-6)
    reg = ps.static_transform(
        "robot_base", "patient_ref", Time(sec=5), [1, 2, 3], [0, 0, 0, 1.0005]
    )
    assert reg.transform.rotation.w == pytest.approx(1.0, abs=1e-12)  # normalised
    assert reg.transform.translation.z == 3.0
    with pytest.raises(ValueError, match="unit quaternion"):
        ps.static_transform("robot_base", "patient_ref", Time(sec=5), [1, 2, 3], [0, 0, 0, 2])
    with pytest.raises(ValueError, match="translation"):
        ps.static_transform("robot_base", "patient_ref", Time(sec=5), [1, 2], [0, 0, 0, 1])
