"""A planner's view of the scene: what a MoveIt-like subscriber that joins late receives.

It subscribes as MoveIt's planning scene monitor does (`/collision_object`: reliable,
volatile, so it gets objects only because the publisher re-sends them on a new match) and as a
tf2 listener does (`/tf_static`: reliable, transient local), and reads the latched
`/x23d/session` record, which says which reconstruction the spine is and whether its levels
are confirmed. It applies ADD/REMOVE in order, waits until `--objects` objects are in the
scene, a TFMessage has come and the session record says a spine is published, then writes
JSON:

    {"collision_objects": [{"id", "frame_id", "vertices", "triangles", "subframes"}],
     "tf_static": [{"parent", "child"}],
     "session": {key: value of the record}}

vertices in metres (rounded to 0.1 mm), triangles as vertex indices, subframes by name with
position (m) and orientation (x, y, z, w). Exit status 1 when the scene was not complete in time.

    python -m x23d_ros.ros.planner_probe --out planner_view.json [--objects 5] [--timeout-s 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from moveit_msgs.msg import CollisionObject
from rclpy.qos import QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from x23d_ros.ros.spine_publisher import LATCHED, SESSION_TOPIC, TF_STATIC_QOS

# moveit2's PlanningSceneMonitor subscribes to collision_object with rclcpp::ServicesQoS():
# reliable, volatile, keep last 10 (moveit_ros/planning/planning_scene_monitor/src/
# planning_scene_monitor.cpp).
MOVEIT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _pose(p) -> dict:
    return {
        "position": [p.position.x, p.position.y, p.position.z],
        "orientation": [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w],
    }


def object_view(msg: CollisionObject) -> dict:
    vertices, triangles = [], []
    for mesh in msg.meshes:
        base = len(vertices)
        vertices += [[round(v.x, 4), round(v.y, 4), round(v.z, 4)] for v in mesh.vertices]
        triangles += [[base + int(i) for i in t.vertex_indices] for t in mesh.triangles]
    return {
        "id": msg.id,
        "frame_id": msg.header.frame_id,
        "vertices": vertices,
        "triangles": triangles,
        "subframes": {
            n: _pose(p) for n, p in zip(msg.subframe_names, msg.subframe_poses, strict=True)
        },
    }


class PlannerView:
    """The scene as a planner holds it, from the messages received so far."""

    def __init__(self, node) -> None:
        self.objects: dict[str, CollisionObject] = {}
        self.operations: list[tuple[str, int]] = []
        self.tf: list[TFMessage] = []
        self.sessions: list[DiagnosticArray] = []
        node.create_subscription(CollisionObject, "/collision_object", self._on_object, MOVEIT_QOS)
        node.create_subscription(TFMessage, "/tf_static", self.tf.append, TF_STATIC_QOS)
        node.create_subscription(DiagnosticArray, SESSION_TOPIC, self.sessions.append, LATCHED)

    @property
    def session(self) -> dict[str, str]:
        """The newest session record's values ({} before one came)."""
        if not self.sessions or not self.sessions[-1].status:
            return {}
        return {kv.key: kv.value for kv in self.sessions[-1].status[0].values}

    def complete(self, objects: int) -> bool:
        return (
            len(self.objects) >= objects
            and bool(self.tf)
            and self.session.get("published") == "true"
        )

    def _on_object(self, msg: CollisionObject) -> None:
        op = msg.operation[0] if isinstance(msg.operation, bytes) else int(msg.operation)
        self.operations.append((msg.id, op))
        if op == CollisionObject.REMOVE[0]:
            self.objects.pop(msg.id, None)
        elif op in (CollisionObject.ADD[0], CollisionObject.APPEND[0]):
            self.objects[msg.id] = msg

    def as_json(self) -> dict:
        transforms = self.tf[-1].transforms if self.tf else []
        return {
            "collision_objects": [object_view(self.objects[i]) for i in sorted(self.objects)],
            "tf_static": [
                {"parent": t.header.frame_id, "child": t.child_frame_id} for t in transforms
            ],
            "session": self.session,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--objects", type=int, default=5, help="objects that make the scene complete"
    )
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node("x23d_planner_probe")
    view = PlannerView(node)
    end = time.monotonic() + args.timeout_s
    try:
        while time.monotonic() < end and not view.complete(args.objects):
            rclpy.spin_once(node, timeout_sec=0.1)
        for _ in range(5):  # anything sent right behind
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(view.as_json()))
    complete = view.complete(args.objects)
    record = view.session
    print(
        f"planner view: {len(view.objects)} collision objects, "
        f"{len(view.as_json()['tf_static'])} static frames, reconstruction "
        f"{record.get('reconstruction', '(no session record)')} levels confirmed: "
        f"{record.get('levels_confirmed', '?')} -> {args.out}"
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
