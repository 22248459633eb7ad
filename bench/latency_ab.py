"""Latency of two versions of the code on the same host, shots and weights (an A/B).

    .venv/bin/python bench/latency_ab.py --before d50ff03 [--weights default] [--rounds 2]

The reconstruction's single pass, 3 views → 5 meshes (`bench_model.latency`: median of 10
after a warm-up), on the first held-out case of `bench_model` (procedural, spine-centred,
the weights' shot size), for the code at `--before` (a git worktree in a temporary folder)
and the working tree, each in its own process, alternated `--rounds` times so that a drift of
the host shows. Writes bench/results/latency_ab.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

# Run in a code version's own folder, with that version on the path.
MEASURE = """
import json, sys
from pathlib import Path
sys.path.insert(0, "bench")
from bench_model import latency
from x23d_ros.pipeline import Reconstructor
r = latency(Reconstructor(sys.argv[1]), Path(sys.argv[2]), 10)
print(json.dumps(r))
"""


def measure(root: Path, weights: str, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, weights, str(data)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the A side")
    parser.add_argument("--weights", default="default", help="the same weights for both")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_model import heldout, shot_size

    from x23d_ros.pipeline import Reconstructor

    weights = args.weights
    if Path(weights).exists():
        weights = str(Path(weights).resolve())
    data = heldout(1, shot_size(Reconstructor(weights))).resolve()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict]] = {f"before ({rev})": [], "working tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(before), rev], cwd=ROOT, check=True
        )
        try:
            for _ in range(args.rounds):
                for name, root in zip(runs, (before, ROOT), strict=True):
                    runs[name].append(measure(root, weights, data))
                    print(name, runs[name][-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
    result = {
        "weights": args.weights,
        "data": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data),
        "cpu": platform.processor() or platform.machine(),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_ab.json").write_text(json.dumps(result, indent=1))
    stages = list(next(iter(runs.values()))[0])
    lines = [
        "# Latency A/B: two versions of the code, same host, shots and weights",
        "",
        f"Weights `{args.weights}`; {result['cpu']}; the first case of `{result['data']}`, "
        f"3 views; single pass, median of 10 a process; rounds alternated. Command: "
        f"`.venv/bin/python bench/latency_ab.py --before {rev}`.",
        "",
        "| code | round | " + " | ".join(f"{s} (ms)" for s in stages) + " |",
        "|---|---:|" + "---:|" * len(stages),
    ]
    for name, rounds in runs.items():
        for i, r in enumerate(rounds, 1):
            lines.append(f"| {name} | {i} | " + " | ".join(f"{r[s]:.0f}" for s in stages) + " |")
    (RESULTS / "latency_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
