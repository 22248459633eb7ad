"""The procedural lumbar spine: T10 to the sacrum inside a soft-tissue body, as a CT volume.

`generate(seed)` returns an `Anatomy` whose L1–L5 are labelled 1–5. The lower thoracic
vertebrae (T12, T11, T10 by default) with their ribs, the sacrum and the iliac wings are bone
in the HU volume but labelled 0: they are the neighbours that a real X-ray shows and that the
network must tell apart from L1 and L5. The thoracic spine continues above L1, as in a patient,
so the end of the bone column is no cue to the levels: the ribs and the sacrum are.

Random variables (all in `SpineParams`): build, per-level morphometry (`morphometry`),
lumbar lordosis and sacral slope, mild scoliosis and axial rotation, disc degeneration and
osteophytes, bone density, body size and fat, bowel gas. Same seed → same volume, bit for bit.

Generators (`GENERATORS`; `generate(seed, generator=...)`):

- `procedural-2` (the default, and the benchmark's held-out sets): each level's cancellous
  bone is drawn around the CTSP mean (≈ 160 HU) with a narrowed spread, nearly uniform inside.
- `procedural-3`: the same spine for the same seed, with (a) the patient's trabecular density
  drawn from their age, from young (≈ 226 HU) to osteoporotic (≈ 90 HU), shared by the levels,
  so that the synthetic DRR's 150 HU threshold leaves bodies anywhere from solid to a shell;
  (b) trabecular heterogeneity of tens of HU per voxel, not ±10 %; (c) in a quarter of the
  cases a CT scan range that ends inside the lumbar spine (a chest CT, as many real CTs are),
  so that the end of the volume is no cue to the levels either. Its draws come from a second
  stream (`[seed, 3]`), so the spine's shape is procedural-2's.
- `real-shapes-1` and `real-shapes-1-val`: procedural-3 whose L1–L5 are real vertebrae
  (`real_shapes`): for each level a shape of the same level (else the nearest) from the
  training persons, or from the held-out `VALIDATION_PERSONS` for `-val`; scaled per axis
  towards the sampled body width, depth and height (within ±15 %), then deformed by a smooth
  random field (SD 1.5 mm, correlated over 25 mm). The chain stacks the scaled shapes' real
  body heights. Shape choice and deformation come from a third stream (`[seed, 21]`); the
  meta's `shapes` says whose vertebra each level is. Thoracic levels, ribs, sacrum, ilium,
  soft tissue and discs stay procedural.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from x23d_ros.anatomy import LEVELS, Anatomy, real_shapes, sdf
from x23d_ros.anatomy.body import BodyShape, draw_body, soft_tissue_hu
from x23d_ros.anatomy.morphometry import LUMBAR, LevelShape, sample_levels
from x23d_ros.anatomy.vertebra import VertebraShape, draw_details, vertebra_sdf
from x23d_ros.geometry import rotation_matrix

GENERATOR_VERSION = "procedural-2"  # the default
GENERATORS = ("procedural-2", "procedural-3", "real-shapes-1", "real-shapes-1-val")

# Share of the disc part of the lordosis per segment, L1L2..L5S1 (estimate: caudal-heavy).
_LORDOSIS_SHARE = np.array([0.10, 0.15, 0.20, 0.25, 0.30])


@dataclass(frozen=True)
class SpineParams:
    """Ranges of the random variables; (low, high) are uniform, single floats are SDs."""

    build_sd: float = 0.06
    morphometry_spread: float = 0.6
    sacral_slope_deg: tuple[float, float] = (30.0, 50.0)  # estimate
    # L1–S1 lordosis = sacral slope + this (balanced spines: L1's endplate near level), estimate
    lordosis_over_slope_deg: tuple[float, float] = (0.0, 20.0)
    scoliosis_sd_deg: float = 2.0  # per segment, coronal
    axial_rotation_sd_deg: float = 2.5  # per vertebra
    degeneration: tuple[float, float] = (0.0, 0.6)  # chance of osteophytes per level
    disc_collapse: tuple[float, float] = (0.5, 1.0)  # height factor of a degenerated disc
    cortical_hu: tuple[float, float] = (900.0, 1500.0)
    cortical_mm: tuple[float, float] = (1.0, 1.6)
    margin_mm: float = 10.0
    thoracic_levels: int = 3  # T12, T11, T10: enough that the column's top is out of view
    thoracic_kyphosis_deg: tuple[float, float] = (0.0, 4.0)  # per segment, estimate
    # procedural-3 (None / 0 in procedural-2). Age of the patient, uniform (estimate: adults
    # who have spine surgery); it sets the trabecular density (`trabecular_hu_at`).
    age_years: tuple[float, float] | None = None
    trabecular_patient_sd_hu: float = 40.0  # between patients of one age (Jang et al. 2019)
    trabecular_level_sd_hu: float = 10.0  # between one patient's levels, estimate
    # SD of the cancellous bone's HU from voxel to voxel, uniform per patient. Estimate: a
    # 1–1.5 mm voxel holds a few trabecular cells at ≈ 10 % bone volume fraction; their count
    # varies from voxel to voxel by a few % of the volume, at ≈ +1800 HU for bone against ≈ 0
    # for marrow: tens of HU, plus the CT's own noise.
    trabecular_sd_hu: tuple[float, float] | None = None
    # Chance that the CT's scan range ends inside the lumbar spine (estimate), the cut then
    # drawn uniformly between L4's and L1's centres: the volume holds nothing below it.
    scan_cut_p: float = 0.0
    # real-shapes (None in procedural-2 and -3): which persons' real vertebrae L1–L5 are drawn
    # from ("train" or "val", see `real_shapes.VALIDATION_PERSONS`), how far each axis may be
    # scaled towards the sampled morphometry, and the smooth deformation (SD, correlation
    # length; estimates: a few mm over a body's width, so that no two spines share a shape).
    real_shapes: str | None = None
    shape_scale_limits: tuple[float, float] = (0.85, 1.15)
    shape_deform_sd_mm: float = 1.5
    shape_deform_length_mm: float = 25.0


def spine_params(generator: str) -> SpineParams:
    """The random variables of a generator in `GENERATORS`."""
    if generator == "procedural-2":
        return SpineParams()
    three = SpineParams(age_years=(25.0, 85.0), trabecular_sd_hu=(20.0, 60.0), scan_cut_p=0.25)
    if generator == "procedural-3":
        return three
    if generator == "real-shapes-1":
        return replace(three, real_shapes="train")
    if generator == "real-shapes-1-val":
        return replace(three, real_shapes="val")
    raise ValueError(f"generator must be one of {GENERATORS}, not {generator!r}")


def trabecular_hu_at(age_years: float) -> float:
    """Mean L1 trabecular attenuation (HU, 120 kV) of adults of an age.

    Jang et al., Radiology 2019;291:360–367 (20 374 CTs): 226 ± 44 HU under 30 years and
    89 ± 38 HU at 90 or more, falling about linearly with age. Here a line through those two
    group means, placed at 25 and 92 years (estimates of the groups' mean ages): ≈ 2.0 HU a
    year, 135 HU at 70.
    """
    return 226.0 + (89.0 - 226.0) * (age_years - 25.0) / (92.0 - 25.0)


@dataclass
class _Bone:
    name: str
    label: int
    R: np.ndarray  # local axes as columns, in the patient frame
    centre: np.ndarray
    half: np.ndarray  # half extent of the local box
    offset: np.ndarray  # box centre relative to `centre`, local
    fn: object  # local points (*, 3) → signed distance (*,)
    cancellous_hu: float


def _chain(levels: list[LevelShape], rng: np.random.Generator, p: SpineParams) -> tuple[dict, list]:
    """Place S1's endplate, then each vertebra upwards through its disc (lordotic chain).

    Returns the frames {name: (R, centre, disc below)} and the discs [(R, centre, rx, ry, half_h)].
    """
    sacral_slope = np.radians(rng.uniform(*p.sacral_slope_deg))
    lordosis = sacral_slope + np.radians(rng.uniform(*p.lordosis_over_slope_deg))
    vertebral = sum(np.arctan2(s.height_anterior - s.height_posterior, s.depth) for s in levels)
    disc_wedges = np.clip(lordosis - vertebral, 0.0, None) * _LORDOSIS_SHARE
    R = rotation_matrix([1, 0, 0], sacral_slope)  # S1 endplate faces anterior-superior
    top = np.zeros(3)
    frames = {"S1": (R.copy(), top.copy())}
    discs = []
    ex, ey, ez = np.eye(3)
    for i in reversed(range(5)):
        s = levels[i]
        disc = s.disc_below
        top = top + R @ (ez * disc / 2)
        R = R @ rotation_matrix(ex, -disc_wedges[i])
        R = R @ rotation_matrix(ey, np.radians(p.scoliosis_sd_deg * rng.standard_normal()))
        # The disc fills the wedge between the endplates; bone overwrites any overlap.
        half_h = disc / 2 + 0.5 * s.depth * np.tan(disc_wedges[i] / 2) + 1.5
        discs.append((R.copy(), top.copy(), s.width / 2, s.depth / 2, half_h))
        top = top + R @ (ez * disc / 2)
        wedge = np.arctan2(s.height_anterior - s.height_posterior, s.depth)
        centre = top + R @ (ez * s.height / 2)
        R_local = R @ rotation_matrix(ex, -wedge / 2)
        twist = rotation_matrix(ez, np.radians(p.axial_rotation_sd_deg * rng.standard_normal()))
        frames[s.name] = (R_local @ twist, centre, disc)
        R = R @ rotation_matrix(ex, -wedge)
        top = centre + R @ (ez * s.height / 2)
    frames["L1_top"] = (R, top)
    return frames, discs


# Per thoracic level above L1 (T12, T11, T10, ...): size relative to L1, transverse
# processes relative to L1's, and rib length relative to the 12th rib. Estimates: vertebral
# size decreases cranially; the lower ribs lengthen cranially (ribs 8–12 shorten
# progressively, embodi3d "Left ribs CT scan" description); 11 and 12 are floating ribs.
_THORACIC = (
    ("T12", 0.95, 0.70, 1.0),
    ("T11", 0.91, 0.75, 1.3),
    ("T10", 0.87, 0.80, 1.6),
    ("T9", 0.84, 0.85, 1.8),
)


def _thoracic(levels: list[LevelShape], frames: dict, rng, p: SpineParams) -> list[tuple]:
    """The thoracic vertebrae above L1, stacked up from L1's upper endplate with a mild
    kyphosis: [(shape, R, centre, rib length factor)]; adds each to `frames`."""
    if not 0 <= p.thoracic_levels <= len(_THORACIC):
        raise ValueError(f"thoracic_levels must be 0..{len(_THORACIC)}, not {p.thoracic_levels}")
    l1 = levels[0]
    R, top = frames["L1_top"]
    out = []
    ex = np.eye(3)[0]
    for name, size, transverse, rib in _THORACIC[: p.thoracic_levels]:
        scaled = {k: v * size if isinstance(v, float) else v for k, v in asdict(l1).items()}
        scaled.update(
            name=name,
            transverse_span=transverse * l1.transverse_span,
            disc_below=0.85 * size * l1.disc_below,
            cancellous_hu=l1.cancellous_hu,
        )
        shape = LevelShape(**scaled)
        R = R @ rotation_matrix(ex, np.radians(rng.uniform(*p.thoracic_kyphosis_deg)))
        centre = top + R @ np.array([0, 0, shape.disc_below + shape.height / 2])
        frames[name] = (R.copy(), centre, shape.disc_below)
        out.append((shape, R.copy(), centre, rib))
        top = centre + R @ np.array([0, 0, shape.height / 2])
    return out


def _sacrum_sdf(l5: LevelShape):
    rx, ry = 0.52 * l5.width, 0.5 * l5.depth

    def fn(q: np.ndarray) -> np.ndarray:
        body = sdf.elliptic_cylinder(q - np.array([0, 0, -14.0]), rx, ry, 14.0)
        mass = sdf.capsule(
            q, np.array([0, 8.0, -20]), np.array([0, 35.0, -75]), np.array([24.0, 14.0])
        )
        d = sdf.smooth_union(body, mass, 6.0)
        for side in (-1.0, 1.0):
            ala = sdf.ellipsoid(
                q, np.array([side * (rx + 14), 10.0, -22]), np.array([26.0, 22, 24])
            )
            d = sdf.smooth_union(d, ala, 6.0)
        return d

    return fn


def _rib_sdf(level: LevelShape, length: float = 1.0):
    """A rib pair from the level's transverse processes, outwards, forwards and downwards;
    `length` scales the 12th rib's shape (the longer ribs above sweep further forwards)."""

    def fn(q: np.ndarray) -> np.ndarray:
        d = np.full(q.shape[:-1], 1e3)
        for side in (-1.0, 1.0):
            tip = np.array(
                [side * level.transverse_span / 2, level.depth / 2 + level.canal_depth + 4, 4.0]
            )
            lateral = side * np.sqrt(length)  # the longer ribs curve forwards, inside the body
            mid = tip + np.array([38.0 * lateral, -6.0 * length, -26.0])
            end = mid + np.array([22.0 * lateral, -30.0 * length**1.5, -34.0])
            d = np.minimum(d, sdf.capsule(q, tip, mid, np.array([4.5, 4.0])))
            d = np.minimum(d, sdf.capsule(q, mid, end, np.array([4.0, 3.0])))
        return d

    return fn


def _ilium_sdf(half_width: float, crest_z: float):
    """Iliac wings: thin curved shells lateral to L5 and S1, cut at the crest."""

    def fn(q: np.ndarray) -> np.ndarray:
        d = np.full(q.shape[:-1], 1e3)
        for side in (-1.0, 1.0):
            centre = np.array([side * half_width, 30.0, crest_z - 75.0])
            shell = np.abs(sdf.ellipsoid(q, centre, np.array([34.0, 70.0, 80.0]))) - 3.5
            wing = np.maximum(shell, q[..., 2] - crest_z)
            wing = np.maximum(wing, side * (centre[0] - q[..., 0]))  # lateral half only
            d = np.minimum(d, wing)
        return d

    return fn


def _vertebra(shape: LevelShape, label: int, R, centre, rng, degeneration: float) -> _Bone:
    """A vertebra of `shape` (its details drawn from `rng`) at `centre` with axes `R`."""
    v = draw_details(shape, rng, degeneration)
    return _Bone(
        shape.name,
        label,
        R,
        centre,
        v.half_extent,
        v.centre_offset,
        lambda q: vertebra_sdf(q, v),
        shape.cancellous_hu,
    )


def _real_vertebra(
    shape: LevelShape, fitted: real_shapes.FittedShape, R, centre, margin_mm: float
) -> _Bone:
    half, offset = fitted.box(margin_mm)
    name, hu = shape.name, shape.cancellous_hu
    return _Bone(name, LEVELS[name], R, centre, half, offset, fitted.sdf, hu)


def _bones(
    levels, thoracic, frames, rng, p: SpineParams, body: BodyShape, fitted=None
) -> list[_Bone]:
    degeneration = rng.uniform(*p.degeneration)
    bones = []
    for s in levels:
        R, centre, _ = frames[s.name]
        if fitted is None:
            bones.append(_vertebra(s, LEVELS[s.name], R, centre, rng, degeneration))
        else:
            margin = 3.0 * p.shape_deform_sd_mm + 1.0  # the deformation's reach, 3 SD
            bones.append(_real_vertebra(s, fitted[s.name], R, centre, margin))
    for shape, R, centre, rib in thoracic:
        bones.append(_vertebra(shape, 0, R, centre, rng, degeneration))
        bones.append(
            _Bone(
                f"ribs_{shape.name}",
                0,
                R,
                centre,
                np.array([55.0 + 60.0 * np.sqrt(rib), 45.0 + 30.0 * rib**1.5, 80.0]),
                np.array([0, 0.0, -30]),
                _rib_sdf(shape, rib),
                250.0,
            )
        )
    R_s, top_s = frames["S1"]
    bones.append(
        _Bone(
            "sacrum",
            0,
            R_s,
            top_s,
            np.array([80.0, 70, 70]),
            np.array([0, 20.0, -40]),
            _sacrum_sdf(levels[4]),
            levels[4].cancellous_hu,
        )
    )
    crest_z = frames["L4"][1][2] - 0.5 * levels[3].height - 0.5 * levels[3].disc_below
    eye = np.eye(3)
    half_width = body.pelvis_half_width
    bones.append(
        _Bone(
            "ilium",
            0,
            eye,
            np.array([0, 0.0, crest_z]),
            np.array([half_width + 45, 90, 85]),
            np.array([0, 30.0, -75]),
            _ilium_sdf(half_width, crest_z),
            200.0,
        )
    )
    return bones


def generate(
    seed: int,
    spacing_mm: float = 1.0,
    params: SpineParams | None = None,
    generator: str = GENERATOR_VERSION,
) -> Anatomy:
    """A procedural lumbar spine CT (`Anatomy`) for `seed`, at isotropic `spacing_mm`, drawn
    by `generator` (its `spine_params` unless `params` are given)."""
    p = params or spine_params(generator)
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 3])  # procedural-3's draws; procedural-2 draws none
    build = 1.0 + p.build_sd * rng.standard_normal()
    levels = sample_levels(rng, size=build, spread=p.morphometry_spread)
    age = None
    if p.age_years is not None:
        age = float(extra.uniform(*p.age_years))
        patient = trabecular_hu_at(age) + p.trabecular_patient_sd_hu * extra.standard_normal()
        levels = [
            replace(
                s,
                cancellous_hu=max(
                    40.0, patient + p.trabecular_level_sd_hu * extra.standard_normal()
                ),
            )
            for s in levels
        ]
    for i, s in enumerate(levels):  # degenerated discs collapse
        if rng.random() < 0.3:
            levels[i] = replace(s, disc_below=s.disc_below * rng.uniform(*p.disc_collapse))
    fitted = None
    if p.real_shapes is not None:
        levels, fitted = real_shapes.fit_levels(
            levels,
            np.random.default_rng([seed, 21]),
            p.real_shapes,
            p.shape_scale_limits,
            p.shape_deform_sd_mm,
            p.shape_deform_length_mm,
        )
    frames, discs = _chain(levels, rng, p)
    thoracic = _thoracic(levels, frames, rng, p)
    body = draw_body(rng, build, frames)
    bones = _bones(levels, thoracic, frames, rng, p, body, fitted)

    lo, hi = body.bounds_mm(frames, margin=p.margin_mm)
    shape = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo

    soft = soft_tissue_hu(body, shape, affine, rng)
    for R, mid, rx, ry, half_h in discs:
        _paint_disc(soft, affine, R, mid, rx, ry, half_h, rng)

    bone_d = np.full(shape, 1e3, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    cancellous = np.zeros(shape, dtype=np.float32)
    for bone in bones:
        _rasterise(bone, bone_d, labels, cancellous, affine)

    cortical_hu = rng.uniform(*p.cortical_hu)
    cortical_mm = rng.uniform(*p.cortical_mm)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.2) * 2.5
    if p.trabecular_sd_hu is None:
        interior = cancellous * (1.0 + 0.35 * texture)
    else:  # heterogeneity in HU, whatever the density
        sd = extra.uniform(*p.trabecular_sd_hu)
        interior = cancellous + sd * texture / max(float(texture.std()), 1e-6)
    shell = np.clip((bone_d + cortical_mm) / 0.8, 0.0, 1.0)  # 1 in the cortex, 0 deep inside
    bone_hu = shell * cortical_hu + (1.0 - shell) * interior
    occupancy = np.clip(0.5 - bone_d / spacing_mm, 0.0, 1.0)
    hu = occupancy * bone_hu + (1.0 - occupancy) * soft
    hu = ndimage.gaussian_filter(hu, 0.6).astype(np.float32)  # the CT's point-spread
    labels[bone_d > 0] = 0
    cut_mm = None
    if p.scan_cut_p > 0 and extra.random() < p.scan_cut_p:
        cut_mm = float(extra.uniform(frames["L4"][1][2], frames["L1"][1][2]))
        first = int(np.ceil((cut_mm - affine[2, 3]) / spacing_mm))
        hu, labels = hu[:, :, first:], labels[:, :, first:]
        affine[2, 3] += first * spacing_mm
    meta = {
        "generator": generator,
        "build": float(build),
        "levels": [asdict(s) for s in levels],
        "cortical_hu": float(cortical_hu),
    }
    if age is not None:
        meta["age_years"] = age
    if cut_mm is not None:
        meta["scan_cut_z_mm"] = cut_mm
    if fitted is not None:
        meta["shapes"] = {
            name: {
                "bank_index": f.shape.index,
                "person": f.shape.person,
                "source": f.shape.source,
                "level": f.shape.level,
                "split": f.shape.split,
                "scale": f.scale.tolist(),
                "R": frames[name][0].tolist(),  # local → patient axes, as for every level
                "centre_mm": frames[name][1].tolist(),
            }
            for name, f in fitted.items()
        }
    return Anatomy(hu=hu, labels=labels, affine=affine, source="procedural", seed=seed, meta=meta)


