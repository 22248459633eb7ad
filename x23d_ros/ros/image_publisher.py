"""`image_publisher`: publish an X-ray image from a file as sensor_msgs/Image.

For bench-testing a pipeline without a C-arm: it waits until enough subscribers have matched,
publishes the image `count` times, waits until every reliable subscriber acknowledged it, and
exits 0 (or 1 if they did not within `ack_timeout_s`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from rclpy.duration import Duration
from sensor_msgs.msg import Image

from x23d_ros.ros.image_conversion import image_to_msg
from x23d_ros.ros.node_runner import FiniteNode, run_node
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param(
        "image_file",
        "",
        "image to publish: .npy (uint8, uint16 or float32) or a 1-channel .png/.tif",
    ),
    Param("topic", "/carm/image_raw", "topic to publish on"),
    Param("frame_id", "carm_source_optical", "header.frame_id: the X-ray source's optical frame"),
    Param("count", 1, "how many times to publish; 0 = until stopped", 0, 1_000_000),
    Param("period_s", 0.2, "seconds between publications", 0.001, 3600.0),
    Param("min_subscribers", 1, "publish only once this many subscribers have matched", 0, 1000),
    Param(
        "ack_timeout_s",
        10.0,
        "how long to wait for reliable subscribers to acknowledge",
        0.0,
        600.0,
    ),
)


def load_image(path: Path) -> np.ndarray:
    """Read a single-channel image file; raise ValueError with the reason if it is not one."""
    if not path.is_file():
        raise ValueError(f"image_file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        image = np.load(path, allow_pickle=False)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"cannot read {str(path)!r} as an image")
    if image.ndim != 2:
        raise ValueError(f"{str(path)!r} holds shape {image.shape}; expected one channel (H, W)")
    return image


class ImagePublisher(FiniteNode):
    def __init__(self) -> None:
        super().__init__("image_publisher")
        self.p = declare(self, PARAMS)
        self.image = load_image(Path(self.p.image_file))
        self.publisher = self.create_publisher(Image, self.p.topic, 10)
        self.sent = 0
        self.timer = self.create_timer(self.p.period_s, self._tick)

    def _tick(self) -> None:
        if self.publisher.get_subscription_count() < self.p.min_subscribers:
            return
        msg = image_to_msg(
            self.image, stamp=self.get_clock().now().to_msg(), frame_id=self.p.frame_id
        )
        self.publisher.publish(msg)
        self.sent += 1
        self.get_logger().info(
            f"published {msg.width}x{msg.height} {msg.encoding} on {self.p.topic} ({self.sent})"
        )
        if self.p.count and self.sent >= self.p.count:
            self.timer.cancel()
            acked = self.publisher.wait_for_all_acked(Duration(seconds=self.p.ack_timeout_s))
            if not acked:
                self.get_logger().error("subscribers did not acknowledge the image in time")
            self.finish(0 if acked else 1)


def main(args: list[str] | None = None) -> int:
    return run_node(ImagePublisher, args)


if __name__ == "__main__":
    sys.exit(main())
