"""Load benchmark: a 30 Hz fluoroscopy stream into the reconstruction process for 10 minutes.

    .venv/bin/python bench/load.py [--seconds 600] [--rate 30] [--size 512]

`x23d_ros.ros.load_check.stream`: posed 32FC1 frames with camera info at `--rate` while the
C-arm turns 6°/s; writes bench/results/load.json and .md: frames sent and received, `lost`
(accepted shots lost: must be 0), drops by reason, the process's RSS at the start, the end
and its maximum, its time series (every 10 s) and its slope over the second half (a plateau
reads ≈ 0 MB a minute), and its CPU time.
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
    run = stream(seconds=args.seconds, rate_hz=args.rate, size=args.size)
    result = run.as_dict()
    slope = run.rss_slope_mb_per_min()  # NaN for a run too short: null in the JSON
    result["rss_slope_mb_per_min_second_half"] = None if slope != slope else round(slope, 2)
    result["host"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    series = result.pop("rss_series")
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    every = max(1, len(series) // 12)  # about a dozen rows
    shown = series[::every] + ([] if (len(series) - 1) % every == 0 else series[-1:])
    trace = "\n".join(f"| {t:.0f} | {mb:.1f} |" for t, mb in shown)
    (RESULTS / "load.md").write_text(
        f"# Load: {args.rate:g} Hz of {args.size}² frames for {args.seconds:g} s\n\n"
        f"`lost` (accepted shots lost) must be 0.\n\n| | value |\n|---|---:|\n{rows}\n\n"
        "## RSS over the run (the last row after the last reconstruction)\n\n"
        f"| s | RSS MB |\n|---:|---:|\n{trace}\n"
    )
    print((RESULTS / "load.md").read_text())


if __name__ == "__main__":
    main()
