"""How the realistic (fluoroscopy) domain's display compares with real frames (#22 item 0).

    .venv/bin/python bench/bench_realism.py [--cases 3]

Renders `--cases` procedural spines (seed 790, 3 shots each, 320², level-centred) in the
realistic domain and measures, inside each shot's exposed field (known from its effects):
- the display span: grey levels (of 255) between the 1st and 99th percentiles;
- the share of the field clipped to black (0) and to white (255).
Targets, from real lumbar radiographs and fluoroscopy frames measured for #22 (kept outside
the repository): span 146-227 grey levels, clipping about 0; before this change the simulator
spanned all 255 levels and clipped 1.4 % black and 2.7 % white of the anatomy (up to 9 %).
Noise texture, edge enhancement and anatomy (the issue's other statistics) are not measured
here yet.

Writes bench/results/realism.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np

from x23d_ros.data.shards import list_cases
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.xray.realistic import field_mask

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "span_grey_levels": (146, 227),
    "clipped_black_pct": (0.0, 0.5),
    "clipped_white_pct": (0.0, 0.5),
}


def measure(folder: Path) -> list[dict]:
    rows = []
    for path, name in list_cases(folder):
        with h5py.File(path, "r") as h5:
            g = h5[name]
            images = g["realistic"][()]
            effects = [json.loads(e) for e in g["effects"][()]]
        for image, fx in zip(images, effects, strict=True):
            inside = image[field_mask(fx, image.shape)].astype(float)
            lo, hi = np.percentile(inside, [1, 99])
            rows.append(
                {
                    "span_grey_levels": float(hi - lo),
                    "clipped_black_pct": float(100 * (inside == 0).mean()),
                    "clipped_white_pct": float(100 * (inside == 255).mean()),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="(make bench's flag: no change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulate(
            SimulateConfig(
                out=Path(tmp),
                cases=args.cases,
                views=3,
                seed=790,
                image_size=320,
                spacing_mm=1.5,
                configuration="ap_lat_oblique",
                centring="level",
                distortion=False,
            )
        )
        rows = measure(Path(tmp))
    result = {
        key: {
            "median": float(np.median([r[key] for r in rows])),
            "min": float(np.min([r[key] for r in rows])),
            "max": float(np.max([r[key] for r in rows])),
            "target": TARGETS[key],
        }
        for key in TARGETS
    }
    result["shots"] = len(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realism.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Realistic domain vs real frames: the display (inside the exposed field)",
        "",
        f"{len(rows)} shots (seed 790, 320², level-centred). Command: "
        "`.venv/bin/python bench/bench_realism.py`.",
        "",
        "| statistic | median | range | real frames |",
        "|---|---:|---:|---:|",
    ]
    for key in TARGETS:
        r = result[key]
        lines.append(
            f"| {key} | {r['median']:.1f} | {r['min']:.1f}-{r['max']:.1f} | "
            f"{r['target'][0]}-{r['target'][1]} |"
        )
    (RESULTS / "realism.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
