"""`x23d simulate`: paired synthetic/realistic shots of procedural spines or a real CT → shards.

Case i of a run with seed S draws everything from `numpy.random.default_rng([S, i])`, so a case
is the same whichever worker makes it, and the same seed gives the same shards, byte for byte.
Shards are written to a temporary name and renamed when complete; a run that stops can be
started again with the same arguments and makes only the shards that are missing.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from x23d_ros.anatomy import Anatomy
from x23d_ros.anatomy.ct import load_ct
from x23d_ros.anatomy.procedural import GENERATOR_VERSION, GENERATORS, generate, spine_params
from x23d_ros.data.shards import (
    Case,
    centres_array,
    crop_labels,
    open_shard_for_writing,
    write_case,
)
from x23d_ros.poses import CONFIGURATIONS, sample_views
from x23d_ros.xray.render import RenderParams, cast, render_shots

log = logging.getLogger(__name__)


SIMULATED_DOMAINS = ("synthetic", "realistic")
#: `SimulateConfig.scan_cut`: the generator's own chance of a cut scan range, or always, or never.
SCAN_CUTS = ("generator", "always", "never")


@dataclass(frozen=True)
class SimulateConfig:
    out: Path
    cases: int
    views: int
    seed: int
    image_size: int = 256
    spacing_mm: float = 1.0
    source: str = "procedural"
    ct: Path | None = None
    labels: Path | None = None
    cases_per_shard: int = 8
    configuration: str = "random"
    centring: str = "spine"
    distortion: bool = True
    render: RenderParams = field(default_factory=RenderParams)
    generator: str = GENERATOR_VERSION  # source "procedural": which generator draws the spines
    # Which domains to render: both (the paired data set), or the synthetic one alone (the
    # anatomy stages train on it; no soft-tissue cast, no fluoroscopy physics).
    domains: tuple[str, ...] = SIMULATED_DOMAINS
    # Procedural spines: whether the scan range ends inside the lumbar spine ("generator": the
    # generator's own chance; "always"; "never"). The anatomy is otherwise the same draw.
    # A cut scan range is a CT's property, a DRR's input: a fluoroscopy shot shows the whole
    # patient. With the realistic domain the spine is therefore never cut ("generator" becomes
    # "never" for generators that cut, "always" is refused): a cut body rendered as
    # fluoroscopy ends in air inside the field, its auto-window spans air to body and hides
    # the spine, and such a pair teaches the style transfer to draw bone it cannot see.
    scan_cut: str = "generator"

    def __post_init__(self) -> None:
        if self.scan_cut not in SCAN_CUTS:
            raise ValueError(f"scan_cut must be one of {SCAN_CUTS}, not {self.scan_cut!r}")
        if "realistic" in self.domains and self.source == "procedural":
            if self.scan_cut == "always":
                raise ValueError(
                    "scan_cut 'always' cuts the body a fluoroscopy shot shows whole: "
                    "render the synthetic domain alone (--synthetic-only) for cut scan ranges"
                )
            if self.scan_cut == "generator" and spine_params(self.generator).scan_cut_p > 0:
                object.__setattr__(self, "scan_cut", "never")
        if self.domains not in (SIMULATED_DOMAINS, ("synthetic",)):
            raise ValueError(
                f"domains must be {SIMULATED_DOMAINS} or ('synthetic',), not {self.domains}"
            )
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, not {self.generator!r}")


_CT_CACHE: dict[tuple, Anatomy] = {}


def procedural_spine(
    rng: np.random.Generator,
    spacing_mm: float = 1.0,
    generator: str = GENERATOR_VERSION,
    scan_cut: str = "generator",
) -> Anatomy:
    """The procedural spine a case draws first from its generator `rng`
    (`numpy.random.default_rng([seed, index])`): how to get a case's anatomy back from its seed.
    `scan_cut` (`SCAN_CUTS`) overrides the generator's chance of a scan range that ends inside
    the lumbar spine: the cut is the generator's last draw, so the spine is the same."""
    params = None
    if scan_cut != "generator":
        chance = {"always": 1.0, "never": 0.0}[scan_cut]
        params = replace(spine_params(generator), scan_cut_p=chance)
    seed = int(rng.integers(2**31))
    return generate(seed, spacing_mm=spacing_mm, params=params, generator=generator)


def _anatomy(config: SimulateConfig, rng: np.random.Generator) -> Anatomy:
    if config.source == "procedural":
        return procedural_spine(rng, config.spacing_mm, config.generator, config.scan_cut)
    key = (str(config.ct), str(config.labels), config.spacing_mm)
    if key not in _CT_CACHE:  # one real CT, loaded once per process
        _CT_CACHE[key] = load_ct(config.ct, config.labels, spacing_mm=config.spacing_mm)
    return _CT_CACHE[key]


