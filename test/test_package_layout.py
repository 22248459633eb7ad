"""The package as ROS 2 sees it: ament index, share folder, launch file, package.xml, colcon."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from distutils.core import run_setup
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from setuptools import distutils  # noqa: F401  (distutils for Python 3.12+)

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "reconstruct.launch.py"


def _setup_distribution():
    return run_setup(str(ROOT / "setup.py"), stop_after="init")


def _console_scripts() -> set[str]:
    scripts = _setup_distribution().entry_points["console_scripts"]
    return {line.split("=")[0].strip() for line in scripts}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def test_share_directory_holds_config_and_launch():
    share = Path(get_package_share_directory("x23d_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "config" / "reconstruct.yaml").is_file()
    assert (share / "launch" / "reconstruct.launch.py").is_file()


def test_launch_file_is_valid_python():
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")


def test_launch_file_starts_only_installed_executables():
    tree = ast.parse(LAUNCH_FILE.read_text())
    nodes = _calls(tree, "Node")
    assert nodes, "the launch file starts no Node"
    scripts = _console_scripts()
    bin_dir = Path(sys.executable).parent
    for node in nodes:
        kwargs = {k.arg: k.value for k in node.keywords}
        assert ast.literal_eval(kwargs["package"]) == "x23d_ros"
        executable = ast.literal_eval(kwargs["executable"])
        assert executable in scripts, f"{executable!r} is not a console_script of setup.py"
        assert (bin_dir / executable).is_file(), f"{executable!r} is not installed"


def test_launch_file_names_only_config_files_that_exist():
    tree = ast.parse(LAUNCH_FILE.read_text())
    share = Path(get_package_share_directory("x23d_ros"))
    found = 0
    for call in _calls(tree, "PathJoinSubstitution"):
        head, *rest = call.args[0].elts
        if getattr(head.func, "id", None) == "FindPackageShare":
            assert ast.literal_eval(head.args[0]) == "x23d_ros"
            relative = Path(*(ast.literal_eval(part) for part in rest))
            assert (share / relative).is_file(), f"launch file names missing {relative}"
            assert (ROOT / relative).is_file()
            found += 1
    assert found, "the launch file names no file of the package"


def test_package_xml_declares_every_ros_package_the_code_imports():
    manifest = ET.parse(ROOT / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "x23d_ros"
    declared = {e.text for e in manifest.iter() if e.tag in ("depend", "exec_depend")}
    imported = set()
    for source in (ROOT / "x23d_ros").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) (\w+)", source.read_text(), re.MULTILINE):
            top = match.group(1)
            if top in ("rclpy", "ament_index_python") or top.endswith(
                ("_msgs", "_srvs", "_interfaces")
            ):
                imported.add(top)
    # builtin_interfaces and rcl_interfaces come with rclpy.
    missing = imported - declared - {"builtin_interfaces", "rcl_interfaces"}
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def test_colcon_build_installs_executables_where_ros2_run_finds_them(tmp_path):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    subprocess.run(
        [
            *(str(Path(sys.executable).parent / "colcon"), "build", "--paths", str(ROOT)),
            *("--event-handlers", "console_stderr-"),
            *("--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")),
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    prefix = tmp_path / "install" / "x23d_ros"
    for executable in _console_scripts():
        assert (prefix / "lib" / "x23d_ros" / executable).is_file(), executable
    site = next(prefix.glob("lib/python3*/site-packages"))
    installed = dict(env, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(prefix))
    probe = (
        "import x23d_ros; from ament_index_python.packages import get_package_share_directory as g;"
        "print(x23d_ros.__file__); print(g('x23d_ros'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # not the source tree, which `python -c` would put first on sys.path
        env=installed,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(out[0]).is_relative_to(site), (
        "the colcon-installed package was not the one imported"
    )
    assert Path(out[1]) == prefix / "share" / "x23d_ros"
    assert (Path(out[1]) / "launch" / "reconstruct.launch.py").is_file()
