"""The real-shapes generator: real vertebrae, deformed and scaled, in the procedural spine."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from x23d_ros.anatomy import LEVELS
from x23d_ros.anatomy.morphometry import LUMBAR, sample_levels
from x23d_ros.anatomy.procedural import generate, spine_params
from x23d_ros.anatomy.real_shapes import VALIDATION_PERSONS, fit_levels, load_bank

# The procedural generators must not move when real-shapes-1 is added: at 3 mm, the labels'
# and affine's sha256 (exact) and the HU volume's mean and SD (to 1e-6 relative: float
# rounding may differ between CPUs and numpy builds, a change of the generator does not hide
# there). Computed before real-shapes-1 was added (their bit-exact hashes matched then);
# procedural-3 seed 11 is a cut scan range.
_PROCEDURAL = {
    ("procedural-2", 3): (
        "9639ac8c4b71813f3cecd234187cb93c4a391ae929e8cf44bb4020d38d8942b0",
        -322.539073436666,
        473.60574628124107,
    ),
    ("procedural-2", 11): (
        "0135320bae38bf9f6a4fc46159da3019a170718505a618d228c4a0798dcf5de2",
        -350.77205784520083,
        475.0346679194673,
    ),
    ("procedural-3", 3): (
        "9639ac8c4b71813f3cecd234187cb93c4a391ae929e8cf44bb4020d38d8942b0",
        -321.78547803911044,
        474.5325177217948,
    ),
    ("procedural-3", 11): (
        "d99958e786cc5170801a4eb7782a6e3ddae7f20e569f6341e2254588f07b6526",
        -357.678503003112,
        467.9045194478261,
    ),
}


@pytest.mark.parametrize(("generator", "seed"), sorted(_PROCEDURAL))
def test_procedural_generators_draw_the_same_volumes_as_before(generator, seed):
    a = generate(seed, spacing_mm=3.0, generator=generator)
    labels = a.labels.tobytes() + a.affine.tobytes() + str(a.hu.shape).encode()
    digest, mean, sd = _PROCEDURAL[generator, seed]
    assert hashlib.sha256(labels).hexdigest() == digest
    hu = a.hu.astype(np.float64)
    assert hu.mean() == pytest.approx(mean, rel=1e-6)
    assert hu.std() == pytest.approx(sd, rel=1e-6)


# --- real-shapes-1 -------------------------------------------------------------------------

SHARED_SHAPES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-vertebrae"


def _uncut(generator: str = "real-shapes-1"):
    return replace(spine_params(generator), scan_cut_p=0.0)


@pytest.fixture(scope="module")
def spine():
    return generate(5, spacing_mm=2.0, params=_uncut(), generator="real-shapes-1")


@pytest.fixture(scope="module")
def plain():
    """A spine at 1 mm whose real shapes are neither scaled nor deformed."""
    p = replace(_uncut(), shape_deform_sd_mm=0.0, shape_scale_limits=(1.0, 1.0))
    return generate(7, spacing_mm=1.0, params=p, generator="real-shapes-1")


def test_same_seed_gives_the_same_real_shapes_spine_bit_for_bit(spine):
    again = generate(5, spacing_mm=2.0, params=_uncut(), generator="real-shapes-1")
    assert again.hu.tobytes() == spine.hu.tobytes()
    assert again.labels.tobytes() == spine.labels.tobytes()
    assert again.meta["shapes"] == spine.meta["shapes"]


def test_each_level_says_whose_vertebra_it_is(spine):
    shapes = spine.meta["shapes"]
    assert sorted(shapes) == sorted(LEVELS)
    bank = load_bank()
    for name, s in shapes.items():
        shape = bank[s["bank_index"]]
        assert (s["person"], s["source"], s["level"]) == (shape.person, shape.source, shape.level)
        assert abs(LUMBAR.index(s["level"]) - LUMBAR.index(name)) <= 1
    assert spine.present_levels == list(LEVELS)


def test_no_validation_person_lends_a_vertebra_to_a_training_spine(spine):
    bank = load_bank()
    assert {s.person for s in bank} >= set(VALIDATION_PERSONS)
    levels = sample_levels(np.random.default_rng(0))
    for seed in range(200):
        for split in ("train", "val"):
            _, fitted = fit_levels(
                levels, np.random.default_rng([seed, 21]), split, (0.85, 1.15), 0.0, 1.0
            )
            people = {f.shape.person for f in fitted.values()}
            held_out = people <= set(VALIDATION_PERSONS)
            assert held_out if split == "val" else not people & set(VALIDATION_PERSONS)
    for seed in (1, 2):
        val = generate(seed, spacing_mm=5.0, generator="real-shapes-1-val")
        assert {s["person"] for s in val.meta["shapes"].values()} <= set(VALIDATION_PERSONS)
        train = generate(seed, spacing_mm=5.0, generator="real-shapes-1")
        assert not {s["person"] for s in train.meta["shapes"].values()} & set(VALIDATION_PERSONS)
    assert not {s["person"] for s in spine.meta["shapes"].values()} & set(VALIDATION_PERSONS)


def _voxel_centres(anatomy, mask):
    ijk = np.argwhere(mask)
    return ijk @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]


def _dice(a, b) -> float:
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


def _level_boxes(anatomy):
    """{name: (mask of the level's neighbourhood, local points of its voxels)}."""
    out = {}
    for name, s in anatomy.meta["shapes"].items():
        R, centre = np.array(s["R"]), np.array(s["centre_mm"])
        near = np.zeros(anatomy.labels.shape, bool)
        ijk = np.argwhere(anatomy.labels == LEVELS[name])
        lo, hi = ijk.min(0) - 6, ijk.max(0) + 7
        near[tuple(slice(max(a, 0), b) for a, b in zip(lo, hi, strict=True))] = True
        out[name] = (near, (_voxel_centres(anatomy, near) - centre) @ R)
    return out


def test_an_unscaled_undeformed_level_is_its_bank_shape_voxel_for_voxel(plain):
    bank = load_bank()
    for name, (near, local) in _level_boxes(plain).items():
        s = plain.meta["shapes"][name]
        assert s["scale"] == [1.0, 1.0, 1.0]
        mine = plain.labels[near] == LEVELS[name]
        shape = bank[s["bank_index"]]
        assert _dice(mine, shape.distance(local) < 0) >= 0.95, name


@pytest.mark.skipif(not SHARED_SHAPES.is_dir(), reason="no shared/data/real-vertebrae here")
def test_an_unscaled_undeformed_level_matches_its_source_mesh(plain):
    build = _build_tool()
    meshes = {(m["person"], m["level"]): m["mesh"] for m in build.load_sources(SHARED_SHAPES)}
    bank = load_bank()
    for name, (near, local) in _level_boxes(plain).items():
        shape = bank[plain.meta["shapes"][name]["bank_index"]]
        source = local @ shape.R_source.T + shape.centre_source
        inside = build.signed_distance(meshes[shape.person, shape.level], source) < 0
        dice = _dice(plain.labels[near] == LEVELS[name], inside)
        assert dice >= 0.95, (name, shape.person, dice)


def _build_tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "build_shape_bank.py"
    spec = importlib.util.spec_from_file_location("build_shape_bank", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