#: Where a case's shots are centred: "spine", the mean of the labelled levels' centres (the
#: whole lumbar spine in view, as in X23D's data); "level", a point drawn uniformly along the
#: line through the levels' centres, from the first to the last (a surgeon centres the shots
#: on the level operated on, and the images may miss the sacrum or the 12th ribs).
CENTRINGS = ("spine", "level")


def shot_centre(
    centres: dict[str, np.ndarray], centring: str, rng: np.random.Generator
) -> np.ndarray:
    """The point (3,) mm a case's shots are centred on (see `CENTRINGS`)."""
    points = np.array(list(centres.values()), float)
    if centring == "spine":
        return points.mean(axis=0)
    if centring != "level":
        raise ValueError(f"centring must be one of {CENTRINGS}, not {centring!r}")
    if len(points) == 1:
        return points[0]
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    at = rng.uniform(0.0, lengths.sum())
    i = min(int(np.searchsorted(np.cumsum(lengths), at)), len(lengths) - 1)
    t = (at - lengths[:i].sum()) / max(lengths[i], 1e-9)
    return points[i] + t * (points[i + 1] - points[i])


def simulate_case(index: int, config: SimulateConfig) -> tuple[Case, list[dict], list[dict]]:
    """Case `index` of the run: anatomy, poses, both domains' images."""
    rng = np.random.default_rng([config.seed, index])
    anatomy = _anatomy(config, rng)
    centres = anatomy.centres_mm()
    poses = sample_views(
        config.views, shot_centre(centres, config.centring, rng), rng, config.configuration
    )
    K = np.stack([p.intrinsics(config.image_size) for p in poses])
    T = np.stack([p.T_ref_source for p in poses])
    pixel_mm = np.array([p.detector_mm / config.image_size for p in poses])
    if "realistic" in config.domains:
        shots = render_shots(
            anatomy,
            K,
            T,
            config.image_size,
            pixel_mm,
            rng,
            config.render,
            distortion=config.distortion,
        )
        realistic = np.round(shots.realistic * 255.0)
        effects, instruments = [e.as_dict() for e in shots.effects], shots.instruments
        synthetic = shots.synthetic
    else:
        synthetic = cast(
            anatomy, None, None, K, T, config.image_size, config.render, synthetic_only=True
        )[0].numpy()
        realistic, effects, instruments = None, None, []
    labels, affine = crop_labels(anatomy.labels, anatomy.affine)
    case = Case(
        name=f"case_{index:06d}",
        labels=labels,
        affine=affine,
        centres_mm=centres_array(centres),
        synthetic=synthetic,
        realistic=realistic,
        K=K,
        T_ref_source=T,
        view_kinds=[p.kind for p in poses],
        attrs={
            "seed": config.seed,
            "index": index,
            "source": anatomy.source,
            "generator": config.generator if config.source == "procedural" else "ct",
            "image_size": config.image_size,
            "spacing_mm": config.spacing_mm,
            "centring": config.centring,
            "scan_cut": config.scan_cut,
        },
    )
    return case, effects, instruments


def shard_path(out: Path, shard: int) -> Path:
    return out / f"shard_{shard:05d}.h5"


def write_shard(shard: int, config: SimulateConfig) -> Path:
    """Make shard `shard` (its cases) unless it exists; return its path."""
    path = shard_path(config.out, shard)
    if path.exists():
        return path
    tmp = path.with_suffix(".h5.tmp")
    first = shard * config.cases_per_shard
    last = min(first + config.cases_per_shard, config.cases)
    with open_shard_for_writing(tmp) as h5:
        for index in range(first, last):
            case, effects, instruments = simulate_case(index, config)
            write_case(h5, case, effects, instruments)
    os.replace(tmp, path)
    return path


def run_attrs(config: SimulateConfig) -> dict:
    """What every case of the run `config` records that must match for a resumed run."""
    ct = config.source == "ct"
    return {
        "seed": config.seed,
        "generator": "ct" if ct else config.generator,
        "source": f"ct:{Path(config.ct).name}" if ct else "procedural",
        "image_size": config.image_size,
        "spacing_mm": config.spacing_mm,
        "centring": config.centring,
        "scan_cut": config.scan_cut,
        "views": config.views,
        "domains": list(config.domains),
    }


def check_resumable(shard: Path, config: SimulateConfig) -> None:
    """Refuse to add shards to a folder whose existing shards another run made (other seed,
    generator, image size, ...): a mixed folder would train or score on data nobody asked for.
    Shards from before `centring` was recorded were centred on the spine; those from before
    `scan_cut` was, cut as their generator draws."""
    want = run_attrs(config)
    with h5py.File(shard, "r") as h5:
        first = h5[sorted(h5.keys())[0]]
        have = {k: first.attrs.get(k) for k in want} | {
            "views": first["synthetic"].shape[0],
            "domains": [d for d in SIMULATED_DOMAINS if d in first],
        }
        if have["centring"] is None:
            have["centring"] = "spine"
        if have["scan_cut"] is None:
            have["scan_cut"] = "generator"
    differ = {k: (have[k], v) for k, v in want.items() if have[k] != v}
    if differ:
        what = ", ".join(f"{k} {a!r} (asked: {b!r})" for k, (a, b) in differ.items())
        raise ValueError(
            f"{shard.parent} holds shards of another run: {what}. "
            "Give a new --out, or delete those shards to make them anew."
        )


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _write_shard_star(args: tuple[int, SimulateConfig]) -> Path:
    return write_shard(*args)


