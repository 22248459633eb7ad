"""The simulated C-arm drives the reconstruction process end to end over DDS."""

from __future__ import annotations

import signal
import subprocess

import numpy as np
import pytest

from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.ros.spine_messages import read_point_cloud
from x23d_ros.ros.transport_check import installed_executable, isolated_ros_env


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_carm_case")
    simulate(SimulateConfig(out=out, cases=1, views=3, seed=33, image_size=128, spacing_mm=2.0))
    return out


def test_sim_carm_shots_become_a_published_spine(shards, tmp_path, ros_domain_id):
    from test_bringup import Probe

    env = isolated_ros_env(ros_domain_id)
    log = open(tmp_path / "processes.log", "w")  # noqa: SIM115
    bringup = subprocess.Popen(
        [
            installed_executable("bringup"),
            "--ros-args",
            "-p",
            f"session_dir:={tmp_path}",
            "-p",
            "device:=cpu",
            "-p",
            "points_per_vertebra:=300",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    probe = Probe(ros_domain_id)
    try:
        sim = subprocess.run(
            [
                installed_executable("sim_carm"),
                "--ros-args",
                "-p",
                f"shards:={shards}",
                "-p",
                "views:=3",
                "-p",
                "period_s:=0.3",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=180,
        )
        assert sim.returncode == 0, (tmp_path / "processes.log").read_text()[-3000:]
        assert probe.spin_until(lambda: probe.clouds, 180), (
            tmp_path / "processes.log"
        ).read_text()[-3000:]
    finally:
        bringup.send_signal(signal.SIGINT)
        try:
            bringup.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bringup.kill()
        log.close()
        probe.close()
    cloud = read_point_cloud(probe.clouds[-1])
    assert len(cloud) >= 3 * 300 and set(np.unique(cloud["label"])) <= {1, 2, 3, 4, 5}
    # Three shots were accepted and persisted.
    assert len(list(tmp_path.glob("*/shot_*.npz"))) == 3
