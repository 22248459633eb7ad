"""Calibration of the fine grids' placement: offsets fitted on training cases, stored with the
weights, applied by the Reconstructor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from x23d_ros.calibrate import calibrate_weights, fit_offsets
from x23d_ros.cli import main
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.pipeline import Reconstructor, shot_set_from_case


def test_offsets_are_per_level_medians_per_axis():
    errors = {
        "L1": np.array([[1.0, 10.0, -2.0], [3.0, 20.0, -4.0], [2.0, 90.0, -3.0]]),
        "L2": np.array([[0.0, 5.0, 0.0]]),
        "L5": np.zeros((0, 3)),
    }
    offsets, summary = fit_offsets(errors)
    assert offsets.shape == (5, 3)
    np.testing.assert_allclose(offsets[0], [2.0, 20.0, -3.0])  # the 90 mm outlier is ignored
    np.testing.assert_allclose(offsets[1], [0.0, 5.0, 0.0])
    np.testing.assert_allclose(offsets[2:], 0.0)  # levels without samples keep no offset
    assert summary["samples"] == {"L1": 3, "L2": 1, "L3": 0, "L4": 0, "L5": 0}
    # After: L1's residuals (−1, −10, 1), (1, 0, −1), (0, 70, 0) and L2's 0.
    assert summary["error_median_mm_after"] == pytest.approx((np.sqrt(102.0) + np.sqrt(2.0)) / 2)
    assert summary["error_median_mm_after"] < summary["error_median_mm_before"]


def test_calibrated_weights_move_every_found_level_by_its_offset(tmp_path):
    data = tmp_path / "train"
    simulate(SimulateConfig(out=data, cases=1, views=4, seed=31, image_size=128, spacing_mm=2.0))
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--data", str(data), "--out", str(out), "--draws", "1"]) == 0
    bundle = torch.load(out, map_location="cpu", weights_only=True)
    offsets = bundle["coarse"]["centre_offset_mm"].numpy()
    assert offsets.shape == (5, 3) and np.isfinite(offsets).all() and np.abs(offsets).max() > 0

    reconstructor = Reconstructor(out, device="cpu")
    images, P, T = reconstructor.prepare(shot_set_from_case(ShotDataset(data)[0], [0, 1, 2]))
    raw = reconstructor.localise(images, P, T, corrected=False)
    placed = reconstructor.localise(images, P, T)
    assert raw and set(raw) == set(placed)
    for i, name in enumerate(["L1", "L2", "L3", "L4", "L5"]):
        if name in raw:
            np.testing.assert_allclose(placed[name] - raw[name], offsets[i], atol=1e-5)
    # Weights without a calibration place the grids at the blobs' box centres.
    del bundle["coarse"]["centre_offset_mm"]
    torch.save(bundle, tmp_path / "plain.pt")
    plain = Reconstructor(tmp_path / "plain.pt", device="cpu")
    assert not plain.centre_offsets.any()
    for name, centre in plain.localise(images, P, T).items():
        np.testing.assert_allclose(centre, raw[name], atol=1e-5)


def test_calibration_refuses_a_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        calibrate_weights(tmp_path / "none.pt", tmp_path, tmp_path / "out.pt")
