"""Run every benchmark script (bench/bench_*.py) in turn; `make bench` calls this."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    failed = [
        s.name
        for s in scripts
        if subprocess.run([sys.executable, str(s), *sys.argv[1:]]).returncode
    ]
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")
