"""Training runs on shards, logs, validates, and resumes exactly where it stopped."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.model.network import NetConfig
from x23d_ros.train import TrainConfig, centre_offset, config_from_args, train


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
    # A line every 5 steps carries the mean loss of those 5 steps (the same run, logged sparser).
    sparse = _config(shards, tmp_path / "sparse", 5)
    sparse.log_every = 5
    every = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    last = [json.loads(line) for line in (train(sparse) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in last if "loss" in r] == [5]
    assert last[-1]["loss"] == pytest.approx(every[-1]["loss"], rel=1e-5)
    assert last[-1]["loss_mean"] == pytest.approx(np.mean([r["loss"] for r in every]), rel=1e-5)


def test_the_fine_stage_trains_on_vertebra_crops_and_exports_with_the_coarse(shards, tmp_path):
    from x23d_ros.data.dataset import ShotDataset
    from x23d_ros.pipeline import Reconstructor, shot_set_from_case
    from x23d_ros.train import export_weights, make_batch

    fine = TrainConfig(
        data=str(shards),
        out=str(tmp_path / "fine"),
        val=str(shards),
        stage="fine",
        steps=3,
        grid=8,
        spacing_mm=12.0,
        crop_px=24,
        checkpoint_every=1,
        log_every=1,
        val_every=3,
        net=NetConfig(features_2d=4, channels_3d=4, classes=1, image_norm=2.0),
    )
    import numpy as np

    batch = make_batch(ShotDataset(shards)[0], fine, np.random.default_rng(0), train=False)
    # Validation batches hold every level of the case, each one's own vertebra as target.
    assert batch["levels"].tolist() == [1, 2, 3, 4, 5]
    assert batch["images"].shape[:2] == (5, 3) and batch["images"].shape[-1] == 24
    assert all(t.any() for t in batch["target"])
    train(fine)
    rows = [json.loads(line) for line in (tmp_path / "fine" / "log.jsonl").read_text().splitlines()]
    assert set(rows[-1]["val"]) >= {"f1", "assd_mm"}
    coarse = train(_config(shards, tmp_path / "coarse", 2))
    weights = tmp_path / "w.pt"
    export_weights(coarse, tmp_path / "fine", weights, image_size=48)
    # Two steps of training find no spine: without the domain gate, which would refuse that.
    recon = Reconstructor(weights, device="cpu", gate_limits=None).reconstruct(
        shot_set_from_case(ShotDataset(shards)[0])
    )
    assert recon.views == 3 and set(recon.timings_ms) >= {"localise", "segment"}
    with pytest.raises(ValueError, match="coarse stage"):
        export_weights(tmp_path / "fine", tmp_path / "fine", weights, image_size=48)
    # A retrained fine stage behind the coarse stage of a weights file, calibration included.
    source = torch.load(weights, map_location="cpu", weights_only=True)
    source["coarse"]["centre_offset_mm"] = torch.full((5, 3), 2.0)
    torch.save(source, tmp_path / "calibrated.pt")
    export_weights(tmp_path / "calibrated.pt", tmp_path / "fine", tmp_path / "w2.pt", 48)
    mixed = Reconstructor(tmp_path / "w2.pt", device="cpu")
    assert (mixed.centre_offsets == 2.0).all()
    assert mixed.fine_cfg["steps"] == 3 and mixed.coarse_cfg["steps"] == 2
    # The fine stage says where its crops come from, so inference cuts them the same way.
    assert mixed.fine_cfg["crop_source"] == "native"
    with pytest.raises(ValueError, match="48²"):
        export_weights(tmp_path / "calibrated.pt", tmp_path / "fine", tmp_path / "w3.pt", 64)
    # A retrained coarse stage in front of the fine stage of a weights file.
    export_weights(coarse, tmp_path / "calibrated.pt", tmp_path / "w4.pt", 48)
    front = torch.load(tmp_path / "w4.pt", map_location="cpu", weights_only=True)
    for key, value in source["fine"]["state_dict"].items():
        assert torch.equal(front["fine"]["state_dict"][key], value)
    assert "centre_offset_mm" not in front["coarse"]  # the new coarse stage: not calibrated


def test_torchrun_trains_with_two_processes_and_rank_0_writes(shards, tmp_path):
    """DistributedDataParallel over two CPU processes (gloo), as `torchrun` starts it on GPUs."""
    import subprocess
    import sys

    cfg = _config(shards, tmp_path / "ddp", 2)
    cfg.val = None
    config = tmp_path / "ddp.json"
    config.write_text(cfg.to_json())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "x23d_ros.cli",
            "train",
            "--data",
            str(shards),
            "--out",
            str(tmp_path / "ddp"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and len(json.loads(state["rng_ranks"])) == 2
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["world_size"] == 2


def test_a_run_in_its_decay_phase_resumes_from_a_weights_only_checkpoint(shards, tmp_path):
    cfg = _config(shards, tmp_path / "decay", 2)
    cfg.decay_from, cfg.val = 1, None
    train(cfg)
    cfg.steps = 3
    state = torch.load(train(cfg) / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    assert all(isinstance(g["lr"], float) for g in state["optimiser"]["param_groups"])


def test_the_learning_rate_is_constant_then_decays_to_its_floor():
    from x23d_ros.train import learning_rate

    cfg = TrainConfig(data="", out="", lr=1e-3, steps=100, decay_from=60, lr_min=1e-5)
    assert [learning_rate(cfg, s) for s in (0, 30, 60)] == pytest.approx([1e-3] * 3)
    tail = [learning_rate(cfg, s) for s in range(60, 101)]
    assert all(a > b for a, b in itertools.pairwise(tail))
    assert tail[-1] == pytest.approx(1e-5)
    assert learning_rate(TrainConfig(data="", out="", lr=1e-3), 10**6) == 1e-3


def test_a_new_run_starts_from_a_smaller_networks_weights_grown(shards, tmp_path):
    from x23d_ros.train import initial_state

    small = train(_config(shards, tmp_path / "small", 2))
    trained = torch.load(small / "checkpoint.pt", weights_only=True)["model"]
    large = _config(shards, tmp_path / "large", 1)
    large.net = NetConfig(features_2d=4, channels_3d=8, classes=6, image_norm=2.0, levels=3)
    large.init = str(small / "checkpoint.pt")
    large.lr = 0.0  # one step that changes nothing: the checkpoint shows where the run started
    train(large)
    started = torch.load(tmp_path / "large" / "checkpoint.pt", weights_only=True)["model"]
    torch.testing.assert_close(
        started["encoder.stem.0.0.weight"], trained["encoder.stem.0.0.weight"]
    )
    assert started["decoder.head.weight"].shape == (6, 8, 1, 1, 1)
    torch.testing.assert_close(started, initial_state(small / "checkpoint.pt", large))
    # A weights file works as well: its network of the run's stage.
    bundle = tmp_path / "w.pt"
    torch.save({"coarse": {"net": large.net.as_dict(), "state_dict": started}}, bundle)
    torch.testing.assert_close(initial_state(bundle, large), started)
    large.stage, large.net = "fine", NetConfig(features_2d=4, channels_3d=8, classes=1)
    with pytest.raises(ValueError, match="fine stage"):
        initial_state(bundle, large)


def test_the_wide_centre_jitter_gives_heavier_tails_and_leaves_the_default_stream_alone():
    narrow = TrainConfig(data="d", out="o", centre_jitter_mm=4.0)
    wide = {"centre_jitter_wide_mm": 10.0, "centre_jitter_wide_p": 0.3}
    mixed = TrainConfig(data="d", out="o", centre_jitter_mm=4.0, **wide)
    n = 20000
    a = np.array([centre_offset(narrow, np.random.default_rng(i)) for i in range(n)])
    b = np.array([centre_offset(mixed, np.random.default_rng(i)) for i in range(n)])
    # Without a wide draw the jitter is the plain normal draw (resumed runs stay bit for bit).
    assert np.array_equal(a[0], np.random.default_rng(0).normal(0.0, 4.0, 3))
    assert a.std() == pytest.approx(4.0, rel=0.03)
    # The mixture's variance is 0.7·4² + 0.3·10², and a 20 mm offset is common only with it.
    assert b.std() == pytest.approx(np.sqrt(0.7 * 16 + 0.3 * 100), rel=0.03)
    assert (np.abs(a) > 20).mean() < 1e-4 < 0.003 < (np.abs(b) > 20).mean()


def test_the_command_line_overrides_a_config_file_and_keeps_its_validation_set(tmp_path):
    import argparse

    from x23d_ros.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": "a", "out": "b", "val": "v", "stage": "fine"}))
    args = parser.parse_args(["--data", "d", "--out", "o", "--config", str(config)])
    cfg = config_from_args(args)
    assert (cfg.data, cfg.out, cfg.val, cfg.stage) == ("d", "o", "v", "fine")
    given = ["--data", "d", "--out", "o", "--config", str(config), "--val", "w", "--steps", "7"]
    cfg = config_from_args(parser.parse_args(given))
    assert (cfg.val, cfg.steps) == ("w", 7)
    plain = config_from_args(parser.parse_args(["--data", "d", "--out", "o"]))
    assert (plain.val, plain.stage) == (None, "coarse")


def test_the_pose_error_turns_the_c_arm_about_the_anatomy_by_a_tracked_c_arms_error():
    """Rotation alone keeps the pivot on its pixel; with the default sizes, the anatomy 50 mm
    from the pivot moves by about a millimetre (a tracked C-arm's error), not by the 3 mm per
    axis of a rotation about the source."""
    from x23d_ros import geometry as g
    from x23d_ros.train.batches import jittered_pose

    cfg = TrainConfig(data="-", out="-")
    K = g.intrinsics(1000.0, 1.0, 300, 300)
    pivot = np.array([5.0, -3.0, 20.0])
    T = g.look_at(pivot + np.array([0.0, -600.0, 0.0]), pivot, np.array([0.0, 0.0, 1.0]))
    rng = np.random.default_rng(0)
    turned = jittered_pose(T, rng, 2.0, 0.0, pivot)
    np.testing.assert_allclose(
        g.project(g.projection_matrix(K, turned), pivot)[0],
        g.project(g.projection_matrix(K, T), pivot)[0],
        atol=1e-6,
    )
    point = pivot + np.array([30.0, 0.0, 40.0])
    moved = []
    for _ in range(400):
        jittered = jittered_pose(T, rng, cfg.pose_jitter_deg, cfg.pose_jitter_mm, pivot)
        # Where the C-arm's reported pose puts the point the true pose imaged: the error at
        # the anatomy, in mm.
        moved.append(
            np.linalg.norm(jittered @ np.linalg.inv(T) @ np.append(point, 1) - np.append(point, 1))
        )
    assert 0.3 < np.sqrt(np.mean(np.square(moved))) < 1.2


def test_a_config_with_a_box_grid_survives_its_json():
    cfg = TrainConfig(data="d", out="o", stage="fine", grid=(64, 64, 48), net=NetConfig(classes=1))
    again = TrainConfig.from_json(cfg.to_json())
    assert again.grid == (64, 64, 48) and again == cfg
    with pytest.raises(ValueError, match="pose_jitter_pivot"):
        TrainConfig(data="d", out="o", pose_jitter_pivot="detector")


def test_bf16_is_used_only_where_the_cpu_does_it_natively(caplog):
    """The config's bf16 asks; a CPU without avx512_bf16 or amx_bf16 would emulate it (about
    60 times slower, measured), so training goes on in fp32 and says so."""
    from x23d_ros.train.loop import cpu_has_bf16, use_bf16

    avx2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    amx = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert not cpu_has_bf16(avx2) and cpu_has_bf16(amx)
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING"):
        assert use_bf16(True, cpu, avx2) is False
    assert "no native bf16" in caplog.text
    assert use_bf16(True, cpu, amx) is True
    assert use_bf16(False, cpu, amx) is False
    assert use_bf16(False, torch.device("cuda"), avx2) is True  # a GPU always


def test_train_only_trains_the_named_parameters_and_keeps_the_others(shards, tmp_path):
    first = train(_config(shards, tmp_path / "first", 1))
    start = torch.load(first / "checkpoint.pt", weights_only=True)["model"]
    cfg = _config(shards, tmp_path / "head", 3)
    cfg.init, cfg.val = str(first / "checkpoint.pt"), None
    cfg.train_only = ("decoder.head", "decoder.dec0")
    trained = torch.load(train(cfg) / "checkpoint.pt", weights_only=True)["model"]
    changed = {n for n, t in trained.items() if not torch.equal(t, start[n])}
    assert changed and all(n.startswith(("decoder.head", "decoder.dec0")) for n in changed)
    assert "decoder.head.weight" in changed
    # The setting survives the run's config file, and a prefix that names nothing is refused
    # before any step.
    saved = TrainConfig.from_json((tmp_path / "head" / "config.json").read_text())
    assert saved.train_only == cfg.train_only
    cfg.out, cfg.train_only = str(tmp_path / "typo"), ("decoder.haed",)
    with pytest.raises(ValueError, match="names no parameter"):
        train(cfg)


@pytest.mark.parametrize("classes", [1, 6])
def test_the_distillation_loss_is_least_where_the_network_says_what_its_teacher_says(classes):
    from x23d_ros.train.loss import distillation_loss

    generator = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(2, classes, 4, 4, 4, generator=generator)
    student = (teacher + 0.5 * torch.randn(teacher.shape, generator=generator)).requires_grad_()
    same = teacher.clone().requires_grad_()
    (grad_same,) = torch.autograd.grad(distillation_loss(same, teacher), same)
    assert grad_same.abs().max() < 1e-6  # a minimum: no pull away from the teacher
    assert distillation_loss(student, teacher) > distillation_loss(same, teacher)


def test_a_run_with_a_teacher_adds_the_distillation_term_to_its_loss(shards, tmp_path):
    first = train(_config(shards, tmp_path / "teacher", 1))
    teacher = torch.load(first / "checkpoint.pt", weights_only=True)
    losses = {}
    for name, path in (("alone", None), ("taught", str(first / "checkpoint.pt"))):
        cfg = _config(shards, tmp_path / name, 1)  # the same seed: the same start and batch
        cfg.val, cfg.teacher, cfg.teacher_weight = None, path, 5.0
        train(cfg)
        lines = (tmp_path / name / "log.jsonl").read_text().split("\n")
        losses[name] = next(json.loads(x)["loss"] for x in lines if x and "loss" in x)
    assert losses["taught"] > losses["alone"] + 0.01  # 5 × a cross-entropy: well above 0
    saved = TrainConfig.from_json((tmp_path / "taught" / "config.json").read_text())
    assert saved.teacher == str(first / "checkpoint.pt") and saved.teacher_weight == 5.0
    # A teacher must have the run's stage.
    cfg.out, cfg.stage = str(tmp_path / "wrong"), "fine"
    cfg.net = NetConfig(features_2d=4, channels_3d=4, classes=1, image_norm=2.0)
    bundle = tmp_path / "coarse_only.pt"
    torch.save({"coarse": {"net": teacher["net"], "state_dict": teacher["model"]}}, bundle)
    cfg.teacher = str(bundle)
    with pytest.raises(ValueError, match="fine stage"):
        train(cfg)
