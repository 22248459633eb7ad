"""`x23d evaluate` scores reconstructions against ground truth and writes JSON + Markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from x23d_ros.cli import main
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.evaluate import score
from x23d_ros.pipeline import Reconstruction, VertebraSurface


def _labels() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((30, 24, 40), np.uint8)
    labels[5:20, 4:18, 3:15] = 1  # L1: a box
    labels[8:16, 6:14, 22:36] = 2  # L2
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 30.0]
    return labels, affine


def _vertebra(name: str, probability: np.ndarray, affine: np.ndarray) -> VertebraSurface:
    empty = np.zeros((0, 3))
    return VertebraSurface(
        name,
        probability,
        affine,
        empty,
        empty.astype(int),
        empty,
        empty[:, 0],
        np.eye(4),
        np.zeros(3),
    )


def _recon(vertebrae: dict) -> Reconstruction:
    return Reconstruction(vertebrae, [], {}, "cpu", 3)


def test_a_perfect_reconstruction_scores_one_and_a_missing_level_zero():
    labels, affine = _labels()
    perfect = _recon({"L1": _vertebra("L1", (labels == 1).astype(np.float32), affine)})
    result = score(perfect, labels, affine)
    assert result["L1"]["f1"] == pytest.approx(1.0)
    assert result["L1"]["assd_mm"] == pytest.approx(0.0)
    assert result["L1"]["centre_err_mm"] == pytest.approx(0.0)
    assert result["L2"]["f1"] == 0.0 and np.isnan(result["L2"]["assd_mm"])


def test_a_reconstruction_on_another_grid_is_resampled_before_scoring():
    """L1 given on a grid at half the spacing, shifted by 3 mm along x: F1 and centre error
    are those of the shifted box (computed by hand)."""
    labels, affine = _labels()
    fine = np.diag([0.75, 0.75, 0.75, 1.0])
    fine[:3, 3] = affine[:3, 3] + [3.0, 0.0, 0.0]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (60, 48, 80)], indexing="ij"), -1)
    mm = idx @ fine[:3, :3].T + fine[:3, 3]
    # The ground-truth L1 box in mm, moved by +3 mm in x.
    lo = affine[:3, 3] + 1.5 * np.array([5, 4, 3]) - 0.75 + [3.0, 0, 0]
    hi = affine[:3, 3] + 1.5 * np.array([19, 17, 14]) + 0.75 + [3.0, 0, 0]
    box = ((mm > lo) & (mm < hi)).all(-1).astype(np.float32)
    result = score(_recon({"L1": _vertebra("L1", box, fine)}), labels, affine)
    # 15 voxels along x shifted by 2 voxels: overlap 13 of 15.
    assert result["L1"]["f1"] == pytest.approx(13 / 15, abs=1e-6)
    assert result["L1"]["centre_err_mm"] == pytest.approx(3.0)


def test_evaluate_with_the_default_weights_writes_the_json_and_table(tmp_path):
    data = tmp_path / "data"
    simulate(SimulateConfig(out=data, cases=2, views=3, seed=11, image_size=128, spacing_mm=2.0))
    out = tmp_path / "eval.json"
    figures = tmp_path / "figures"
    assert (
        main(
            [
                "evaluate",
                "--weights",
                "default",
                "--data",
                str(data),
                "--views",
                "3",
                "--json",
                str(out),
                "--figures",
                str(figures),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["cases"] == 2 and result["views"] == 3 and result["domain"] == "synthetic"
    assert set(result["mean"]) >= {"f1", "surface_1mm", "assd_mm", "hd95_mm", "centre_err_mm"}
    assert 0.0 <= result["mean"]["wrong_level"] <= 1.0
    assert set(result["per_level"]) == {"L1", "L2", "L3", "L4", "L5"}
    assert 0.0 <= result["mean"]["f1"] <= 1.0
    table = out.with_suffix(".md").read_text()
    assert "| mean |" in table and "| L3 |" in table and "| wrong_level |" in table
    assert sorted(p.name for p in figures.iterdir()) == ["case_000.png", "case_001.png"]
    assert result["placement"] == "coarse"

    # The fine stage alone, on the true boxes: every level gets a grid there.
    truth = tmp_path / "truth.json"
    args = ["evaluate", "--data", str(data), "--json", str(truth), "--placement", "truth"]
    assert main(args) == 0
    alone = json.loads(truth.read_text())
    assert alone["placement"] == "truth" and alone["mean"]["missed"] == 0
    assert alone["mean"]["centre_err_mm"] < 10.0
    assert "the true boxes" in truth.with_suffix(".md").read_text()
