"""Record simulated C-arm shots into a rosbag2 bag, and replay a bag through rclpy.

rosbag2 itself is not on PyPI: bags are written and read with the `rosbags` library (mcap or
sqlite3 storage, ROS 2 Kilted type definitions), and the messages are serialised and
deserialised by rclpy, so the bytes are exactly what a C-arm driver would have sent. The same
bags play with `ros2 bag play` on a full install.

Replay keeps the recorded header stamps (as `ros2 bag play` does) and the recorded spacing in
time, scaled by `rate`; it first waits until every topic of the bag has a subscriber.
"""

from __future__ import annotations

import time
from pathlib import Path

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image

from x23d_ros.ros.sim_carm import shot_messages

TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CameraInfo": CameraInfo,
    "geometry_msgs/msg/PoseStamped": PoseStamped,
}
TOPICS = {
    "/carm/image_raw": "sensor_msgs/msg/Image",
    "/carm/camera_info": "sensor_msgs/msg/CameraInfo",
    "/carm/pose": "geometry_msgs/msg/PoseStamped",
}
DEMO_BAG = Path(__file__).resolve().parents[1] / "data" / "demo_bag"
#: The same case and poses as simulated fluoroscopy (mono8, no image-intensifier warp):
#: `x23d-ros record --out FLUOROSCOPY_BAG --seed 2026 --views 3 --domain realistic
#: --no-distortion`.
FLUOROSCOPY_BAG = DEMO_BAG.with_name("demo_bag_fluoroscopy")


def record(
    out: Path,
    item: dict,
    views: int,
    domain: str = "synthetic",
    storage: str = "mcap",
    period_s: float = 1.0,
    start_s: int = 1_000,
    reference_frame: str = "patient_ref",
    frame_id: str = "carm_source_optical",
) -> Path:
    """Write `views` shots of a case (a `ShotDataset` item) to a new bag folder `out`."""
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=typestore)
            for topic, msgtype in TOPICS.items()
        }
        for i in range(views):
            t = start_s + i * period_s
            stamp = Time(sec=int(t), nanosec=round((t % 1) * 1e9))
            image, info, pose = shot_messages(item, i, domain, stamp, frame_id, reference_frame)
            ns = round(t * 1e9)
            # Pose and camera info first, then the image, as a driver would send them.
            writer.write(connections["/carm/pose"], ns, serialize_message(pose))
            writer.write(connections["/carm/camera_info"], ns + 1, serialize_message(info))
            writer.write(connections["/carm/image_raw"], ns + 2, serialize_message(image))
    return out


def read(bag: Path) -> list[tuple[str, int, object]]:
    """(topic, timestamp ns, rclpy message) of every message of the bag, in time order."""
    out = []
    with Reader(bag) as reader:
        for connection, timestamp, raw in reader.messages():
            msg_type = TYPES.get(connection.msgtype)
            if msg_type is None:
                continue
            out.append((connection.topic, timestamp, deserialize_message(bytes(raw), msg_type)))
    return out


def replay(node, bag: Path, rate: float = 1.0, wait_s: float = 60.0) -> int:
    """Publish the bag's messages from `node` with their recorded spacing; return how many."""
    messages = read(bag)
    publishers = {topic: node.create_publisher(type(msg), topic, 10) for topic, _, msg in messages}
    end = time.monotonic() + wait_s
    while not all(p.get_subscription_count() for p in publishers.values()):
        if time.monotonic() > end:
            raise TimeoutError(f"no subscriber on {sorted(publishers)} within {wait_s} s")
        time.sleep(0.05)
    start_wall, start_bag = time.monotonic(), messages[0][1] if messages else 0
    for topic, timestamp, msg in messages:
        delay = (timestamp - start_bag) / 1e9 / rate - (time.monotonic() - start_wall)
        if delay > 0:
            time.sleep(delay)
        publishers[topic].publish(msg)
    return len(messages)
