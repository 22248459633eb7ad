"""Shared fixtures: ROS tests run real processes on an isolated domain (loopback, random id)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def ros_domain_id() -> int:
    """A random ROS_DOMAIN_ID, so parallel or leftover processes never cross-talk with a test."""
    return random.randint(1, 101)


@pytest.fixture(scope="session")
def case(tmp_path_factory) -> dict:
    """One simulated case (seed 21, 3 synthetic shots, 128²) that the ROS tests send as shots."""
    from x23d_ros.data.dataset import ShotDataset
    from x23d_ros.data.simulate import SimulateConfig, simulate

    out = tmp_path_factory.mktemp("ros_case")
    simulate(SimulateConfig(out=out, cases=1, views=3, seed=21, image_size=128, spacing_mm=2.0))
    return ShotDataset(out)[0]


@pytest.fixture(scope="session")
def paired(tmp_path_factory):
    """A folder with one procedural case in both domains from the same 3 poses, as the style
    transfer was trained on (320², no image-intensifier distortion, shots centred on a
    level): the fluoroscopy tests' shots."""
    from x23d_ros.data.simulate import SimulateConfig, simulate

    out = tmp_path_factory.mktemp("paired")
    simulate(
        SimulateConfig(
            out=out,
            cases=1,
            views=3,
            seed=31,
            image_size=320,
            spacing_mm=2.0,
            configuration="ap_lat_oblique",
            centring="level",
            distortion=False,
        )
    )
    return out


class FakeClock:
    """The wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock for code that takes one (`clock=`), at 0 s until a test sets `now`."""
    return FakeClock()
