"""The collision meshes' margin and cost on reconstructed vertebrae (issue #23 item 4).

    .venv/bin/python bench/bench_collision.py [--weights default] [--cases 4] [--padding-mm 2]

Reconstructs the first `--cases` cases of two held-out sets of `bench/bench_model.py`
(procedural-2, spine-centred; real-shapes-1-val, level-centred; 3 views), makes each
vertebra's collision mesh (`surface.collision_mesh`, the publisher's settings: 2 mm, 2000
triangles) and measures how deep every visual vertex lies inside it (open3d's signed
distance), the triangles, and how often it fell back to the padded hull; and the time of the
publisher's own call for a spine (`planner_scene.collision_meshes`, timed apart from the
margins' measurement).

Writes bench/results/collision.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from bench_model import heldout, shot_size  # noqa: E402

from x23d_ros import surface  # noqa: E402
from x23d_ros.data.dataset import ShotDataset  # noqa: E402
from x23d_ros.pipeline import Reconstructor, ShotSetError, shot_set_from_case  # noqa: E402
from x23d_ros.ros import planner_scene as ps  # noqa: E402

RESULTS = HERE / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--padding-mm", type=float, default=2.0)
    parser.add_argument("--max-triangles", type=int, default=2000)
    args = parser.parse_args()
    reconstructor = Reconstructor(args.weights, device="cpu")
    size = shot_size(reconstructor)
    sets = {
        "procedural-2, spine-centred": heldout(8, size),
        "real-shapes-1-val, level-centred": heldout(8, size, "level", 3, "real-shapes-1-val"),
    }
    rows, seconds, fallbacks, refused = [], [], 0, []
    for name, folder in sets.items():
        data = ShotDataset(folder)
        for case in range(min(args.cases, len(data))):
            try:
                recon = reconstructor.reconstruct(shot_set_from_case(data[case], [0, 1, 2]))
            except ShotSetError as error:  # the gate refused the set: nothing to pad
                refused.append(f"{name}, case {case}: {error}")
                continue
            # The publisher's own call, timed (the margins below are measured apart from it).
            start = time.perf_counter()
            ps.collision_meshes(recon, args.padding_mm, args.max_triangles)
            seconds.append(time.perf_counter() - start)
            for level, v in recon.vertebrae.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", surface.CollisionFallbackWarning)
                    cv, cf = surface.collision_mesh(
                        v.vertices, v.faces, args.padding_mm, args.max_triangles
                    )
                fallbacks += bool(caught)
                depth = surface._depth(cv, cf, v.vertices)
                rows.append(
                    {
                        "set": name,
                        "case": case,
                        "level": level,
                        "min_mm": float(depth.min()),
                        "median_mm": float(np.median(depth)),
                        "triangles": len(cf),
                    }
                )
    mins = np.array([r["min_mm"] for r in rows])
    medians = np.array([r["median_mm"] for r in rows])
    result = {
        "weights_sha256": reconstructor.weights_sha256,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "padding_mm": args.padding_mm,
        "max_triangles": args.max_triangles,
        "vertebrae": len(rows),
        "smallest_margin_mm": float(mins.min()),
        "median_margin_mm": float(np.median(medians)),
        "largest_median_margin_mm": float(medians.max()),
        "hull_fallbacks": fallbacks,
        "refused_sets": refused,
        "most_triangles": max(r["triangles"] for r in rows),
        "seconds_per_spine_median": float(np.median(seconds)),
        "seconds_per_spine_max": float(np.max(seconds)),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "collision.json").write_text(json.dumps(result, indent=1))
    md = [
        "# Collision meshes: margin and cost",
        "",
        f"{len(rows)} reconstructed vertebrae ({args.cases} cases of each held-out set, 3 views), "
        f"padding {args.padding_mm} mm, at most {args.max_triangles} triangles; CPU "
        f"{result['cpu']}, {result['threads']} threads. Margin: how deep each visual vertex "
        "lies inside its collision mesh (open3d signed distance).",
        "",
        "| | |",
        "|---|---:|",
        f"| smallest margin of any visual vertex | {result['smallest_margin_mm']:.2f} mm |",
        f"| median margin (median over vertebrae) | {result['median_margin_mm']:.2f} mm |",
        f"| largest median margin of a vertebra | {result['largest_median_margin_mm']:.2f} mm |",
        f"| padded-hull fallbacks | {fallbacks} |",
        f"| shot sets the gate refused (no meshes) | {len(refused)} |",
        f"| most triangles | {result['most_triangles']} |",
        f"| seconds for a spine's collision meshes (median, max) | "
        f"{result['seconds_per_spine_median']:.2f}, {result['seconds_per_spine_max']:.2f} |",
        "",
    ]
    (RESULTS / "collision.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
