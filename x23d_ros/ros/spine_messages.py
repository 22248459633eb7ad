"""A `Reconstruction` (core, millimetres) as the messages planners read (metres, REP 103).

- `point_cloud`: sensor_msgs/PointCloud2, fields x, y, z, confidence (float32) and label
  (uint8, 1..5 for L1..L5), little-endian, 20 bytes a point, dense.
- `marker_array`: visualization_msgs/MarkerArray, a DELETEALL then one TRIANGLE_LIST per
  vertebra (namespace `x23d`, id = level index), one colour per level.
- `mesh`: shape_msgs/Mesh of one vertebra.
- `meshes`: those of a whole reconstruction, for `marker_array` and
  `planner_scene.collision_objects`, which reuse their vertex `Point`s.
- `mesh_cdr`, `marker_array_cdr`: the mesh and the marker array serialised, written from the
  arrays (`cdr`): a vertebra has about 8 000 vertices and 16 000 faces, and building and
  converting message objects one by one was most of what a publish cost. The publisher sends
  these where `cdr.check` passes.
- `pose_array`: geometry_msgs/PoseArray of the vertebra frames, in L1..L5 order of the levels
  reconstructed.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseArray
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import PointCloud2, PointField
from shape_msgs.msg import Mesh, MeshTriangle
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from x23d_ros.anatomy import LEVELS
from x23d_ros.pipeline import Reconstruction, VertebraSurface
from x23d_ros.ros import cdr

MM = 1e-3  # metres per millimetre
# Okabe–Ito colours (colour-blind safe), L1..L5.
LEVEL_COLOURS = {
    "L1": (0.90, 0.62, 0.00),
    "L2": (0.34, 0.71, 0.91),
    "L3": (0.00, 0.62, 0.45),
    "L4": (0.94, 0.89, 0.26),
    "L5": (0.80, 0.47, 0.65),
}
CLOUD_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("confidence", "<f4"), ("label", "u1")],
    align=False,
)
POINT_STEP = 20  # the 17 bytes above, padded to a multiple of 4


def header(frame_id: str, stamp: Time) -> Header:
    return Header(frame_id=frame_id, stamp=stamp)


def point_cloud(recon: Reconstruction, frame_id: str, stamp: Time) -> PointCloud2:
    rows = []
    for name, v in recon.vertebrae.items():
        block = np.zeros(len(v.points), CLOUD_DTYPE)
        xyz = (v.points * MM).astype(np.float32)
        block["x"], block["y"], block["z"] = xyz.T
        block["confidence"] = v.confidence
        block["label"] = LEVELS[name]
        rows.append(block)
    points = np.concatenate(rows) if rows else np.zeros(0, CLOUD_DTYPE)
    padded = np.zeros((len(points), POINT_STEP), np.uint8)
    padded[:, : CLOUD_DTYPE.itemsize] = points.view(np.uint8).reshape(
        len(points), CLOUD_DTYPE.itemsize
    )
    fields = [
        PointField(name=n, offset=CLOUD_DTYPE.fields[n][1], datatype=t, count=1)
        for n, t in (
            ("x", PointField.FLOAT32),
            ("y", PointField.FLOAT32),
            ("z", PointField.FLOAT32),
            ("confidence", PointField.FLOAT32),
            ("label", PointField.UINT8),
        )
    ]
    return PointCloud2(
        header=header(frame_id, stamp),
        height=1,
        width=len(points),
        fields=fields,
        is_bigendian=False,
        point_step=POINT_STEP,
        row_step=POINT_STEP * len(points),
        data=padded.tobytes(),
        is_dense=True,
    )


def read_point_cloud(msg: PointCloud2) -> np.ndarray:
    """The structured array (x, y, z, confidence, label) of a cloud made by `point_cloud`."""
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.width * msg.height, msg.point_step)
    return np.ascontiguousarray(raw[:, : CLOUD_DTYPE.itemsize]).view(CLOUD_DTYPE).ravel()


def mesh(v: VertebraSurface) -> Mesh:
    return mesh_message(v.vertices * MM, v.faces)


def mesh_message(vertices_m: np.ndarray, faces: np.ndarray) -> Mesh:
    # Vertices through `tolist` (Python floats in one call; element by element from numpy took
    # about twice as long); faces as uint32 rows, which rosidl keeps as they are, unconverted.
    return Mesh(
        triangles=[MeshTriangle(vertex_indices=f) for f in np.asarray(faces, np.uint32)],
        vertices=[Point(x=x, y=y, z=z) for x, y, z in np.asarray(vertices_m).tolist()],
    )


def mesh_arrays(recon: Reconstruction) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every reconstructed level's surface as `mesh` carries it: vertices (metres), triangles."""
    return {name: (v.vertices * MM, v.faces) for name, v in recon.vertebrae.items()}


