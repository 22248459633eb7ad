"""Load benchmark: a 30 Hz fluoroscopy stream into the reconstruction process for 10 minutes.

    .venv/bin/python bench/load.py [--seconds 600] [--rate 30] [--size 512]

`x23d_ros.ros.load_check.stream`: posed 32FC1 frames with camera info at `--rate` while the
C-arm turns 6°/s; writes bench/results/load.json and .md: frames sent and received, `lost`
(accepted shots lost: must be 0), drops by reason, the process's RSS at the start, the end
and its maximum, and its CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from x23d_ros.ros.load_check import stream

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    result = stream(seconds=args.seconds, rate_hz=args.rate, size=args.size).as_dict()
    result["host"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    (RESULTS / "load.md").write_text(
        f"# Load: {args.rate:g} Hz of {args.size}² frames for {args.seconds:g} s\n\n"
        f"`lost` (accepted shots lost) must be 0.\n\n| | value |\n|---|---:|\n{rows}\n"
    )
    print((RESULTS / "load.md").read_text())


if __name__ == "__main__":
    main()
