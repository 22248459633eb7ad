"""sensor_msgs/Image ⇄ numpy for the encodings a C-arm sends, and the errors for bad images."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from x23d_ros.ros.image_conversion import ImageMessageError, image_from_msg, image_to_msg

STAMP = Time(sec=12, nanosec=345)


@pytest.mark.parametrize(
    ("dtype", "encoding"), [(np.uint8, "mono8"), (np.uint16, "mono16"), (np.float32, "32FC1")]
)
def test_image_survives_a_round_trip_through_a_message(dtype, encoding):
    rng = np.random.default_rng(1)
    image = (rng.random((7, 11)) * 200).astype(dtype)
    msg = image_to_msg(image, stamp=STAMP, frame_id="carm_source_optical")
    assert (msg.encoding, msg.height, msg.width) == (encoding, 7, 11)
    assert msg.header.frame_id == "carm_source_optical"
    decoded = image_from_msg(msg)
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, image)


def test_16uc1_decodes_like_mono16():
    msg = image_to_msg(np.arange(12, dtype=np.uint16).reshape(3, 4), stamp=STAMP, frame_id="f")
    msg.encoding = "16UC1"
    np.testing.assert_array_equal(image_from_msg(msg), np.arange(12).reshape(3, 4))


def test_big_endian_mono16_is_byte_swapped():
    image = np.array([[1, 256], [513, 65535]], dtype=np.uint16)
    msg = image_to_msg(image.astype(">u2"), stamp=STAMP, frame_id="f")
    assert msg.is_bigendian == 1
    np.testing.assert_array_equal(image_from_msg(msg), image)


def test_row_padding_is_removed():
    image = np.arange(6, dtype=np.uint16).reshape(2, 3)
    padded = np.zeros((2, 4), dtype=np.uint16)
    padded[:, :3] = image
    msg = image_to_msg(padded, stamp=STAMP, frame_id="f")
    msg.width = 3  # step stays 8 bytes: one pixel of padding per row
    np.testing.assert_array_equal(image_from_msg(msg), image)


def test_truncated_data_is_refused_with_the_byte_counts():
    msg = image_to_msg(np.zeros((4, 4), np.uint16), stamp=STAMP, frame_id="f")
    msg.data = bytes(msg.data)[:-2]
    with pytest.raises(ImageMessageError, match=r"truncated image data: 30 bytes, expected .* 32"):
        image_from_msg(msg)


def test_colour_encoding_is_refused_by_name():
    msg = Image(height=1, width=1, encoding="rgb8", step=3, data=b"\x00\x00\x00")
    with pytest.raises(ImageMessageError, match="unsupported encoding 'rgb8'"):
        image_from_msg(msg)


def test_step_shorter_than_a_row_is_refused():
    msg = image_to_msg(np.zeros((2, 4), np.uint16), stamp=STAMP, frame_id="f")
    msg.step = 4
    with pytest.raises(ImageMessageError, match="step 4 is shorter than one row"):
        image_from_msg(msg)


def test_multichannel_array_cannot_be_packed():
    with pytest.raises(ImageMessageError, match="single-channel"):
        image_to_msg(np.zeros((2, 2, 3), np.uint8), stamp=STAMP, frame_id="f")
