"""Data-engine benchmark: anatomy generation, each renderer per shot, cases per minute.

    .venv/bin/python bench/bench_data.py [--device cpu|cuda] [--quick]

Writes bench/results/data[_<device>].json and .md. Timings are wall-clock medians on this
machine with torch's default thread count; the device and CPU count are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

from x23d_ros.anatomy.procedural import generate
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.poses import sample_views
from x23d_ros.xray.instruments import instrument_densities
from x23d_ros.xray.realistic import fluoroscopy, sample_effects
from x23d_ros.xray.render import RenderParams, cast

RESULTS = Path(__file__).parent / "results"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and cases")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    size = 512
    rng = np.random.default_rng(0)

    t_anatomy, anatomy = timed(lambda: generate(7, spacing_mm=1.0), repeats)
    centre = np.mean(list(anatomy.centres_mm().values()), axis=0)
    pose = sample_views(1, centre, rng)[0]
    K, T = pose.intrinsics(size), pose.T_ref_source[None]
    titanium, iron, _ = instrument_densities(anatomy, np.random.default_rng(1))
    params = RenderParams()

    t_synthetic, _ = timed(
        lambda: cast(anatomy, None, None, K, T, size, params, args.device, synthetic_only=True),
        repeats,
    )
    t_cast, (_, areal) = timed(
        lambda: cast(anatomy, titanium, iron, K, T, size, params, args.device), repeats
    )
    generator = torch.Generator(device=args.device).manual_seed(0)
    fx = sample_effects(rng)
    t_effects, _ = timed(
        lambda: fluoroscopy(areal[0], fx, pose.detector_mm / size, generator), repeats
    )

    workers = min(2, os.cpu_count() or 1)
    n_cases = 2 if args.quick else 4
    out = Path(tempfile.mkdtemp(prefix="x23d_bench_"))
    try:
        start = time.perf_counter()
        simulate(
            SimulateConfig(out=out, cases=n_cases, views=8, seed=0, cases_per_shard=1),
            workers=workers,
        )
        t_sim = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)

    result = {
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "anatomy_voxels": int(np.prod(anatomy.hu.shape)),
        "anatomy_generation_s": round(t_anatomy, 2),
        "synthetic_ms_per_512_shot": round(1000 * t_synthetic, 1),
        "realistic_ms_per_512_shot": round(1000 * (t_cast + t_effects), 1),
        "realistic_effects_ms_per_512_shot": round(1000 * t_effects, 1),
        "simulate_cases_per_minute": round(60 * n_cases / t_sim, 2),
        "simulate_setting": f"{n_cases} cases × 8 views at 256², 1 mm anatomy, {workers} workers",
        "command": "make bench" if not args.quick else "python bench/bench_data.py --quick",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("data" if args.device == "cpu" else f"data_{args.device}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        (
            f"anatomy generation (1 mm, {result['anatomy_voxels'] // 10**6} Mvoxels)",
            f"{t_anatomy:.1f} s",
        ),
        (
            "synthetic renderer, one 512² shot (incl. volume preparation)",
            f"{1000 * t_synthetic:.0f} ms",
        ),
        (
            "realistic renderer, one 512² shot (incl. volume preparation)",
            f"{1000 * (t_cast + t_effects):.0f} ms",
        ),
        ("  of which the per-shot physics after the ray-cast", f"{1000 * t_effects:.0f} ms"),
        (
            f"x23d simulate ({result['simulate_setting']})",
            f"{result['simulate_cases_per_minute']} cases/min",
        ),
    ]
    table = f"| data engine, {args.device} ({result['cpu_count']} CPUs) | |\n|---|---|\n"
    table += "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
    stem.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
