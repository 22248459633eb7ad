"""Check that images cross DDS intact between two processes of this package.

`image_publisher` and `image_probe` run as separate processes on an isolated ROS domain
(loopback only); the probe saves what it decoded, and that is compared with what was sent.
The first thing to run on a new machine or network: it exercises rclpy, the RMW, DDS
discovery and the image conversion with no C-arm attached.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RoundTrip:
    """What a round trip produced: the decoded image (None if none arrived) and the logs."""

    sent: np.ndarray
    received: np.ndarray | None
    seconds: float
    publisher_rc: int | None
    probe_rc: int | None
    log: str

    @property
    def intact(self) -> bool:
        return (
            self.received is not None
            and self.received.dtype == self.sent.dtype
            and np.array_equal(self.received, self.sent)
        )


def installed_executable(name: str) -> str:
    """Path of one of this package's executables: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable {name!r} of x23d_ros is not installed")
    return found


def isolated_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """This environment on a random (or given) ROS domain, with discovery on loopback only."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 101) if domain_id is None else domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def image_roundtrip(
    image: np.ndarray, workdir: Path, *, domain_id: int | None = None, timeout_s: float = 60.0
) -> RoundTrip:
    """Publish `image` from one process and receive it in another; see the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    sent_path = workdir / "sent.npy"
    received_dir = workdir / "received"
    np.save(sent_path, image)
    env = isolated_ros_env(domain_id)
    ros_args = ["--ros-args", "-p", "topic:=/x23d/transport_check/image"]
    start = time.monotonic()
    with (
        open(workdir / "probe.log", "w") as probe_log,
        open(workdir / "publisher.log", "w") as publisher_log,
    ):
        probe_args = ["-p", "count:=1", "-p", f"save_dir:={received_dir}"]
        probe = subprocess.Popen(
            [installed_executable("image_probe"), *ros_args, *probe_args],
            env=env,
            stdout=probe_log,
            stderr=subprocess.STDOUT,
        )
        publisher = subprocess.Popen(
            [installed_executable("image_publisher"), *ros_args, "-p", f"image_file:={sent_path}"],
            env=env,
            stdout=publisher_log,
            stderr=subprocess.STDOUT,
        )
        codes = []
        for proc in (publisher, probe):
            remaining = max(0.1, timeout_s - (time.monotonic() - start))
            try:
                codes.append(proc.wait(timeout=remaining))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes.append(None)
    seconds = time.monotonic() - start
    saved = received_dir / "image_0001.npy"
    received = np.load(saved, allow_pickle=False) if saved.is_file() else None
    log = "".join(
        f"--- {name}\n{(workdir / name).read_text()}" for name in ("publisher.log", "probe.log")
    )
    return RoundTrip(image, received, seconds, codes[0], codes[1], log)
