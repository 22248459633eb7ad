"""The level an operator's count exposes: how well the fine stage reconstructs it where the
count puts it.

When the surgeon counts the published spine one level off (`/x23d/confirm_levels` with a
shift), one end level has no name the networks gave: after −1 their "L2" is L1 and the real
L5 is the one they took for the sacrum; after +1 the real L1 is the one they took for T12.
The publisher then runs the fine stage alone (`pipeline.exposed_job`): at every published
level's centre and, for the exposed level, one local level step beyond its neighbour
(`pipeline.expected_centres`), refused when no shot shows half of it; and publishes that
level too if it passes.

This measures that path on held-out cases whose end levels the product found: for L1 (placed
from L2 and L3) and for L5 (from L4 and L3), the fine stage at the extrapolated centre against
the product's own reconstruction of the same level (which had the coarse stage's centre), both
scored against the ground truth (`evaluate.score`), with the distance from each centre to the
true box centre. 3 views (AP + lateral + oblique), synthetic domain, shipped weights.

    .venv/bin/python bench/bench_exposed_levels.py [--cases 16]

Writes bench/results/exposed_levels.json and .md (`make bench` runs it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import RESULTS, heldout, shot_size

from x23d_ros.data.dataset import ShotDataset
from x23d_ros.evaluate import score, true_centres
from x23d_ros.pipeline import Reconstructor, ShotSetError, exposed_job, shot_set_from_case

#: The held-out sets (bench_model's): whole lumbar spines in view, so both ends can be scored.
SETS = {
    "procedural-2, spine-centred": dict(centring="spine", generator="procedural-2", views=6),
    "real vertebra shapes (held-out persons), whole scans, spine-centred": dict(
        centring="spine", generator="real-shapes-1-val", views=3, scan_cut="never"
    ),
}
ENDS = {"L1": ["L2", "L3"], "L5": ["L3", "L4"]}


def measure(reconstructor: Reconstructor, data: Path, cases: int) -> dict:
    dataset = ShotDataset(data, "synthetic")
    rows = {end: [] for end in ENDS}
    for i in range(min(cases, len(dataset))):
        item = dataset[i]
        labels, affine = item["labels"].numpy(), item["affine"].numpy()
        truth = true_centres(labels, affine)
        shots = shot_set_from_case(item, [0, 1, 2], "synthetic")
        try:
            recon = reconstructor.reconstruct(shots)
        except ShotSetError:
            continue
        product = score(recon, labels, affine)
        for end, near in ENDS.items():
            if end not in truth or end not in recon.vertebrae:
                continue
            if not all(n in recon.vertebrae for n in near):
                continue
            others = {n: v for n, v in recon.vertebrae.items() if n != end}
            centres, _ = exposed_job(replace(recon, vertebrae=others), [end])
            placed = centres[end]
            try:
                extra = reconstructor.reconstruct(shots, centres=centres, judge_given=True)
            except ShotSetError:  # the gate refused the set: the level is not published
                extra = replace(recon, vertebrae={})
            counted = score(extra, labels, affine)[end]
            rows[end].append(
                {
                    "case": i,
                    "f1_product": product[end]["f1"],
                    "f1_counted": counted["f1"],
                    "assd_product": product[end]["assd_mm"],
                    "assd_counted": counted["assd_mm"],
                    "centre_err_product_mm": float(
                        np.linalg.norm(recon.vertebrae[end].centre_mm - truth[end])
                    ),
                    "centre_err_counted_mm": float(np.linalg.norm(placed - truth[end])),
                    "counted_found": end in extra.vertebrae,
                }
            )
    return rows


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {"cases": 0}

    def mean(key: str) -> float:
        values = [r[key] for r in rows if np.isfinite(r[key])]
        return float(np.mean(values)) if values else float("nan")

    return {
        "cases": len(rows),
        "f1_product": mean("f1_product"),
        "f1_counted": mean("f1_counted"),
        "assd_product_mm": mean("assd_product"),
        "assd_counted_mm": mean("assd_counted"),
        "centre_err_product_mm": mean("centre_err_product_mm"),
        "centre_err_counted_mm": mean("centre_err_counted_mm"),
        "counted_found": int(sum(r["counted_found"] for r in rows)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--weights", default="default")
    args = parser.parse_args()
    reconstructor = Reconstructor(args.weights, device="cpu")
    result = {
        "weights_sha256": reconstructor.weights_sha256,
        "host": f"{platform.processor() or platform.machine()}",
        "sets": {},
    }
    for title, spec in SETS.items():
        n = 56 if spec["generator"] == "procedural-2" else 24
        data = heldout(n, shot_size(reconstructor), **spec)
        rows = measure(reconstructor, data, args.cases)
        result["sets"][title] = {
            "folder": data.name,
            "ends": {end: summary(r) for end, r in rows.items()},
            "rows": rows,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exposed_levels.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# The level an operator's count exposes, reconstructed where the count puts it",
        "",
        f"Weights SHA-256 `{result['weights_sha256'][:16]}…`; 3 views (AP + lateral + oblique), "
        f"synthetic domain, the first {args.cases} cases of each held-out set whose end level "
        "the product found with its two neighbours. `product`: the product's own reconstruction "
        "of the level (the coarse stage's centre); `counted`: what `/x23d/confirm_levels` "
        "publishes for a level its shift exposes (`pipeline.exposed_job`: the fine stage at "
        "the other levels' centres and one local step beyond the neighbour, refused when no "
        "shot shows half of it: F1 0). Command: "
        f"`.venv/bin/python bench/bench_exposed_levels.py --cases {args.cases}`.",
        "",
        "| set | level | cases | F1 product | F1 counted | ASSD product | ASSD counted "
        "| centre error product | centre error counted | counted found |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for title, entry in result["sets"].items():
        for end, s in entry["ends"].items():
            if not s["cases"]:
                lines.append(f"| {title} | {end} | 0 | | | | | | | |")
                continue
            lines.append(
                f"| {title} | {end} | {s['cases']} | {s['f1_product']:.3f} | "
                f"{s['f1_counted']:.3f} | {s['assd_product_mm']:.2f} mm | "
                f"{s['assd_counted_mm']:.2f} mm | {s['centre_err_product_mm']:.1f} mm | "
                f"{s['centre_err_counted_mm']:.1f} mm | {s['counted_found']} |"
            )
    (RESULTS / "exposed_levels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
