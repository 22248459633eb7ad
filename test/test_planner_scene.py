"""Reconstructions become what planners consume: MoveIt collision objects and static TF."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from moveit_msgs.msg import CollisionObject
from scipy.spatial.transform import Rotation
from test_spine_messages import reconstruction

from x23d_ros.ros import planner_scene as ps


def test_collision_objects_carry_the_level_meshes_and_a_body_centre_subframe():
    recon = reconstruction()
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
    recon = reconstruction()
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


def test_a_level_whose_collision_mesh_cannot_be_made_gets_its_padded_box_and_says_so():
    """A degenerate surface (one open triangle: no inside) cannot be grown: that level's
    collision object is its padded bounding box, reported as a fallback, and the other
    levels' meshes are made as usual."""
    from types import SimpleNamespace

    from x23d_ros.ros.planner_scene import level_collision_mesh

    flat = SimpleNamespace(
        vertices=np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]),
        faces=np.array([[0, 1, 2]]),
    )
    vertices, faces, fallback = level_collision_mesh("L3", flat, 2.0, 2000)
    assert fallback == "box" and len(faces) == 12
    np.testing.assert_allclose(vertices.min(0), [-2.0, -2.0, -2.0])
    np.testing.assert_allclose(vertices.max(0), [12.0, 12.0, 2.0])


def test_a_level_set_that_fails_its_check_is_reported_as_the_hull_without_a_warning(
    monkeypatch,
):
    """When every level set fails its check (here: a level set that is a small tetrahedron
    inside the surface), the level's collision object is the padded hull, reported as "hull",
    and no Python warning leaves (warnings are process-global: the planner scene does not
    catch them to classify a fallback any more)."""
    import warnings
    from types import SimpleNamespace

    from skimage import measure

    from x23d_ros import surface
    from x23d_ros.ros.planner_scene import level_collision_mesh

    axis = np.arange(-15.0, 15.5, 1.0)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    ball = np.linalg.norm(points, axis=-1)
    verts, faces, _, _ = measure.marching_cubes(ball, 10.0)
    sphere = SimpleNamespace(vertices=verts - 15.0, faces=faces)
    tetra = (
        np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]),
        np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]]),
    )
    monkeypatch.setattr(surface._DistanceField, "level_set", lambda self, offset: tetra)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vertices, faces, fallback = level_collision_mesh("L3", sphere, 2.0, 2000)
    assert fallback == "hull" and len(faces) > 12
    assert np.linalg.norm(vertices, axis=1).min() >= 10.0 + 2.0 - 0.5
