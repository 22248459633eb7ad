"""Start and stop the reconstruction process from Python (demo, benchmarks, tests)."""

from __future__ import annotations

import signal
import subprocess
from typing import IO

from x23d_ros.ros.transport_check import installed_executable


def start_bringup(env: dict[str, str], log: IO, **params: object) -> subprocess.Popen:
    """`bringup` with `-p name:=value` for each of `params`, its output into `log`."""
    args = [installed_executable("bringup"), "--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Ctrl-C, as a user would; kill if it has not ended after `timeout_s`."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
