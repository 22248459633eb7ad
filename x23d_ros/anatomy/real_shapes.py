"""Real lumbar vertebrae for the procedural spine: a bank of signed distance grids, a split by
person, and a per-patient fit (scale to the sampled morphometry, smooth random deformation).

The bank (`shapes/real_vertebrae.npz`, built by `tools/build_shape_bank.py`; sources and
licences in `shapes/SOURCES.md`) holds real L1–L5 of 10 people and a population mean, each in
the canonical frame of `vertebra`: origin at the body centre, x to the patient's left, y
posterior, z along the body's axis (LPS). Collapsed (fractured) bodies are left out.

Split by person, never by vertebra: `VALIDATION_PERSONS` lend shapes only to the `val` split
(generator `real-shapes-1-val`), every other person only to `train` (`real-shapes-1`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from x23d_ros.anatomy.morphometry import LUMBAR, LevelShape

BANK_PATH = Path(__file__).with_name("shapes") / "real_vertebrae.npz"

#: People whose vertebrae only the validation split sees: 3 VerSe L1 patients and one BSEL
#: spine (L1–L5). Training has 3 other VerSe L1s, VerSe sub-verse004 (L2–L5), BSEL P001,
#: the Visible Human Male and the mean of 87 patients (L2–L5).
VALIDATION_PERSONS = ("sub-verse018", "sub-verse023", "sub-verse041", "bsel-P002")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class RealShape:
    """One real vertebra of the bank: its level, whose it is, and its signed distance grid."""

    index: int
    level: str
    person: str
    source: str
    sdf: np.ndarray  # (I, J, K) int8, quantum `step_mm`, clipped at ±127 quanta
    origin_mm: np.ndarray  # (3,) local position of voxel (0, 0, 0)
    grid_mm: float
    step_mm: float
    measures: dict  # body width, depth, heights (mm) in the canonical frame
    R_source: np.ndarray  # (3, 3) canonical axes in the source's LPS frame
    centre_source: np.ndarray  # (3,) body centre in the source's LPS frame, mm

    @property
    def split(self) -> str:
        return "val" if self.person in VALIDATION_PERSONS else "train"

    @property
    def lo_mm(self) -> np.ndarray:
        return self.origin_mm

    @property
    def hi_mm(self) -> np.ndarray:
        return self.origin_mm + self.grid_mm * (np.array(self.sdf.shape) - 1)

    def distance(self, q: np.ndarray) -> np.ndarray:
        """Signed distance (*,) in mm at local points (*, 3), trilinear; outside the grid and
        beyond the clip: +clip."""
        idx = (q.reshape(-1, 3) - self.origin_mm) / self.grid_mm
        d = ndimage.map_coordinates(
            self.sdf, idx.T, output=np.float32, order=1, mode="constant", cval=127.0
        )
        return (d * self.step_mm).reshape(q.shape[:-1])


@functools.lru_cache(maxsize=2)
def load_bank(path: Path = BANK_PATH) -> tuple[RealShape, ...]:
    """Every shape of the bank at `path`."""
    with np.load(path) as z:
        index = json.loads(str(z["index"]))
        grid, step = float(z["grid_mm"]), float(z["sdf_step_mm"])
        return tuple(
            RealShape(
                index=i,
                level=e["level"],
                person=e["person"],
                source=e["source"],
                sdf=z[f"sdf_{i}"],
                origin_mm=z[f"origin_{i}"].astype(np.float64),
                grid_mm=grid,
                step_mm=step,
                measures={
                    k: e[k] for k in ("width", "depth", "height_anterior", "height_posterior")
                },
                R_source=np.array(e["R"]),
                centre_source=np.array(e["centre"]),
            )
            for i, e in enumerate(index)
        )


def choose(level: str, split: str, rng: np.random.Generator, bank: tuple[RealShape, ...]):
    """A shape of `split` for `level`: of that level where the split has one, else of the
    nearest level that it has (the upper one on a tie)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    mine = [s for s in bank if s.split == split]
    target = LUMBAR.index(level)
    gap = min(abs(LUMBAR.index(s.level) - target) for s in mine)
    near = [s for s in mine if abs(LUMBAR.index(s.level) - target) == gap]
    if gap:
        near = [s for s in near if LUMBAR.index(s.level) == target - gap] or near
    return near[rng.integers(len(near))]


