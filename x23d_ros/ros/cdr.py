"""Serialise a ROS message to CDR with its large sequences written straight from numpy.

A vertebra's visual mesh has about 8 000 vertices and 16 000 triangles, and its RViz marker
48 000 points: as rosidl message objects, one Python object each, built in Python and then
converted again by rclpy when published. On 2 AVX2 cores that was about 0.9 s of the time
between a reconstruction and its arrival at a planner (building the meshes 0.48 s, converting
the markers 0.28 s and the meshes 0.13 s), for data that numpy already holds in the layout the
wire wants. `encode` writes the message as rclpy's own serialiser does (classic CDR, little
endian: what rmw_fastrtps and rmw_cyclonedds put on the wire for a ROS 2 message), walking
the installed message definitions (`SLOT_TYPES`), so the same code follows any distro's
fields; a sequence named in `packed` is taken from a numpy array instead of the (empty)
sequence in the message. `Publisher.publish` sends the bytes as they are.

Only what x23d_ros publishes is needed: basic types, strings, nested messages, fixed arrays
and sequences (no wide strings, no bounded-string bounds checks). `check` compares `encode`
with rclpy's serialiser on a sample; callers fall back to message objects when it fails.
"""

from __future__ import annotations

import array
import struct

import numpy as np
from rosidl_parser.definition import (
    AbstractSequence,
    AbstractString,
    AbstractWString,
    Array,
    BasicType,
    NamespacedType,
)

#: CDR little endian, no options: the encapsulation header before the payload.
HEADER = b"\x00\x01\x00\x00"

_BASIC = {  # rosidl basic type → numpy dtype (little endian); its size is its alignment
    "boolean": "u1",
    "octet": "u1",
    "uint8": "u1",
    "int8": "i1",
    "char": "u1",
    "uint16": "<u2",
    "int16": "<i2",
    "uint32": "<u4",
    "int32": "<i4",
    "uint64": "<u8",
    "int64": "<i8",
    "float": "<f4",
    "double": "<f8",
}


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray(HEADER)

    def align(self, n: int) -> None:
        self.out += b"\x00" * (-(len(self.out) - len(HEADER)) % n)

    def values(self, kind: str, values) -> None:
        dtype = np.dtype(_BASIC[kind])
        if isinstance(values, bytes):
            values = np.frombuffer(values, np.uint8)
        elif len(values) and isinstance(values[0], bytes):  # `byte` fields: bytes of one
            values = np.frombuffer(b"".join(values), np.uint8)
        data = np.asarray(values, dtype=dtype)
        if data.size:
            self.align(dtype.itemsize)
            self.out += data.tobytes()

    def u32(self, n: int) -> None:
        self.align(4)
        self.out += struct.pack("<I", n)

    def string(self, text: str) -> None:
        data = text.encode()
        self.u32(len(data) + 1)
        self.out += data + b"\x00"


def encode(message, packed: dict[tuple, np.ndarray] | None = None) -> bytes:
    """`message` in CDR, as `rclpy.serialization.serialize_message` gives it; each sequence
    at a path in `packed` (field names and list indices from `message`, e.g.
    `("markers", 2, "points")`) written from that array: rows of a message whose fields are
    all of one basic type (Point: (N, 3) float64; MeshTriangle: (N, 3) uint32), or values of
    a basic type. A path in `packed` that names no sequence of `message` is refused: its
    data would otherwise be dropped without a word (an ADD with no geometry)."""
    writer = _Writer()
    packed = dict(packed or {})
    _message(writer, message, (), packed)
    if packed:  # each path is taken out as it is written
        raise ValueError(f"no sequence at {', '.join(_where(p) for p in packed)} to pack")
    return bytes(writer.out)


def _where(path: tuple) -> str:
    """A field's path for an error message: `markers.2.points`."""
    return ".".join(map(str, path))


def _message(w: _Writer, message, path: tuple, packed: dict) -> None:
    fields = message.get_fields_and_field_types()
    for name, kind in zip(fields, message.SLOT_TYPES, strict=True):
        _field(w, kind, getattr(message, name), (*path, name), packed)


def _field(w: _Writer, kind, value, path: tuple, packed: dict) -> None:
    if isinstance(kind, BasicType):
        w.values(kind.typename, [value])
    elif isinstance(kind, AbstractWString):
        raise TypeError(f"{_where(path)}: wide strings are not supported")
    elif isinstance(kind, AbstractString):
        w.string(value)
    elif isinstance(kind, NamespacedType):
        _message(w, value, path, packed)
    elif isinstance(kind, Array | AbstractSequence):
        if isinstance(kind, AbstractSequence):
            if path in packed:
                _packed(w, kind.value_type, packed.pop(path), path)
                return
            w.u32(len(value))
        item = kind.value_type
        if isinstance(item, BasicType):
            if isinstance(value, array.array | np.ndarray | bytes | list | tuple):
                w.values(item.typename, value)
            else:
                raise TypeError(f"{_where(path)}: {type(value).__name__}")
        else:
            for i, element in enumerate(value):
                _field(w, item, element, (*path, i), packed)
    else:
        raise TypeError(f"{_where(path)}: {kind!r} is not supported")


