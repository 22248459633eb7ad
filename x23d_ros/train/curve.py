"""The training curve: loss and validation F1 against the step, from a run's log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curve(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    # The mean over the steps since the line before, where the log has it (one batch's loss
    # is noisy); older logs hold the single batch's only.
    losses = [(r["step"], r.get("loss_mean", r["loss"])) for r in rows if "loss" in r]
    vals = [(r["step"], r["val"]["f1"]) for r in rows if "val" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot(*zip(*losses, strict=True), label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals, strict=True), "o-", color="tab:green", label="validation F1")
        ax2.set_ylabel("F1")
        ax2.set_ylim(0, 1)
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
