"""sensor_msgs/Image ⇄ numpy for single-channel X-ray images (mono8, mono16, 16UC1, 32FC1).

Decoding goes through `rosbags.image` (cv_bridge is not on PyPI); this module adds the checks
a driver's message must pass first, so that a malformed image raises `ImageMessageError` with
the reason instead of a numpy error deep inside the decoder.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
from builtin_interfaces.msg import Time
from rosbags.image import image_to_cvimage
from sensor_msgs.msg import Image

#: The encodings a C-arm image may come in, with the pixel type each decodes to.
DTYPE_OF_ENCODING: dict[str, np.dtype] = {
    "mono8": np.dtype(np.uint8),
    "mono16": np.dtype(np.uint16),
    "16UC1": np.dtype(np.uint16),
    "32FC1": np.dtype(np.float32),
}
#: The value of full white of each integer encoding (a fluoroscopy frame's display scale).
FULL_SCALE = {"mono8": 255.0, "mono16": 65535.0, "16UC1": 65535.0}
_ENCODING_OF_DTYPE = {
    np.dtype(np.uint8): "mono8",
    np.dtype(np.uint16): "mono16",
    np.dtype(np.float32): "32FC1",
}


class ImageMessageError(ValueError):
    """A sensor_msgs/Image that cannot be a single-channel X-ray image; the message says why."""


def image_to_msg(image: np.ndarray, *, stamp: Time, frame_id: str) -> Image:
    """Pack a (H, W) uint8, uint16 or float32 image into a sensor_msgs/Image (native byte order)."""
    if image.ndim != 2:
        raise ImageMessageError(f"expected a (H, W) single-channel image, got shape {image.shape}")
    encoding = _ENCODING_OF_DTYPE.get(image.dtype.newbyteorder("="))
    if encoding is None:
        raise ImageMessageError(
            f"unsupported pixel type {image.dtype}; expected one of "
            f"{sorted(str(d) for d in _ENCODING_OF_DTYPE)}"
        )
    image = np.ascontiguousarray(image)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = image.shape
    msg.encoding = encoding
    byteorder = sys.byteorder if image.dtype.byteorder in "=|" else image.dtype.byteorder
    msg.is_bigendian = int(byteorder in (">", "big"))
    msg.step = image.shape[1] * image.dtype.itemsize
    msg.data = image.tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """Decode a sensor_msgs/Image into a new (H, W) array of the encoding's pixel type.

    Raises `ImageMessageError` for an unsupported encoding, an empty image, a row stride
    shorter than a row, or data shorter than `step * height` (a truncated message).
    Row padding (`step` longer than a row) is removed.
    """
    dtype = DTYPE_OF_ENCODING.get(msg.encoding)
    if dtype is None:
        raise ImageMessageError(
            f"unsupported encoding {msg.encoding!r}; expected one of {sorted(DTYPE_OF_ENCODING)}"
        )
    if msg.height == 0 or msg.width == 0:
        raise ImageMessageError(f"empty image: {msg.width}x{msg.height}")
    row_bytes = msg.width * dtype.itemsize
    if msg.step < row_bytes:
        raise ImageMessageError(
            f"step {msg.step} is shorter than one row of {msg.width} {msg.encoding} pixels "
            f"({row_bytes} bytes)"
        )
    expected = msg.step * msg.height
    if len(msg.data) < expected:
        raise ImageMessageError(
            f"truncated image data: {len(msg.data)} bytes, expected step*height = {expected}"
        )
    data = memoryview(msg.data).cast("B")[:expected]
    if msg.step != row_bytes:
        rows = np.frombuffer(data, np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]
        data = np.ascontiguousarray(rows).data
    packed = SimpleNamespace(
        encoding=msg.encoding,
        height=msg.height,
        width=msg.width,
        is_bigendian=bool(msg.is_bigendian),
        data=data,
    )
    return np.array(image_to_cvimage(packed), dtype=dtype, copy=True)