def simulate(config: SimulateConfig, workers: int = 1) -> list[Path]:
    """Write every shard of the run (skipping finished ones) with `workers` processes."""
    if config.source == "ct" and (config.ct is None or config.labels is None):
        raise ValueError("--source ct needs --ct and --labels")
    config.out.mkdir(parents=True, exist_ok=True)
    n_shards = -(-config.cases // config.cases_per_shard)
    todo = [s for s in range(n_shards) if not shard_path(config.out, s).exists()]
    done = [s for s in range(n_shards) if s not in todo]
    if done:
        check_resumable(shard_path(config.out, done[0]), config)
    if len(todo) < n_shards:
        log.info(
            "%d of %d shards exist already; making the other %d",
            n_shards - len(todo),
            n_shards,
            len(todo),
        )
    bar = tqdm(total=len(todo), desc="shards", unit="shard")
    if workers <= 1:
        for s in todo:
            write_shard(s, config)
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with get_context("spawn").Pool(
            workers, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            for _ in pool.imap_unordered(_write_shard_star, [(s, config) for s in todo]):
                bar.update()
    bar.close()
    return [shard_path(config.out, s) for s in range(n_shards)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder of the shards")
    parser.add_argument("--cases", type=int, default=8, help="number of cases (procedural: spines)")
    parser.add_argument("--views", type=int, default=8, help="shots per case")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument("--source", choices=("procedural", "ct"), default="procedural")
    parser.add_argument("--ct", type=Path, help="CT NIfTI (with --source ct)")
    parser.add_argument("--labels", type=Path, help="label NIfTI or folder of vertebrae_L*.nii.gz")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--image-size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--spacing-mm", type=float, default=1.0, help="anatomy voxel size")
    parser.add_argument("--cases-per-shard", type=int, default=8)
    parser.add_argument(
        "--configuration", default="random", choices=("random", *sorted(CONFIGURATIONS))
    )
    parser.add_argument(
        "--centring",
        default="spine",
        choices=CENTRINGS,
        help="spine: shots centred on the lumbar spine; level: on a random point along it",
    )
    parser.add_argument(
        "--generator",
        default=GENERATOR_VERSION,
        choices=GENERATORS,
        help="procedural spines: procedural-3 adds age-dependent bone density, trabecular "
        "heterogeneity and CT scan ranges that end inside the lumbar spine; real-shapes-1 is "
        "procedural-3 with real L1-L5 shapes of the training persons, real-shapes-1-val of "
        "the held-out persons (x23d_ros.anatomy.real_shapes)",
    )
    parser.add_argument(
        "--scan-cut",
        default="generator",
        choices=SCAN_CUTS,
        help="procedural spines: a scan range that ends inside the lumbar spine as the "
        "generator draws it (procedural-3 and real-shapes: 1 in 4), in every case, or never; "
        "with the realistic domain (no --synthetic-only) never: a fluoroscopy shot shows the "
        "whole patient",
    )
    parser.add_argument("--no-distortion", action="store_true", help="no image-intensifier warp")
    parser.add_argument(
        "--synthetic-only",
        action="store_true",
        help="render the synthetic domain alone (what the anatomy stages train on): no "
        "soft-tissue cast and no fluoroscopy physics",
    )
    parser.add_argument("--preview", type=Path, help="draw the first case's shots into this PNG")


def run(args: argparse.Namespace) -> int:
    config = SimulateConfig(
        out=args.out,
        cases=args.cases,
        views=args.views,
        seed=args.seed,
        image_size=args.image_size,
        spacing_mm=args.spacing_mm,
        source=args.source,
        ct=args.ct,
        labels=args.labels,
        cases_per_shard=args.cases_per_shard,
        configuration=args.configuration,
        centring=args.centring,
        distortion=not args.no_distortion,
        generator=args.generator,
        scan_cut=args.scan_cut,
        domains=("synthetic",) if args.synthetic_only else SIMULATED_DOMAINS,
    )
    paths = simulate(config, workers=args.workers)
    log.info("%d cases in %d shards under %s", config.cases, len(paths), config.out)
    if args.preview:
        from x23d_ros.data.preview import contact_sheet

        contact_sheet(paths[0], args.preview)
        log.info("contact sheet: %s", args.preview)
    return 0
