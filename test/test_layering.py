"""shared/DESIGN.md §2: the core imports no rclpy (nor any ROS message package)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where every ROS Python package is unimportable.
_BLOCK_ROS = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class BlockRos(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in {"rclpy", "rcl_interfaces", "builtin_interfaces", "ament_index_python"} or (
                top.endswith(("_msgs", "_srvs"))
            ):
                raise ImportError(f"{name} is blocked: the core must not import ROS")
            return None

    sys.meta_path.insert(0, BlockRos())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_ROS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_core_module_imports_with_ros_unimportable():
    result = _run(
        """
        import x23d_ros
        core = [m.name for m in pkgutil.walk_packages(x23d_ros.__path__, "x23d_ros.")
                if not m.name.startswith("x23d_ros.ros")]
        assert core, "no core modules found"
        for name in core:
            importlib.import_module(name)
        print("imported", len(core), "core modules:", ", ".join(core))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "x23d_ros.cli" in result.stdout


def test_the_ros_blocker_really_blocks_the_ros_layer():
    result = _run("import x23d_ros.ros.image_conversion")
    assert result.returncode != 0
    assert "blocked: the core must not import ROS" in result.stderr
