"""Real DDS: two processes of the package exchange a full-size C-arm frame on loopback."""

from __future__ import annotations

import json

import numpy as np

from x23d_ros.ros.transport_check import image_roundtrip


def test_a_1024_mono16_image_crosses_dds_between_processes_intact(tmp_path, ros_domain_id):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 65535, (1024, 1024), dtype=np.uint16, endpoint=True)

    result = image_roundtrip(image, tmp_path, domain_id=ros_domain_id, timeout_s=90)

    assert result.publisher_rc == 0, result.log
    assert result.probe_rc == 0, result.log
    assert result.received is not None, result.log
    assert result.received.dtype == np.uint16
    np.testing.assert_array_equal(result.received, image)
    record = json.loads((tmp_path / "received" / "index.jsonl").read_text().splitlines()[0])
    assert (record["width"], record["height"], record["encoding"]) == (1024, 1024, "mono16")
