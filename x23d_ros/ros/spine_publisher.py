"""`spine_publisher`: the reconstructed spine on the topics planners read, and diagnostics.

Everything is latched (reliable, transient local), so a planner that starts later still gets
the spine: points, markers, one shape_msgs/Mesh per level, and the vertebra frames, in
`reference_frame`, in metres. Diagnostics (1 Hz) say the state, the shots collected, the
rejections by reason, the last latency per stage, the device and the weights.
"""

from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from shape_msgs.msg import Mesh
from visualization_msgs.msg import MarkerArray

from x23d_ros import __version__
from x23d_ros.anatomy import LEVELS
from x23d_ros.pipeline import Reconstruction
from x23d_ros.ros import spine_messages as sm
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param("reference_frame", "patient_ref", "frame the spine is published in"),
    Param("topic_prefix", "/x23d/spine", "prefix of the output topics"),
    Param("diagnostics_period_s", 1.0, "seconds between diagnostics", 0.05, 60.0),
)
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class SpinePublisher(Node):
    def __init__(self, status: Callable[[], dict[str, str]] | None = None) -> None:
        super().__init__("spine_publisher")
        self.p = declare(self, PARAMS)
        self.status = status or dict
        prefix = self.p.topic_prefix.rstrip("/")
        self.points = self.create_publisher(PointCloud2, f"{prefix}/points", LATCHED)
        self.markers = self.create_publisher(MarkerArray, f"{prefix}/markers", LATCHED)
        self.frames = self.create_publisher(PoseArray, f"{prefix}/frames", LATCHED)
        self.meshes = {
            name: self.create_publisher(Mesh, f"{prefix}/{name}/mesh", LATCHED) for name in LEVELS
        }
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.published = 0
        self.create_timer(self.p.diagnostics_period_s, self._diagnose)

    def publish(self, recon: Reconstruction) -> None:
        stamp = self.get_clock().now().to_msg()
        frame = self.p.reference_frame
        for name, v in recon.vertebrae.items():
            self.meshes[name].publish(sm.mesh(v))
        self.frames.publish(sm.pose_array(recon, frame, stamp))
        self.markers.publish(sm.marker_array(recon, frame, stamp))
        self.points.publish(sm.point_cloud(recon, frame, stamp))  # last: it marks "complete"
        self.published += 1

    def _diagnose(self) -> None:
        values = {"version": __version__, "published": str(self.published), **self.status()}
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name="x23d_ros: reconstruction",
            hardware_id="x23d_ros",
            message=values.get("state", ""),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        self.diagnostics.publish(
            DiagnosticArray(header=sm.header("", self.get_clock().now().to_msg()), status=[status])
        )
