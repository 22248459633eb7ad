"""Install setup.py's data_files into a prefix as symlinks, like `colcon build --symlink-install`.

`pip install -e .` installs the Python package but not `data_files` (setuptools' editable mode
does not support them), so the ament index entry, package.xml, launch and config files would be
missing from the venv and `get_package_share_directory('x23d_ros')` would fail. Symlinks keep
edits to launch/config files live, as an editable install does for the code.

Usage: python tools/link_share.py PREFIX
"""

from __future__ import annotations

import sys
from distutils.core import run_setup
from pathlib import Path

from setuptools import distutils  # noqa: F401  (makes distutils.core importable on Python 3.12+)


def link_data_files(root: Path, prefix: Path) -> list[Path]:
    """Symlink every `data_files` entry of ROOT/setup.py under PREFIX; return the links made."""
    dist = run_setup(str(root / "setup.py"), stop_after="init")
    links = []
    for target_dir, sources in dist.data_files:
        dest_dir = prefix / target_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        for source in sources:
            link = dest_dir / Path(source).name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to((root / source).resolve())
            links.append(link)
    return links


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/link_share.py PREFIX")
    root = Path(__file__).resolve().parent.parent
    links = link_data_files(root, Path(sys.argv[1]).resolve())
    print(f"linked {len(links)} data files into {sys.argv[1]}")


if __name__ == "__main__":
    main()
