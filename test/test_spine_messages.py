"""Reconstructions become planner messages in metres, with labels, colours and frames."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from scipy.spatial.transform import Rotation
from visualization_msgs.msg import Marker

from x23d_ros.pipeline import Reconstruction, VertebraSurface
from x23d_ros.ros import planner_scene as ps
from x23d_ros.ros import spine_messages as sm
from x23d_ros.ros.spine_publisher import gc_paused


def reconstruction() -> Reconstruction:
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
            faces=np.array([[0, 1, 2], [5, 3, 4]]),
            points=rng.normal(0, 20, (7, 3)) + frame[:3, 3],
            confidence=rng.random(7).astype(np.float32),
            frame=frame,
            centre_mm=frame[:3, 3],
        )
    return Reconstruction(vertebrae, ["L1", "L3", "L5"], {}, "cpu", 3)


def test_the_point_cloud_carries_points_in_metres_with_labels_and_confidence():
    recon = reconstruction()
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
    recon = reconstruction()
    markers = sm.marker_array(recon, "patient_ref", Time(sec=5)).markers
    assert markers[0].action == Marker.DELETEALL
    assert [(m.id, m.type) for m in markers[1:]] == [(2, Marker.TRIANGLE_LIST)] * 1 + [
        (4, Marker.TRIANGLE_LIST)
    ]
    l2 = markers[1]
    assert len(l2.points) == 6  # two triangles, three corners each
    v = recon.vertebrae["L2"]
    corners = np.array([[p.x, p.y, p.z] for p in l2.points])
    np.testing.assert_allclose(corners, v.vertices[v.faces.reshape(-1)] / 1000)
    assert markers[1].color != markers[2].color


def test_one_set_of_meshes_serves_the_mesh_topics_markers_and_collision_objects():
    """A publish builds each level's mesh once; the markers and the MoveIt objects reuse it
    (building them three times was most of a publish's time) and say the same."""
    recon = reconstruction()
    level_meshes = sm.meshes(recon)
    assert list(level_meshes) == ["L2", "L4"]
    markers = sm.marker_array(recon, "patient_ref", Time(sec=5), level_meshes).markers
    objects = ps.collision_objects(recon, "patient_ref", Time(sec=5), "", level_meshes)
    for marker, obj, name in zip(markers[1:], objects, ("L2", "L4"), strict=True):
        vertices = level_meshes[name].vertices
        faces = recon.vertebrae[name].faces.reshape(-1)
        assert all(p is vertices[i] for p, i in zip(marker.points, faces, strict=True))
        assert obj.meshes[0] is level_meshes[name]
    # Without them, each builds its own, the same.
    alone = sm.marker_array(recon, "patient_ref", Time(sec=5)).markers
    assert [list(m.points) for m in alone] == [list(m.points) for m in markers]
    assert (
        ps.collision_objects(recon, "patient_ref", Time(sec=5))[1].meshes[0] == objects[1].meshes[0]
    )


def test_meshes_and_frames_round_trip_in_metres():
    recon = reconstruction()
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


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_pauses_for_a_publish_and_comes_back_as_it_was(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(RuntimeError), gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a publish that fails")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