def meshes(recon: Reconstruction) -> dict[str, Mesh]:
    """`mesh` of every reconstructed level, by level name."""
    return {name: mesh(v) for name, v in recon.vertebrae.items()}


def _markers(recon: Reconstruction, frame_id: str, stamp: Time) -> MarkerArray:
    """`marker_array` with no points yet."""
    markers = [Marker(header=header(frame_id, stamp), ns="x23d", action=Marker.DELETEALL)]
    for name in recon.vertebrae:
        r, g, b = LEVEL_COLOURS[name]
        m = Marker(
            header=header(frame_id, stamp),
            ns="x23d",
            id=LEVELS[name],
            type=Marker.TRIANGLE_LIST,
            action=Marker.ADD,
            color=ColorRGBA(r=r, g=g, b=b, a=1.0),
            frame_locked=True,
            text=name,
        )
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 1.0
        markers.append(m)
    return MarkerArray(markers=markers)


def marker_array(
    recon: Reconstruction, frame_id: str, stamp: Time, level_meshes: dict[str, Mesh] | None = None
) -> MarkerArray:
    """`level_meshes`: `meshes(recon)` when the caller has built them already."""
    level_meshes = meshes(recon) if level_meshes is None else level_meshes
    out = _markers(recon, frame_id, stamp)
    for m, (name, v) in zip(out.markers[1:], recon.vertebrae.items(), strict=True):
        vertices = level_meshes[name].vertices
        # Three corners a face, each the mesh's own vertex object: messages are read, never
        # changed, once built.
        m.points = [vertices[i] for i in v.faces.reshape(-1).tolist()]
    return out


def mesh_cdr(v: VertebraSurface) -> bytes:
    """`mesh(v)` serialised, written from the arrays (`cdr.encode`): no message objects."""
    return cdr.encode(
        Mesh(),
        {("triangles",): np.asarray(v.faces, np.uint32), ("vertices",): v.vertices * MM},
    )


def marker_array_cdr(recon: Reconstruction, frame_id: str, stamp: Time) -> bytes:
    """`marker_array` serialised, its points written from the arrays (`cdr.encode`)."""
    packed = {
        ("markers", i + 1, "points"): v.vertices[np.asarray(v.faces).reshape(-1)] * MM
        for i, v in enumerate(recon.vertebrae.values())
    }
    return cdr.encode(_markers(recon, frame_id, stamp), packed)


def frame_pose(T: np.ndarray) -> Pose:
    """A (4, 4) transform in mm as a Pose in metres."""
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(c) for c in T[:3, 3] * MM)
    pose.orientation.x, pose.orientation.y = float(x), float(y)
    pose.orientation.z, pose.orientation.w = float(z), float(w)
    return pose


def levels_found(recon: Reconstruction) -> list[str]:
    """The reconstructed levels in L1..L5 order (the order of the per-level outputs)."""
    return [n for n in LEVELS if n in recon.vertebrae]


def pose_array(recon: Reconstruction, frame_id: str, stamp: Time) -> PoseArray:
    return PoseArray(
        header=header(frame_id, stamp),
        poses=[frame_pose(recon.vertebrae[n].frame) for n in levels_found(recon)],
    )
