"""A `Reconstruction` as planners consume it: MoveIt collision objects and static TF frames.

- `collision_objects`: one moveit_msgs/CollisionObject per vertebra, `id` = `<prefix>L1` …,
  operation ADD. The object's pose is the identity in `frame_id`, so its mesh (metres) lies where
  `/x23d/spine/<level>/mesh` does: the padded, decimated `collision_meshes` one when those
  apply, else that very mesh; its subframes are poses in `frame_id` too. MoveIt addresses a
  subframe as `<id>/<name>`.
- `collision_meshes`: the meshes a planner collides with: each level's surface decimated to
  a triangle budget and padded outwards (`surface.collision_mesh`), as arrays; the visual
  meshes (`/x23d/spine/<level>/mesh`, markers) stay as reconstructed.
- `collision_objects_cdr`: the same objects serialised with their meshes written from those
  arrays (`cdr`), never built as message objects.
- `removals`: REMOVE for each id (reset, deactivation, a level no longer found).
- `vertebra_transforms` / `static_transform`: geometry_msgs/TransformStamped for /tf_static.
  One TFMessage holds all of them (`tf_message`), as tf2's static broadcaster sends it.

Subframes today: `body_centre` (the vertebral body centre, with the vertebra's anatomical axes:
x left, y posterior, z superior). The reconstruction gives no pedicle landmarks yet, so there are
no pedicle entry points or axes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import open3d  # noqa: F401 (loaded with the node: about 1-2 s, not at the first patient's spine)
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform, TransformStamped
from moveit_msgs.msg import CollisionObject
from shape_msgs.msg import Mesh
from tf2_msgs.msg import TFMessage

from x23d_ros.pipeline import Reconstruction
from x23d_ros.ros import cdr
from x23d_ros.ros.spine_messages import MM, frame_pose, header, levels_found, meshes
from x23d_ros.surface import collision_mesh_and_fallback, padded_box

log = logging.getLogger(__name__)

SUBFRAMES = ("body_centre",)


def object_id(prefix: str, level: str) -> str:
    return f"{prefix}{level}"


def _identity() -> Pose:
    pose = Pose()
    pose.orientation.w = 1.0
    return pose


def collision_objects(
    recon: Reconstruction,
    frame_id: str,
    stamp: Time,
    prefix: str = "",
    level_meshes: dict[str, Mesh] | None = None,
) -> list[CollisionObject]:
    """ADD, one object per reconstructed vertebra, in L1..L5 order. `level_meshes`:
    `spine_messages.meshes(recon)` when the caller has built them already."""
    level_meshes = meshes(recon) if level_meshes is None else level_meshes
    objects = []
    for name in levels_found(recon):
        v = recon.vertebrae[name]
        objects.append(
            CollisionObject(
                header=header(frame_id, stamp),
                pose=_identity(),
                id=object_id(prefix, name),
                meshes=[level_meshes[name]],
                mesh_poses=[_identity()],
                subframe_names=list(SUBFRAMES),
                subframe_poses=[frame_pose(v.frame)],
                operation=CollisionObject.ADD,
            )
        )
    return objects


def collision_objects_cdr(
    recon: Reconstruction,
    frame_id: str,
    stamp: Time,
    prefix: str,
    level_meshes: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, bytes]:
    """`collision_objects` serialised (`cdr.encode`), by id, each mesh written from its arrays
    (vertices in metres, triangles): `level_meshes` as `collision_meshes` gives them, or the
    visual surfaces'. No message object of the meshes is built (five visual meshes as objects
    cost about 0.5 s on 2 AVX2 cores, `cdr`)."""
    empty = dict.fromkeys(recon.vertebrae, Mesh())  # the meshes come from the arrays
    objects = collision_objects(recon, frame_id, stamp, prefix, empty)
    out = {}
    for name, obj in zip(levels_found(recon), objects, strict=True):  # its order
        vertices, faces = level_meshes[name]
        packed = {
            ("meshes", 0, "triangles"): np.asarray(faces, np.uint32),
            ("meshes", 0, "vertices"): np.asarray(vertices, np.float64),
        }
        out[obj.id] = cdr.encode(obj, packed)
    return out


def collision_meshes(
    recon: Reconstruction,
    padding_mm: float,
    max_triangles: int,
    fallbacks: list[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per level, the padded, decimated mesh for collision checking: vertices (metres) and
    triangles; None when neither applies (padding 0, no budget): the visual meshes serve.
    Levels whose mesh fell back to a padded hull or box are appended to `fallbacks` ("L3:
    hull"). One level after another: on two threads it was no faster (2.07 → 1.85–1.98 s a
    spine; open3d's decimation holds the GIL)."""
    if padding_mm <= 0 and max_triangles <= 0:
        return None
    out = {}
    for name, v in recon.vertebrae.items():
        vertices, faces, fallback = level_collision_mesh(name, v, padding_mm, max_triangles)
        if fallback and fallbacks is not None:
            fallbacks.append(f"{name}: {fallback}")
        out[name] = (vertices * MM, faces)
    return out


