"""`sim_carm`: a stand-in for a C-arm driver, publishing posed shots from the data engine.

Each shot goes out as the three messages a tracked C-arm gives: `sensor_msgs/Image` (32FC1
for the synthetic domain, mono8 for the realistic), `sensor_msgs/CameraInfo` (K, size) and a
`geometry_msgs/PoseStamped` of the X-ray source in `reference_frame` (metres), all with one
stamp. The shots come from a shard folder (`shards`, case `case`), or from a procedural spine
simulated on the spot (`seed`) at sampled poses, or at the poses of a YAML file (`poses_file`):

    image_size: 256                  # pixels a side
    shots:                           # source poses in reference_frame, mm
      - T_ref_source: [[1, 0, 0, 0], [0, 0, 1, -600], [0, -1, 0, 100], [0, 0, 0, 1]]
        sdd_mm: 1000.0               # source-to-detector distance
        detector_mm: 300.0           # detector side
 It waits for a subscriber on each topic, publishes `views`
shots `period_s` apart, waits for their acknowledgement and exits.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.duration import Duration
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.ros.node_runner import FiniteNode, run_node
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param("reference_frame", "patient_ref", "frame of the published poses"),
    Param("shards", "", "folder of shards to take the shots from; empty: simulate one case"),
    Param("case", 0, "index of the case in the shard folder", 0, 1_000_000),
    Param("seed", 2026, "seed of the simulated case when `shards` is empty", 0, 2**31 - 1),
    Param("views", 3, "how many of the case's shots to publish, in order", 1, 8),
    Param("poses_file", "", "YAML of source poses to render the simulated spine from"),
    Param("domain", "synthetic", "synthetic (32FC1 line integrals) or realistic (mono8)"),
    Param("period_s", 1.0, "seconds between shots", 0.01, 3600.0),
    Param("image_topic", "/carm/image_raw", "where images go"),
    Param("camera_info_topic", "/carm/camera_info", "where camera infos go"),
    Param("pose_topic", "/carm/pose", "where source poses go"),
    Param("frame_id", "carm_source_optical", "header.frame_id of image and camera info"),
    Param("ack_timeout_s", 30.0, "how long to wait for subscribers to acknowledge", 0.0, 600.0),
)


def render_posed_case(seed: int, poses_file: str, domain: str, spacing_mm: float = 1.0) -> dict:
    """The procedural spine of `seed` (as `x23d simulate` draws it) shot from the poses of a
    YAML file (see the module docstring), as a `ShotDataset`-like item."""
    import torch
    import yaml

    from x23d_ros.data.simulate import procedural_spine
    from x23d_ros.poses import ShotPose
    from x23d_ros.xray.render import render_shots

    spec = yaml.safe_load(Path(poses_file).read_text())
    size = int(spec.get("image_size", 256))
    poses = [
        ShotPose(
            "custom",
            np.asarray(shot["T_ref_source"], float),
            float(shot.get("sdd_mm", 1000.0)),
            float(shot.get("detector_mm", 300.0)),
            0.0,
            0.0,
        )
        for shot in spec["shots"]
    ]
    rng = np.random.default_rng([seed, 0])
    anatomy = procedural_spine(rng, spacing_mm)
    K = np.stack([p.intrinsics(size) for p in poses])
    T = np.stack([p.T_ref_source for p in poses])
    pixel_mm = np.array([p.detector_mm / size for p in poses])
    shots = render_shots(anatomy, K, T, size, pixel_mm, rng)
    images = shots.synthetic if domain == "synthetic" else shots.realistic
    return {
        "images": torch.from_numpy(np.asarray(images, np.float32)),
        "K": torch.from_numpy(K),
        "T_ref_source": torch.from_numpy(T),
        "labels": torch.from_numpy(anatomy.labels),
        "affine": torch.from_numpy(anatomy.affine),
    }


def load_case(
    shards: str,
    case: int,
    seed: int,
    views: int,
    domain: str,
    poses_file: str = "",
    distortion: bool = True,
) -> dict:
    """A case as `ShotDataset` gives it: from `shards`, from `seed` at the poses of
    `poses_file`, or simulated from `seed` at sampled poses (with the image intensifier's
    distortion in the realistic domain unless `distortion` is False; the anatomy and the
    poses are the same either way)."""
    from x23d_ros.data.dataset import ShotDataset

    if poses_file:
        return render_posed_case(seed, poses_file, domain)
    if shards:
        return ShotDataset(shards, domain)[case]
    from x23d_ros.data.simulate import SimulateConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        simulate(
            SimulateConfig(
                out=Path(tmp),
                cases=1,
                views=views,
                seed=seed,
                image_size=256,
                distortion=distortion,
            )
        )
        return ShotDataset(tmp, domain)[0]


def shot_messages(
    item: dict, i: int, domain: str, stamp, frame_id: str, reference_frame: str
) -> tuple[Image, CameraInfo, PoseStamped]:
    """Shot `i` of a case as image, camera info and pose messages with one stamp."""
    image = item["images"][i].numpy()
    if domain == "realistic":
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    image_msg = image_to_msg(image, stamp=stamp, frame_id=frame_id)
    K = item["K"][i].numpy()
    info = CameraInfo(height=image_msg.height, width=image_msg.width, k=K.ravel().tolist())
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.p = np.hstack([K, np.zeros((3, 1))]).ravel().tolist()
    info.header.stamp, info.header.frame_id = stamp, frame_id
    T = item["T_ref_source"][i].numpy()
    pose = PoseStamped()
    pose.header.stamp, pose.header.frame_id = stamp, reference_frame
    p = pose.pose.position
    p.x, p.y, p.z = (float(c) for c in T[:3, 3] / 1000.0)
    o = pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(c) for c in Rotation.from_matrix(T[:3, :3]).as_quat())
    return image_msg, info, pose


class SimCArm(FiniteNode):
    def __init__(self) -> None:
        super().__init__("sim_carm")
        self.p = declare(self, PARAMS)
        self.item = load_case(
            self.p.shards, self.p.case, self.p.seed, self.p.views, self.p.domain, self.p.poses_file
        )
        available = self.item["images"].shape[0]
        if self.p.views > available:
            raise ValueError(f"the case has {available} shots; views = {self.p.views}")
        self.publishers_ = (
            self.create_publisher(Image, self.p.image_topic, 10),
            self.create_publisher(CameraInfo, self.p.camera_info_topic, 10),
            self.create_publisher(PoseStamped, self.p.pose_topic, 10),
        )
        self.sent = 0
        self.timer = self.create_timer(self.p.period_s, self._tick)

    def _tick(self) -> None:
        if not all(pub.get_subscription_count() for pub in self.publishers_):
            return
        stamp = self.get_clock().now().to_msg()
        messages = shot_messages(
            self.item, self.sent, self.p.domain, stamp, self.p.frame_id, self.p.reference_frame
        )
        image_pub, info_pub, pose_pub = self.publishers_
        pose_pub.publish(messages[2])
        info_pub.publish(messages[1])
        image_pub.publish(messages[0])
        self.sent += 1
        self.get_logger().info(f"shot {self.sent}/{self.p.views} published")
        if self.sent >= self.p.views:
            self.timer.cancel()
            timeout = Duration(seconds=self.p.ack_timeout_s)
            acked = all(pub.wait_for_all_acked(timeout) for pub in self.publishers_)
            if not acked:
                self.get_logger().error("subscribers did not acknowledge the shots in time")
            self.finish(0 if acked else 1)


def main(args: list[str] | None = None) -> int:
    return run_node(SimCArm, args)


if __name__ == "__main__":
    sys.exit(main())
