"""Messages serialised from numpy (`cdr`) are what rclpy reads back as the same messages."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose
from moveit_msgs.msg import CollisionObject
from rclpy.serialization import deserialize_message, serialize_message
from shape_msgs.msg import Mesh, MeshTriangle
from std_msgs.msg import ColorRGBA
from test_spine_messages import reconstruction
from visualization_msgs.msg import Marker, MarkerArray

from x23d_ros.ros import cdr
from x23d_ros.ros import planner_scene as ps
from x23d_ros.ros import spine_messages as sm


def _reads_back(data: bytes, expected) -> None:
    """rclpy reads `data` as it reads its own serialisation of `expected` (float32 fields
    rounded alike), and that has as many bytes (its padding bytes are whatever was in memory,
    so the bytes themselves are not compared)."""
    theirs = serialize_message(expected)
    assert deserialize_message(data, type(expected)) == deserialize_message(theirs, type(expected))
    assert len(data) == len(theirs)


def test_the_shipped_messages_are_checked_at_start():
    assert cdr.check() == ""


@pytest.mark.parametrize("faces", [1, 2, 3])  # an odd count puts padding before the vertices
def test_a_vertebras_mesh_and_markers_from_arrays_read_back_as_the_message_objects(faces):
    recon = reconstruction()
    for v in recon.vertebrae.values():
        v.faces = np.resize(v.faces, (faces, 3))
    for v in recon.vertebrae.values():
        _reads_back(sm.mesh_cdr(v), sm.mesh(v))
    stamp = Time(sec=5, nanosec=7)
    _reads_back(
        sm.marker_array_cdr(recon, "patient_ref", stamp),
        sm.marker_array(recon, "patient_ref", stamp),
    )


def test_nested_messages_strings_fixed_arrays_and_sequences_encode_as_rclpy_reads_them():
    """The walk over the message definitions, on what else the publisher sends: a MoveIt
    collision object (nested meshes, poses, strings, subframes), diagnostics (sequences of
    messages with strings), and a marker with every field set."""
    recon = reconstruction()
    objects = ps.collision_objects(recon, "patient_ref", Time(sec=1), "spine/")
    for obj in objects:
        _reads_back(cdr.encode(obj), obj)
    diagnostics = DiagnosticArray(
        status=[
            DiagnosticStatus(
                level=DiagnosticStatus.WARN,
                name="x23d: reconstructor",
                message="gate refused: ünreadable",  # UTF-8 beyond ASCII
                values=[KeyValue(key="a", value=""), KeyValue(key="latency_ms", value="81.1")],
            )
        ]
    )
    _reads_back(cdr.encode(diagnostics), diagnostics)
    m = Marker(ns="n", id=-3, type=Marker.MESH_RESOURCE, text="t", mesh_resource="package://x")
    m.colors = [ColorRGBA(r=0.1), ColorRGBA(a=1.0)]
    m.texture.data = bytes([1, 2, 3])
    m.texture.format = "png"
    m.mesh_file.filename = "f.stl"
    m.mesh_file.data = bytes(range(7))
    m.mesh_use_embedded_materials = True
    m.lifetime.sec = 3
    _reads_back(cdr.encode(MarkerArray(markers=[m, Marker()])), MarkerArray(markers=[m, Marker()]))


@pytest.mark.parametrize("padded", [True, False])
def test_collision_objects_from_arrays_read_back_as_the_message_objects(padded):
    """The collision objects as the publisher sends them by default (`collision_objects_cdr`):
    with the padded collision meshes' arrays, and with the visual surfaces' (padding 0, no
    budget), each reads back as the object built from message objects."""
    recon = reconstruction()
    stamp = Time(sec=2, nanosec=9)
    arrays = ps.collision_meshes(recon, 2.0, 2000) if padded else sm.mesh_arrays(recon)
    ours = ps.collision_objects_cdr(recon, "patient_ref", stamp, "spine/", arrays)
    shapes = {n: sm.mesh_message(*a) for n, a in arrays.items()}
    objects = ps.collision_objects(recon, "patient_ref", stamp, "spine/", shapes)
    assert list(ours) == [o.id for o in objects] == ["spine/L2", "spine/L4"]
    for obj in objects:
        _reads_back(ours[obj.id], obj)
        got = deserialize_message(ours[obj.id], CollisionObject).meshes[0]
        xyz = np.array([[p.x, p.y, p.z] for p in got.vertices])
        assert len(got.triangles) > 0 and np.ptp(xyz, 0).max() < 0.15  # metres, not mm
    with pytest.raises(ValueError, match=r"no sequence at meshes\.1\.vertices"):
        cdr.encode(objects[0], {("meshes", 1, "vertices"): np.zeros((3, 3))})


def test_only_sequences_of_one_basic_type_can_be_packed():
    vertices = np.arange(12.0).reshape(4, 3)
    _reads_back(
        cdr.encode(Mesh(), {("vertices",): vertices}),
        Mesh(vertices=[Point(x=x, y=y, z=z) for x, y, z in vertices.tolist()]),
    )
    with pytest.raises(ValueError, match="rows of 3 values"):
        cdr.encode(Mesh(), {("vertices",): np.zeros((4, 2))})
    with pytest.raises(TypeError, match="cannot be packed"):  # KeyValue holds strings
        cdr.encode(DiagnosticStatus(), {("values",): np.zeros((2, 2))})
    pose = Pose()
    pose.orientation.w = 1.0
    assert deserialize_message(cdr.encode(pose), Pose) == pose
    assert MeshTriangle(vertex_indices=np.array([1, 2, 3], np.uint32)) == deserialize_message(
        cdr.encode(MeshTriangle(vertex_indices=np.array([1, 2, 3], np.uint32))), MeshTriangle
    )


def test_an_empty_level_packs_to_an_empty_mesh():
    v = reconstruction().vertebrae["L2"]
    v.faces = np.zeros((0, 3), np.int64)
    _reads_back(sm.mesh_cdr(v), sm.mesh(v))
    recon = reconstruction()
    recon.vertebrae["L4"].faces = np.zeros((0, 3), np.int64)
    _reads_back(sm.marker_array_cdr(recon, "r", Time()), sm.marker_array(recon, "r", Time()))


def test_a_subscriber_gets_the_meshes_and_markers_the_message_objects_would_carry(ros_domain_id):
    """Over real DDS, from a SpinePublisher in this process: each level's mesh topic carries
    that level's mesh, and the markers topic the markers, as the message objects would."""
    import rclpy
    from test_bringup import Probe

    from x23d_ros.ros.planner_probe import MOVEIT_QOS
    from x23d_ros.ros.spine_publisher import LATCHED, SpinePublisher

    recon = reconstruction()
    probe = Probe(ros_domain_id)
    meshes, markers = {}, []
    for name in ("L2", "L3", "L4"):
        probe.node.create_subscription(
            Mesh, f"/x23d/spine/{name}/mesh", lambda m, n=name: meshes.__setitem__(n, m), LATCHED
        )
    probe.node.create_subscription(MarkerArray, "/x23d/spine/markers", markers.append, LATCHED)
    objects: list[CollisionObject] = []
    probe.node.create_subscription(CollisionObject, "/collision_object", objects.append, MOVEIT_QOS)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        publisher = SpinePublisher(context=context)
        assert publisher.cdr  # the fast path is the one under test
        publisher.set_active(True)
        # /collision_object is volatile (as MoveIt subscribes): published once matched.
        assert probe.spin_until(lambda: publisher.collision.get_subscription_count() > 0, 10.0)
        assert publisher.publish(recon)
        assert probe.spin_until(lambda: len(meshes) == 3 and markers and len(objects) >= 2, 20.0)
        padding, budget = publisher.p.collision_padding_mm, publisher.p.collision_max_triangles
    finally:
        rclpy.shutdown(context=context)
    for name in ("L2", "L4"):
        assert meshes[name] == sm.mesh(recon.vertebrae[name])
    assert meshes["L3"] == Mesh()  # not reconstructed: an empty mesh
    expected = sm.marker_array(recon, "x", Time())
    for got, want in zip(markers[-1].markers, expected.markers, strict=True):
        want.header = got.header  # stamped at publication, in the node's frame
        assert deserialize_message(serialize_message(want), Marker) == got

    # The collision objects: the padded meshes' objects, as message objects would carry them.
    shapes = {
        n: sm.mesh_message(*a) for n, a in ps.collision_meshes(recon, padding, budget).items()
    }
    expected = {o.id: o for o in ps.collision_objects(recon, "x", Time(), "", shapes)}
    got = {o.id: o for o in objects if o.operation == CollisionObject.ADD}
    assert sorted(got) == ["L2", "L4"]
    for i, want in expected.items():
        want.header = got[i].header
        assert len(want.meshes[0].triangles) > 0
        assert deserialize_message(serialize_message(want), CollisionObject) == got[i]