def level_collision_mesh(
    name: str, v, padding_mm: float, max_triangles: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """`collision_mesh` of one level's surface, and "" or the fallback taken: "hull" (the
    level set failed its check) or "box" (the padded bounding box: the mesh could not be made
    at all, a degenerate or open surface, or the padded hull failed its check too). Logged: a
    collision object larger than needed beats none, and one level must not keep the others
    from being published."""
    try:
        vertices, faces, fallback = collision_mesh_and_fallback(
            v.vertices, v.faces, padding_mm, max_triangles
        )
    except Exception as error:  # qhull, marching cubes: many kinds
        log.warning("%s: collision mesh failed (%r): padded bounding box instead", name, error)
        return (*padded_box(np.asarray(v.vertices, float), padding_mm), "box")
    if fallback is None:
        return vertices, faces, ""
    log.warning("%s: %s (larger than needed)", name, fallback.detail)
    return vertices, faces, fallback.kind


def removals(ids: Iterable[str], frame_id: str, stamp: Time) -> list[CollisionObject]:
    return [
        CollisionObject(header=header(frame_id, stamp), id=i, operation=CollisionObject.REMOVE)
        for i in ids
    ]


def transform(parent: str, child: str, stamp: Time, pose: Pose) -> TransformStamped:
    """`child`'s frame in `parent`, from its pose (position in metres, unit quaternion)."""
    t = Transform()
    t.translation.x, t.translation.y, t.translation.z = (
        pose.position.x,
        pose.position.y,
        pose.position.z,
    )
    t.rotation = pose.orientation
    msg = TransformStamped(transform=t, child_frame_id=child)
    msg.header = header(parent, stamp)
    return msg


def vertebra_transforms(
    recon: Reconstruction, frame_id: str, stamp: Time, prefix: str = ""
) -> list[TransformStamped]:
    """One frame per vertebra (`<prefix>L1` …) under `frame_id`: origin at the body centre,
    axes x left, y posterior, z superior."""
    return [
        transform(frame_id, object_id(prefix, n), stamp, frame_pose(recon.vertebrae[n].frame))
        for n in levels_found(recon)
    ]


def static_transform(
    parent: str,
    child: str,
    stamp: Time,
    translation_m: Sequence[float],
    rotation_xyzw: Sequence[float],
) -> TransformStamped:
    """A fixed registration `parent → child` (e.g. robot_base → patient_ref) from parameters.
    Raises ValueError for a translation that is not 3 finite numbers or a rotation that is not
    a unit quaternion (within 1e-3; it is then normalised)."""
    xyz = np.asarray(translation_m, float)
    q = np.asarray(rotation_xyzw, float)
    if xyz.shape != (3,) or not np.isfinite(xyz).all():
        raise ValueError(f"registration translation must be 3 finite numbers, not {list(xyz)}")
    if q.shape != (4,) or not np.isfinite(q).all() or abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise ValueError(f"registration rotation must be a unit quaternion x y z w, not {list(q)}")
    q = q / np.linalg.norm(q)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(c) for c in xyz)
    o = pose.orientation
    o.x, o.y, o.z, o.w = (float(c) for c in q)
    return transform(parent, child, stamp, pose)


def tf_message(transforms: Iterable[TransformStamped]) -> TFMessage:
    return TFMessage(transforms=list(transforms))
