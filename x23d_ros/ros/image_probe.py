"""`image_probe`: check what a C-arm driver really sends on an image topic.

Logs each image's size, encoding, value range and SHA-256 of its pixels, explains why a
malformed one cannot be decoded, and optionally saves each decoded image as .npy with a
JSON-lines index, so that a site engineer can compare it with the source byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image

from x23d_ros.ros.image_conversion import ImageMessageError, image_from_msg
from x23d_ros.ros.node_runner import FiniteNode, run_node
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param("topic", "/carm/image_raw", "image topic to probe"),
    Param(
        "count", 0, "exit after this many images (decoded or not); 0 = until stopped", 0, 1_000_000
    ),
    Param("save_dir", "", "if set, save each decoded image there as image_NNNN.npy + index.jsonl"),
)


class ImageProbe(FiniteNode):
    def __init__(self) -> None:
        super().__init__("image_probe")
        self.p = declare(self, PARAMS)
        self.save_dir = Path(self.p.save_dir) if self.p.save_dir else None
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self.seen = 0
        self.rejected = 0
        self.create_subscription(Image, self.p.topic, self._on_image, 10)
        self.get_logger().info(f"probing {self.p.topic}")

    def _on_image(self, msg: Image) -> None:
        self.seen += 1
        try:
            image = image_from_msg(msg)
        except ImageMessageError as err:
            self.rejected += 1
            self.get_logger().warning(f"image {self.seen} cannot be decoded: {err}")
        else:
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            record = {
                "index": self.seen,
                "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                "frame_id": msg.header.frame_id,
                "width": msg.width,
                "height": msg.height,
                "encoding": msg.encoding,
                "min": float(image.min()),
                "max": float(image.max()),
                "sha256": digest,
            }
            self.get_logger().info(
                f"image {self.seen}: {msg.width}x{msg.height} {msg.encoding} "
                f"[{record['min']:g}, {record['max']:g}] sha256 {digest[:16]}"
            )
            if self.save_dir is not None:
                np.save(self.save_dir / f"image_{self.seen:04d}.npy", image)
                with open(self.save_dir / "index.jsonl", "a") as index:
                    index.write(json.dumps(record) + "\n")
        if self.p.count and self.seen >= self.p.count:
            self.finish(0 if self.rejected == 0 else 1)


def main(args: list[str] | None = None) -> int:
    return run_node(ImageProbe, args)


if __name__ == "__main__":
    sys.exit(main())
