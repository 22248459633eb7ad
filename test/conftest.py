"""Shared fixtures: ROS tests run real processes on an isolated domain (loopback, random id)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def ros_domain_id() -> int:
    """A random ROS_DOMAIN_ID, so parallel or leftover processes never cross-talk with a test."""
    return random.randint(1, 101)
