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
from x23d_ros.pipeline import LEVEL_NAMES, Reconstructor, shot_set_from_case, spine_frame


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
    assert bundle["coarse"]["placement"] == "centroid-spine"

    reconstructor = Reconstructor(out, device="cpu")
    views = reconstructor.prepare(shot_set_from_case(ShotDataset(data)[0], [0, 1, 2]))
    raw = reconstructor.localise(views, corrected=False)
    placed = reconstructor.localise(views)
    assert len(raw) >= 2 and set(raw) == set(placed)
    # The offsets are in the spine's frame: a proper rotation whose z runs from L5 to L1.
    frame = spine_frame(raw)
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-9)
    assert np.linalg.det(frame) == pytest.approx(1.0)
    found = [n for n in LEVEL_NAMES if n in raw]
    assert (raw[found[0]] - raw[found[-1]]) @ frame[:, 2] > 0
    for i, name in enumerate(LEVEL_NAMES):
        if name in raw:
            np.testing.assert_allclose(placed[name] - raw[name], frame @ offsets[i], atol=1e-5)

    # Offsets in the reference frame from the blobs' box centres (`box-lps`), as calibrated
    # before the placement was stored: a file without `placement` means that.
    boxes = tmp_path / "boxes.pt"
    calibrate_weights(out, data, boxes, draws=1, placement="box-lps")
    box_bundle = torch.load(boxes, map_location="cpu", weights_only=True)
    del box_bundle["coarse"]["placement"]
    torch.save(box_bundle, boxes)
    legacy = Reconstructor(boxes, device="cpu")
    assert legacy.placement == "box-lps"
    box_raw = legacy.localise(views, corrected=False)
    box_offsets = box_bundle["coarse"]["centre_offset_mm"].numpy()
    for i, name in enumerate(LEVEL_NAMES):
        if name in box_raw:
            np.testing.assert_allclose(
                legacy.localise(views)[name] - box_raw[name], box_offsets[i], atol=1e-5
            )

    # Weights without a calibration place the grids at the blobs' box centres.
    del box_bundle["coarse"]["centre_offset_mm"]
    torch.save(box_bundle, tmp_path / "plain.pt")
    plain = Reconstructor(tmp_path / "plain.pt", device="cpu")
    assert not plain.centre_offsets.any()
    for name, centre in plain.localise(views).items():
        np.testing.assert_allclose(centre, box_raw[name], atol=1e-5)

    # A placement the code does not know is refused, not guessed.
    box_bundle["coarse"]["placement"] = "centroid-sideways"
    torch.save(box_bundle, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="centroid-sideways"):
        Reconstructor(tmp_path / "unknown.pt", device="cpu")


def test_spine_frame_follows_the_line_through_the_levels():
    # A spine along the reference z: the reference frame's own axes.
    upright = {n: np.array([3.0, -2.0, 100.0 - 35.0 * i]) for i, n in enumerate(LEVEL_NAMES)}
    np.testing.assert_allclose(spine_frame(upright), np.eye(3), atol=1e-12)
    # Tilted 20° forwards about x (top towards −y, anterior), with one level missing and the
    # others off the line by the same step (no trend): z is the line's direction, x stays x.
    tilt = np.radians(20.0)
    axis = np.array([0.0, -np.sin(tilt), np.cos(tilt)])
    tilted = {n: -35.0 * i * axis for i, n in enumerate(LEVEL_NAMES) if n != "L3"}
    tilted["L2"] = tilted["L2"] + [2.0, 0.0, 0.0]
    tilted["L4"] = tilted["L4"] + [2.0, 0.0, 0.0]
    frame = spine_frame(tilted)
    np.testing.assert_allclose(frame[:, 2], axis, atol=1e-9)
    np.testing.assert_allclose(frame[:, 0], [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(frame[:, 1], np.cross(axis, [1.0, 0.0, 0.0]), atol=1e-9)
    # One level gives no direction: the reference frame.
    np.testing.assert_allclose(spine_frame({"L3": np.zeros(3)}), np.eye(3))


def test_calibration_refuses_a_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        calibrate_weights(tmp_path / "none.pt", tmp_path, tmp_path / "out.pt")