@dataclass(frozen=True)
class SmoothField:
    """A smooth random displacement field (mm) in a vertebra's local frame: random Fourier
    features of a Gaussian process with a squared-exponential kernel."""

    omega: np.ndarray  # (K, 3) rad/mm
    phase: np.ndarray  # (K,)
    amplitude: np.ndarray  # (K, 3) mm

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """Displacement (*, 3) at local points (*, 3), in float32 (the generator's hot spot:
        torch's vectorised cosine is about 10× numpy's float64 one on a million points)."""
        f32 = functools.partial(torch.as_tensor, dtype=torch.float32)
        phase = torch.addmm(f32(self.phase), f32(q.reshape(-1, 3)), f32(self.omega.T))
        out = torch.cos(phase) @ f32(self.amplitude)
        return out.numpy().reshape(q.shape)


def draw_field(
    rng: np.random.Generator, sd_mm: float, length_mm: float, terms: int = 32
) -> SmoothField:
    """A field whose components have SD `sd_mm` and correlate over about `length_mm`."""
    return SmoothField(
        omega=rng.standard_normal((terms, 3)) / length_mm,
        phase=rng.uniform(0.0, 2 * np.pi, terms),
        amplitude=rng.standard_normal((terms, 3)) * sd_mm * np.sqrt(2.0 / terms),
    )


@dataclass(frozen=True)
class FittedShape:
    """A bank shape as one patient's level: per-axis scale, then a smooth deformation."""

    shape: RealShape
    scale: np.ndarray  # (3,) along the local x, y, z
    field: SmoothField | None

    def sdf(self, q: np.ndarray) -> np.ndarray:
        """Signed distance (*,) in mm (approximate: scaled by the smallest axis scale)."""
        if self.field is not None:
            q = q - self.field(q)  # small and smooth: the inverse warp, to first order
        return self.shape.distance((q / self.scale).astype(np.float32)) * float(self.scale.min())

    def box(self, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """(half extent, centre offset) (3,) of a local box holding the fitted vertebra."""
        lo, hi = self.shape.lo_mm * self.scale, self.shape.hi_mm * self.scale
        return (hi - lo) / 2 + margin_mm, (hi + lo) / 2


def fit(
    level: LevelShape,
    shape: RealShape,
    limits: tuple[float, float],
    field: SmoothField | None = None,
) -> tuple[FittedShape, LevelShape]:
    """Scale `shape` per axis towards `level`'s body width, depth and height, each within
    `limits`; returns it and `level` with the body measures the scaled shape really has (the
    chain then stacks the real endplates, and the discs fill the real gaps)."""
    m = shape.measures
    height = 0.5 * (m["height_anterior"] + m["height_posterior"])
    target = np.array([level.width / m["width"], level.depth / m["depth"], level.height / height])
    scale = np.clip(target, *limits)
    fitted = replace(
        level,
        width=m["width"] * scale[0],
        depth=m["depth"] * scale[1],
        height_anterior=m["height_anterior"] * scale[2],
        height_posterior=m["height_posterior"] * scale[2],
    )
    return FittedShape(shape, scale, field), fitted


def fit_levels(
    levels: list[LevelShape],
    rng: np.random.Generator,
    split: str,
    limits: tuple[float, float],
    deform_sd_mm: float,
    deform_length_mm: float,
) -> tuple[list[LevelShape], dict[str, FittedShape]]:
    """A real shape of `split` for each level, fitted to it (`fit`), deformed unless
    `deform_sd_mm` is 0: the levels with the fitted body measures, and {name: FittedShape}."""
    bank = load_bank()
    out, fitted = [], {}
    for s in levels:
        shape = choose(s.name, split, rng, bank)
        field = draw_field(rng, deform_sd_mm, deform_length_mm) if deform_sd_mm > 0 else None
        fitted[s.name], level = fit(s, shape, limits, field)
        out.append(level)
    return out, fitted
