"""Shards: reproducible bytes, readable by the Dataset, drawable as a contact sheet."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from x23d_ros import geometry as g
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.data.preview import contact_sheet, outlines
from x23d_ros.data.shards import read_case
from x23d_ros.data.simulate import SimulateConfig, shot_centre, simulate

SMALL = dict(cases=2, views=2, image_size=48, spacing_mm=2.5, cases_per_shard=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate(SimulateConfig(out=out, seed=5, **SMALL))


def test_same_seed_gives_identical_shard_bytes(shards, tmp_path):
    again = simulate(SimulateConfig(out=tmp_path, seed=5, **SMALL))
    for a, b in zip(shards, again, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_a_rerun_makes_only_missing_shards(shards):
    first = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    simulate(SimulateConfig(out=shards[0].parent, seed=5, **SMALL))
    assert shards[0].stat().st_mtime_ns == first
    assert shards[1].exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 6}, "seed"),
        ({"image_size": 64}, "image_size"),
        ({"centring": "level"}, "centring"),
        ({"generator": "procedural-3"}, "generator"),
        ({"scan_cut": "never"}, "scan_cut"),
    ],
)
def test_a_rerun_with_other_arguments_refuses_to_mix_its_shards_in(shards, change, named):
    # Shard 1 missing: the rerun would make it, with data of another run beside shard 0's.
    shards[1].unlink()
    with pytest.raises(ValueError, match=f"{named} .*asked: {change[named]!r}"):
        simulate(SimulateConfig(out=shards[0].parent, **({"seed": 5} | SMALL | change)))
    assert not shards[1].exists()
    simulate(SimulateConfig(out=shards[0].parent, seed=5, **SMALL))
    assert shards[1].exists()


def test_dataset_returns_both_domains_with_matching_geometry(shards):
    synthetic = ShotDataset(shards[0].parent, "synthetic")
    realistic = ShotDataset(shards[0].parent, "realistic", views=[1, 0])
    assert len(synthetic) == 2
    item = synthetic[0]
    assert item["images"].shape == (2, 48, 48)
    assert item["images"].max() > 0.5  # bone line integrals, dimensionless
    other = realistic[0]
    assert other["images"].shape == (2, 48, 48)
    assert other["images"].min() >= 0.0 and other["images"].max() <= 1.0
    np.testing.assert_array_equal(other["T_ref_source"][0], item["T_ref_source"][1])
    np.testing.assert_array_equal(other["T_ref_source"][1], item["T_ref_source"][0])
    assert not np.isnan(item["centres_mm"].numpy()).any()


def test_every_level_projects_into_the_image(shards):
    import h5py

    with h5py.File(shards[0], "r") as h5:
        case = read_case(h5, "case_000000")
    for view in range(2):
        P = g.projection_matrix(case.K[view], case.T_ref_source[view])
        uv, depth = g.project(P, case.centres_mm)
        assert (depth > 0).all()
        assert ((uv[2] > 0) & (uv[2] < 48)).all()  # L3, the spine's middle, is in view
        # At ≈ 1.7× magnification a 30 cm detector spans ≈ L1–L5: the ends may be cut.
        assert {"L2", "L3", "L4"} <= set(outlines(case, view))


def test_contact_sheet_is_drawn(shards, tmp_path):
    png = contact_sheet(shards[0], tmp_path / "sheet.png")
    assert png.stat().st_size > 10_000


def test_shots_centre_on_the_spine_or_on_a_random_point_along_it():
    centres = {"L1": np.array([0.0, 0, 140]), "L3": np.array([0.0, 10, 70]), "L5": np.zeros(3)}
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(shot_centre(centres, "spine", rng), [0, 10 / 3, 70])
    drawn = np.array([shot_centre(centres, "level", rng) for _ in range(400)])
    # On the polyline L1 → L3 → L5: x stays 0, y follows z piecewise linearly.
    np.testing.assert_allclose(drawn[:, 0], 0.0)
    np.testing.assert_allclose(drawn[:, 1], 10.0 - np.abs(drawn[:, 2] - 70.0) / 7.0, atol=1e-9)
    assert drawn[:, 2].min() < 15.0 and drawn[:, 2].max() > 125.0  # it reaches both ends
    assert 0.4 < (drawn[:, 2] > 70.0).mean() < 0.6  # uniform along the length
    with pytest.raises(ValueError, match="centring"):
        shot_centre(centres, "pelvis", rng)


def test_a_synthetic_only_run_renders_the_same_synthetic_shots_without_the_realistic(
    shards, tmp_path
):
    """`--synthetic-only` draws the same anatomy and poses and casts the bone-only DRRs of the
    paired run of that seed; it stores no realistic shots, and asking for them says so."""
    with h5py.File(shards[0], "r") as h5:
        paired = read_case(h5, "case_000000")
    only = simulate(SimulateConfig(out=tmp_path / "s", seed=5, domains=("synthetic",), **SMALL))
    with h5py.File(only[0], "r") as h5:
        case = read_case(h5, "case_000000")
    assert case.realistic is None
    # The same rays through the same bone; only where the cast starts its samples differs (the
    # paired run's cast box also holds soft tissue): about 1 % on this 2.5 mm test volume.
    difference = np.abs(case.synthetic - paired.synthetic).mean()
    assert difference < 0.02 * paired.synthetic.mean(), (difference, paired.synthetic.mean())
    np.testing.assert_array_equal(case.labels, paired.labels)
    with pytest.raises(KeyError, match="no realistic shots"):
        ShotDataset(tmp_path / "s", "realistic")[0]


def test_scan_cut_overrides_the_generators_chance_and_changes_nothing_else():
    from x23d_ros.data.simulate import procedural_spine

    def spine(index, scan_cut):
        rng = np.random.default_rng([5, index])
        return procedural_spine(rng, 3.0, "procedural-3", scan_cut)

    kinds = {}
    for index in range(8):
        drawn, never, always = (spine(index, c) for c in ("generator", "never", "always"))
        cut = "scan_cut_z_mm" in drawn.meta
        kinds[cut] = True
        assert "scan_cut_z_mm" not in never.meta and "L5" in never.present_levels
        assert "scan_cut_z_mm" in always.meta and "L5" not in always.present_levels
        # The cut is the generator's last draw: the same spine, whole or cut.
        same = always if cut else never
        np.testing.assert_array_equal(drawn.labels, same.labels)
        np.testing.assert_array_equal(drawn.hu, same.hu)
        above = round(float(always.affine[2, 3] - never.affine[2, 3]) / 3.0)
        np.testing.assert_array_equal(always.labels, never.labels[:, :, above:])
    assert kinds == {False: True, True: True}  # seeds 0-7 draw both kinds
    with pytest.raises(ValueError, match="scan_cut"):
        SimulateConfig(out=".", cases=1, views=2, seed=0, scan_cut="sometimes")


def test_fluoroscopy_shows_the_whole_patient_so_its_spines_are_never_cut(tmp_path):
    from x23d_ros.data.simulate import procedural_spine, simulate_case

    cut = next(  # a case the generator cuts (seeds 0-7 draw both kinds, test above)
        i
        for i in range(8)
        if "scan_cut_z_mm"
        in procedural_spine(np.random.default_rng([5, i]), 3.0, "procedural-3").meta
    )
    small = dict(out=tmp_path, cases=1, views=2, seed=5, image_size=48, spacing_mm=3.0)
    only = SimulateConfig(**small, generator="procedural-3", domains=("synthetic",))
    both = SimulateConfig(**small, generator="procedural-3")
    assert (only.scan_cut, both.scan_cut) == ("generator", "never")
    drawn, _, _ = simulate_case(cut, only)
    whole, effects, _ = simulate_case(cut, both)
    assert np.isnan(drawn.centres_mm[4]).all() and not np.isnan(whole.centres_mm).any()
    assert whole.realistic is not None and len(effects) == 2
    with pytest.raises(ValueError, match="synthetic-only"):
        SimulateConfig(**small, generator="procedural-3", scan_cut="always")
    # A CT is what it is: its scan range is never redrawn.
    assert SimulateConfig(**small, source="ct", scan_cut="generator").scan_cut == "generator"