def test_a_publish_that_fails_to_build_sends_nothing(ros_domain_id, monkeypatch):
    """Every output is made before any goes out: when one cannot be made (here the cloud, the
    last), no mesh, marker or collision object reaches a subscriber, and the planner's objects
    stay as they were."""
    import rclpy
    from test_bringup import Probe

    from x23d_ros.ros.planner_probe import MOVEIT_QOS
    from x23d_ros.ros.spine_publisher import LATCHED, SpinePublisher

    got = []
    probe = Probe(ros_domain_id)
    probe.node.create_subscription(Mesh, "/x23d/spine/L2/mesh", got.append, LATCHED)
    probe.node.create_subscription(MarkerArray, "/x23d/spine/markers", got.append, LATCHED)
    probe.node.create_subscription(CollisionObject, "/collision_object", got.append, MOVEIT_QOS)

    def cannot(*args):
        raise RuntimeError("the cloud cannot be made")

    monkeypatch.setattr(sm, "point_cloud", cannot)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        publisher = SpinePublisher(context=context)
        publisher.set_active(True)
        assert probe.spin_until(lambda: publisher.collision.get_subscription_count() > 0, 10.0)
        with pytest.raises(RuntimeError, match="cannot be made"):
            publisher.publish(reconstruction())
        probe.spin_until(lambda: bool(got), 3.0)
        assert got == [] and publisher.objects == {} and publisher.published == 0
    finally:
        rclpy.shutdown(context=context)
