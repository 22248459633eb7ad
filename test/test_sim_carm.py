"""The simulated C-arm drives the reconstruction process end to end over DDS."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.ros.processes import start_bringup, stop
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
    bringup = start_bringup(env, log, session_dir=tmp_path, device="cpu", points_per_vertebra=300)
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
        stop(bringup)
        log.close()
        probe.close()
    cloud = read_point_cloud(probe.clouds[-1])
    assert len(cloud) >= 3 * 300 and set(np.unique(cloud["label"])) <= {1, 2, 3, 4, 5}
    # Three shots were accepted and persisted.
    assert len(list(tmp_path.glob("*/shot_*.npz"))) == 3


def test_replaying_the_shipped_demo_bag_yields_the_spine_of_its_case(tmp_path, ros_domain_id):
    from scipy.spatial import cKDTree
    from test_bringup import Probe

    from x23d_ros.data.simulate import procedural_spine
    from x23d_ros.ros.bags import DEMO_BAG, read
    from x23d_ros.surface import mask_surface_mm

    assert {t for t, _, _ in read(DEMO_BAG)} == {
        "/carm/image_raw",
        "/carm/camera_info",
        "/carm/pose",
    }
    env = isolated_ros_env(ros_domain_id)
    log_path = tmp_path / "processes.log"
    log = open(log_path, "w")  # noqa: SIM115
    bringup = start_bringup(env, log, session_dir=tmp_path, device="cpu", points_per_vertebra=300)
    probe = Probe(ros_domain_id)
    try:
        replay = subprocess.run(
            [installed_executable("x23d-ros"), "replay", "demo", "--rate", "4"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=180,
        )
        assert replay.returncode == 0, log_path.read_text()[-3000:]
        assert probe.spin_until(lambda: probe.clouds, 180), log_path.read_text()[-3000:]
    finally:
        stop(bringup)
        log.close()
        probe.close()
    msg = probe.clouds[-1]
    assert msg.header.frame_id == "patient_ref"
    cloud = read_point_cloud(msg)
    assert set(np.unique(cloud["label"])) <= {1, 2, 3, 4, 5}
    # The bag's case: `x23d-ros record --seed 2026`, whose spine is the first draw of its RNG.
    anatomy = procedural_spine(np.random.default_rng([2026, 0]), spacing_mm=2.0)
    surface_mm = mask_surface_mm(anatomy.labels > 0, anatomy.affine)
    xyz_mm = 1000.0 * np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(float)
    distance = cKDTree(surface_mm).query(xyz_mm)[0]
    print(f"demo bag: cloud → ground-truth bone surface, mean {distance.mean():.2f} mm")
    assert np.median(distance) < 10.0


def test_sim_carm_renders_the_poses_of_a_yaml_file(tmp_path):
    """Shots at given poses: the spine's centre projects where the principal ray says."""
    import yaml

    from x23d_ros import geometry
    from x23d_ros.ros.sim_carm import render_posed_case

    poses = [
        geometry.look_at(np.array(s, float), np.array([0.0, 0.0, 90.0]), [0, 0, 1])
        for s in ([0, -600, 90], [600, 0, 90])
    ]
    spec = {
        "image_size": 64,
        "shots": [
            {"T_ref_source": T.tolist(), "sdd_mm": 1000.0, "detector_mm": 300.0} for T in poses
        ],
    }
    (tmp_path / "poses.yaml").write_text(yaml.safe_dump(spec))
    item = render_posed_case(4, str(tmp_path / "poses.yaml"), "synthetic", spacing_mm=3.0)
    assert item["images"].shape == (2, 64, 64)
    np.testing.assert_allclose(item["T_ref_source"].numpy(), np.stack(poses))
    np.testing.assert_allclose(item["K"][0].numpy(), geometry.intrinsics(1000.0, 300 / 64, 64, 64))
    assert float(item["images"].max()) > 0.5  # bone in view
