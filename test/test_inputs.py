"""The networks' inputs: one builder for training and inference, crops at the shot's own
resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from x23d_ros import geometry as g
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.data.simulate import SimulateConfig, simulate
from x23d_ros.evaluate import true_centres
from x23d_ros.model import inputs
from x23d_ros.pipeline import DEFAULT_WEIGHTS, Reconstructor, shot_set_from_case
from x23d_ros.train import TrainConfig, default_net, make_batch


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs_data")
    simulate(SimulateConfig(out=out, cases=1, views=3, seed=4, image_size=160, spacing_mm=2.0))
    return ShotDataset(out)[0]


def _weights(path, crop_source: str):
    """The shipped weights with their fine stage cropping `crop_source` (the shipped one crops
    natively; weights before cropped the working-size copy), on a small grid."""
    bundle = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    bundle["fine"] |= {"crop_source": crop_source, "grid": [40, 40, 32], "spacing_mm": 1.5}
    torch.save(bundle, path)
    return path


@pytest.mark.parametrize("crop_source", ["working", "native"])
def test_a_training_sample_and_an_inference_call_give_the_same_tensors(item, tmp_path, crop_source):
    weights = _weights(tmp_path / "w.pt", crop_source)
    reconstructor = Reconstructor(weights, device="cpu")
    fine, coarse = reconstructor.fine_cfg, reconstructor.coarse_cfg
    common = {"data": "-", "out": "-", "views": (3, 3), "image_size": reconstructor.image_size}
    fine_cfg = TrainConfig(
        **common,
        stage="fine",
        grid=inputs.grid_shape(fine["grid"]),
        spacing_mm=fine["spacing_mm"],
        crop_mm=fine["crop_mm"],
        crop_px=fine["crop_px"],
        crop_source=crop_source,
        net=default_net("fine"),
    )
    coarse_cfg = TrainConfig(**common, grid=coarse["grid"], spacing_mm=coarse["spacing_mm"])
    views = reconstructor.prepare(shot_set_from_case(item, [0, 1, 2]))
    labels, affine = item["labels"].numpy(), item["affine"].numpy()

    trained = make_batch(item, fine_cfg, np.random.default_rng(0), train=False)
    inferred = reconstructor.fine_batch(views, true_centres(labels, affine))
    for key in ("images", "P", "points"):
        torch.testing.assert_close(trained[key], inferred[key], rtol=0, atol=0, msg=key)
    assert trained["target"].shape == trained["points"].shape[:4]

    trained = make_batch(item, coarse_cfg, np.random.default_rng(0), train=False)
    inferred = reconstructor.coarse_batch(views)
    for key in ("images", "P", "points"):
        torch.testing.assert_close(trained[key], inferred[key], rtol=0, atol=0, msg=key)


def _striped_shot(size: int, period_mm: float):
    """A `size`² shot over 300 mm of detector, 1000 mm from the source, of stripes whose period
    is `period_mm` at the isocentre (600 mm from the source), and the isocentre."""
    K = g.intrinsics(1000.0, 300.0 / size, size, size)
    T = g.look_at(np.array([0.0, -600.0, 0.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    pixel_at_iso_mm = 300.0 / size * 600.0 / 1000.0
    u = np.arange(size) * pixel_at_iso_mm
    image = np.tile(0.5 + 0.5 * np.sin(2 * np.pi * u / period_mm), (size, 1)).astype(np.float32)
    return inputs.make_views([image], K[None], T[None]), pixel_at_iso_mm


def test_a_1024_shot_is_cropped_at_its_own_resolution_not_from_a_128_copy():
    views, native_mm = _striped_shot(1024, period_mm=2.8)
    centre = np.zeros((1, 3))
    # 0.7 mm per crop pixel: stripes of 4 pixels' period.
    native = inputs.fine_inputs(views, centre, 8, 1.5, crop_mm=112.0, crop_px=160)
    copied = inputs.fine_inputs(views, centre, 8, 1.5, 112.0, 160, source_size=128)
    assert native_mm < 0.2
    assert native["images"].std() > 0.25  # the stripes are there (a full-contrast sine: 0.35)
    # A 128² copy (1.4 mm a pixel at the isocentre) cannot hold a 2.8 mm period: mostly lost.
    assert copied["images"].std() < 0.5 * native["images"].std()
    # The crop's P still maps the isocentre to the crop's centre.
    (u, v), _ = g.project(native["P"][0, 0].double().numpy(), centre[0])
    assert np.allclose([u, v], [79.5, 79.5], atol=1e-3)


def test_a_finer_shot_is_area_reduced_before_the_crop_and_matches_the_coarser_shot():
    """A 512² shot and the same shot at 256² (each pixel 2×2) give the same crop at the 256²
    shot's pixel: the 512² one is reduced by 2 first, so its crop is not aliased."""
    views, _ = _striped_shot(256, period_mm=5.0)
    big = views.images[0].repeat_interleave(2, 0).repeat_interleave(2, 1)
    K_big = g.crop_resize_intrinsics(views.K[0], 0, 0, 2.0)
    big_views = inputs.make_views([big], K_big[None], views.T_ref_source)
    # 113 mm over 160 px: 0.706 mm a crop pixel, twice the 512² shot's 0.352 mm.
    a = inputs.fine_inputs(views, np.zeros((1, 3)), 8, 1.5, 113.0, 160)
    b = inputs.fine_inputs(big_views, np.zeros((1, 3)), 8, 1.5, 113.0, 160)
    torch.testing.assert_close(a["images"], b["images"], atol=1e-4, rtol=0)
    torch.testing.assert_close(a["P"], b["P"], atol=1e-3, rtol=1e-5)


def test_an_anisotropic_grid_has_the_asked_shape_and_centre():
    views, _ = _striped_shot(64, 5.0)
    batch = inputs.fine_inputs(views, np.array([[1.0, 2.0, 3.0]]), (8, 6, 4), 1.5, 112.0, 32)
    assert batch["points"].shape == (1, 8, 6, 4, 3)
    np.testing.assert_allclose(batch["points"][0].mean((0, 1, 2)).numpy(), [1, 2, 3], atol=1e-5)
