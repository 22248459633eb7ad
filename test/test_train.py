"""Training runs on shards, logs, validates, and resumes exactly where it stopped."""

from __future__ import annotations

import json

import pytest
import torch

from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.model.network import NetConfig
from x23d_ros.train import TrainConfig, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_data")
    simulate(SimulateConfig(out=out, cases=2, views=3, seed=9, image_size=48, spacing_mm=3.0))
    return out


def _config(shards, out, steps):
    return TrainConfig(
        data=str(shards),
        out=str(out),
        val=str(shards),
        steps=steps,
        grid=8,
        spacing_mm=24.0,
        checkpoint_every=1,
        log_every=1,
        val_every=5,
        net=NetConfig(features_2d=4, channels_3d=4, classes=6, image_norm=2.0),
    )


def test_an_interrupted_run_resumes_to_the_same_weights(shards, tmp_path):
    straight = train(_config(shards, tmp_path / "straight", 5))
    train(_config(shards, tmp_path / "resumed", 3))
    resumed = train(_config(shards, tmp_path / "resumed", 5))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 5
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, msg=name)
    rows = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert set(rows[-1]["val"]) >= {"f1", "assd_mm", "hd95_mm", "centre_err_mm", "surface_1mm"}
    assert (resumed / "curve.png").stat().st_size > 5_000
