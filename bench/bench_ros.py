"""End-to-end latency over ROS 2: the last shot's publication → the PointCloud2's arrival.

    .venv/bin/python bench/bench_ros.py [--runs 3]

Each run starts `bringup` on a private ROS domain, replays the shipped demo bag (3 synthetic
shots) and times, on the receiving side, the spine's arrival after the third shot was
published (`x23d_ros.ros.demo.run`). Writes bench/results/ros.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from statistics import median

import torch

from x23d_ros.ros import demo

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs, load = [], []
    for _ in range(args.runs):
        # The host's 1-minute load before each run: runs on one host have differed by a factor
        # of two, and this tells a busy host from a slow pipeline.
        load.append(round(os.getloadavg()[0], 2))
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(demo.run(Path(tmp)))
    latency = [r["latency_last_shot_to_cloud_ms"] for r in runs]
    stages = {k: median(r["stages_ms"][k] for r in runs) for k in runs[0]["stages_ms"]}
    result = {
        "device": runs[0]["device"],
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "latency_last_shot_to_cloud_ms": {"median": median(latency), "all": latency},
        "load_1min_before_each_run": load,
        "reconstructor_stages_ms": stages,
        "levels": runs[-1]["levels"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ros.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# End-to-end latency over ROS 2",
        "",
        f"Demo bag (3 synthetic shots, 256²) → bringup on {result['device']} "
        f"({result['cpu']}, {result['threads']} threads) → PointCloud2; {args.runs} runs "
        f"({', '.join(f'{v:.0f}' for v in latency)} ms; host load before each: "
        f"{', '.join(str(v) for v in load)}).",
        "",
        "| last shot published → spine received (ms) | "
        + " | ".join(f"{k} (ms)" for k in stages)
        + " |",
        "|---:|" + "---:|" * len(stages),
        f"| {median(latency):.0f} | " + " | ".join(f"{v:.0f}" for v in stages.values()) + " |",
    ]
    (RESULTS / "ros.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