def _rasterise(bone: _Bone, bone_d, labels, cancellous, affine) -> None:
    box_centre = bone.centre + bone.R @ bone.offset
    slices, grid = sdf.grid_block(affine, bone_d.shape, box_centre, bone.R, bone.half)
    if slices is None:
        return
    local = sdf.transform(grid, bone.R, bone.centre).astype(np.float32)
    d = _banded(bone.fn, local, spacing_mm=float(affine[0, 0]))
    wins = d < bone_d[slices]
    bone_d[slices] = np.where(wins, d, bone_d[slices])
    labels[slices] = np.where(wins, bone.label, labels[slices])
    cancellous[slices] = np.where(wins, bone.cancellous_hu, cancellous[slices])


def _banded(
    fn, local: np.ndarray, spacing_mm: float, band_mm: float = 3.0, stride: int = 3
) -> np.ndarray:
    """fn on a (a, b, c, 3) grid: exact within `band_mm` of the surface, interpolated elsewhere.

    A signed distance changes by at most the distance moved, so linear interpolation from a
    grid `stride` voxels apart is off by less than stride·spacing·√3 away from the surface,
    where only its sign and rough depth matter (occupancy, cortex vs cancellous core).
    """
    shape = local.shape[:3]
    knots = [np.unique(np.r_[0:n:stride, n - 1]) for n in shape]
    coarse = fn(local[np.ix_(*knots)]).astype(np.float32)
    coords = np.meshgrid(
        *(np.interp(np.arange(n), k, np.arange(len(k))) for n, k in zip(shape, knots, strict=True)),
        indexing="ij",
    )
    d = ndimage.map_coordinates(coarse, coords, order=1, mode="nearest")
    near = np.abs(d) < band_mm + stride * spacing_mm * np.sqrt(3)
    d[near] = fn(local[near])
    return d


def _paint_disc(soft, affine, R, mid, rx, ry, half_h, rng) -> None:
    slices, grid = sdf.grid_block(
        affine, soft.shape, mid, R, np.array([rx + 2, ry + 2, half_h + 2])
    )
    if slices is None:
        return
    d = sdf.elliptic_cylinder(sdf.transform(grid, R, mid), rx, ry, half_h)
    disc_hu = rng.uniform(70.0, 100.0)
    soft[slices] = np.where(d < 0, disc_hu, soft[slices])


__all__ = [
    "GENERATORS",
    "GENERATOR_VERSION",
    "LUMBAR",
    "SpineParams",
    "VertebraShape",
    "generate",
    "spine_params",
    "trabecular_hu_at",
]