def _packed(w: _Writer, item, data: np.ndarray, path: tuple) -> None:
    """A sequence from an array: its length (rows), then the rows as the message's fields."""
    kinds = [item.typename] if isinstance(item, BasicType) else _flat_basic_kinds(item, path)
    if len(set(kinds)) != 1:
        raise TypeError(f"{_where(path)}: mixed field types cannot be packed")
    data = np.asarray(data)
    rows = len(data)
    if rows and data.size != rows * len(kinds):
        raise ValueError(
            f"{_where(path)}: rows of {len(kinds)} values expected, got shape {data.shape}"
        )
    w.u32(rows)
    w.values(kinds[0], data.reshape(-1))


def _flat_basic_kinds(kind, path: tuple) -> list[str]:
    """The basic types of a message's fields in order, fixed arrays expanded; a field that is
    not basic (a string, a sequence, a nested message with one) makes it unpackable."""
    module = __import__(".".join(kind.namespaces), fromlist=[kind.name])
    cls = getattr(module, kind.name)
    out: list[str] = []
    for slot in cls.SLOT_TYPES:
        if isinstance(slot, BasicType):
            out.append(slot.typename)
        elif isinstance(slot, Array) and isinstance(slot.value_type, BasicType):
            out += [slot.value_type.typename] * slot.size
        elif isinstance(slot, NamespacedType):
            out += _flat_basic_kinds(slot, path)
        else:
            raise TypeError(f"{_where(path)}: {kind.name} cannot be packed")
    return out


def check() -> str:
    """'' when rclpy reads what `encode` writes as it reads its own serialisation of the
    message, at the length that has (its padding bytes are left as they were in memory, so
    bytes are not compared), for a sample of what x23d_ros publishes this way (a mesh, a
    marker array, a MoveIt collision object); else why not."""
    from geometry_msgs.msg import Point, Pose
    from moveit_msgs.msg import CollisionObject
    from rclpy.serialization import deserialize_message, serialize_message
    from shape_msgs.msg import Mesh, MeshTriangle
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    vertices = np.array([[0.0, 0.1, 0.2], [1.5, -2.0, 3.25], [-0.5, 0.0, 1e-3]])
    faces = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 0]], np.uint32)
    points = [Point(x=x, y=y, z=z) for x, y, z in vertices.tolist()]
    mesh = Mesh(triangles=[MeshTriangle(vertex_indices=f) for f in faces], vertices=points)
    marker = Marker(ns="x23d", id=3, type=Marker.TRIANGLE_LIST, text="L3", frame_locked=True)
    marker.header.frame_id = "ref"
    marker.color = ColorRGBA(r=0.5, g=0.25, b=1.0, a=1.0)
    marker.pose.orientation.w = 1.0
    empty = Marker(ns="x23d", action=Marker.DELETEALL)
    ours = {
        "mesh": encode(Mesh(), {("triangles",): faces, ("vertices",): vertices}),
        "markers": encode(
            MarkerArray(markers=[empty, marker]),
            {("markers", 1, "points"): vertices[faces.reshape(-1)]},
        ),
    }
    pose = Pose()
    pose.orientation.w = 1.0
    obj = CollisionObject(id="L3", meshes=[Mesh()], mesh_poses=[pose], subframe_names=["body"])
    obj.header.frame_id, obj.pose, obj.subframe_poses = "ref", pose, [pose]
    obj.operation = CollisionObject.ADD
    ours["collision object"] = encode(
        obj, {("meshes", 0, "triangles"): faces, ("meshes", 0, "vertices"): vertices}
    )
    obj.meshes = [mesh]
    marker.points = [points[i] for i in faces.reshape(-1).tolist()]
    expected = {
        "mesh": mesh,
        "markers": MarkerArray(markers=[empty, marker]),
        "collision object": obj,
    }
    wrong = []
    for name, data in ours.items():
        kind = type(expected[name])
        try:
            theirs = serialize_message(expected[name])
            # As rclpy reads its own bytes: float32 fields come back rounded.
            same = len(data) == len(theirs) and (
                deserialize_message(data, kind) == deserialize_message(theirs, kind)
            )
        except Exception as error:  # another rmw's serialiser: whatever it raises
            return f"rclpy could not read or write the {name} sample: {error!r}"
        if not same:
            wrong.append(name)
    return f"CDR of {', '.join(wrong)} is not what rclpy reads back" if wrong else ""
