"""The shard format: one HDF5 file per shard, one group per case.

    /<case>/                     attrs: seed, source, generator, x23d_ros version, image_size
        labels        (I, J, K) uint8, gzip; attrs: affine (4, 4) voxel → mm (LPS), levels
        centres_mm    (5, 3) float64, L1..L5 label centroids (NaN where a level is missing)
        synthetic     (V, H, W) float16: bone-only line integrals μ·L (the X23D domain)
        realistic     (V, H, W) uint8: fluoroscopy display values × 255 (absent from a
                      synthetic-only run: `x23d simulate --synthetic-only`)
        K             (V, 3, 3) float64, pixels
        T_ref_source  (V, 4, 4) float64, mm
        view_kinds    (V,) str; effects (V,) JSON str; instruments JSON str (group attr)

Real paired data (a C-arm's shots, their poses, and CT labels of the same anatomy) goes in
the same layout through `write_case`: put the real shots in `realistic` (scaled to 0..255)
and DRRs of the CT from the same poses in `synthetic`. Times are not tracked, so the same
data gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from x23d_ros import __version__
from x23d_ros.anatomy import LEVELS

FORMAT_VERSION = 1


@dataclass
class Case:
    """One case of a shard, in memory."""

    name: str
    labels: np.ndarray
    affine: np.ndarray
    centres_mm: np.ndarray
    synthetic: np.ndarray
    realistic: np.ndarray | None
    K: np.ndarray
    T_ref_source: np.ndarray
    view_kinds: list[str]
    attrs: dict


def write_case(
    h5: h5py.File, case: Case, effects: list[dict] | None = None, instruments: list | None = None
) -> None:
    """Add `case` as a group of the open shard `h5`."""
    g = h5.create_group(case.name, track_order=True)
    for key, value in sorted(case.attrs.items()):
        g.attrs[key] = value
    g.attrs["format_version"] = FORMAT_VERSION
    g.attrs["x23d_ros_version"] = __version__
    g.attrs["instruments"] = json.dumps(instruments or [])

    def put(name: str, data: np.ndarray, **kw) -> h5py.Dataset:
        return g.create_dataset(name, data=data, track_times=False, **kw)

    labels = put(
        "labels", case.labels.astype(np.uint8), compression="gzip", compression_opts=4, chunks=True
    )
    labels.attrs["affine"] = case.affine
    labels.attrs["levels"] = json.dumps(LEVELS)
    put("centres_mm", case.centres_mm.astype(np.float64))
    put("synthetic", case.synthetic.astype(np.float16), compression="gzip", chunks=True)
    if case.realistic is not None:
        put("realistic", case.realistic.astype(np.uint8), compression="gzip", chunks=True)
    put("K", case.K.astype(np.float64))
    put("T_ref_source", case.T_ref_source.astype(np.float64))
    put("view_kinds", np.array(case.view_kinds, dtype=h5py.string_dtype()))
    put(
        "effects",
        np.array(
            [json.dumps(e) for e in (effects or [{}] * len(case.view_kinds))],
            dtype=h5py.string_dtype(),
        ),
    )


def open_shard_for_writing(path: Path) -> h5py.File:
    """A new shard file whose bytes depend only on what is written into it."""
    return h5py.File(path, "w", libver=("earliest", "v110"), track_order=True)


def read_case(h5: h5py.File, name: str) -> Case:
    g = h5[name]
    return Case(
        name=name,
        labels=g["labels"][()],
        affine=g["labels"].attrs["affine"],
        centres_mm=g["centres_mm"][()],
        synthetic=g["synthetic"][()].astype(np.float32),
        realistic=g["realistic"][()].astype(np.float32) / 255.0 if "realistic" in g else None,
        K=g["K"][()],
        T_ref_source=g["T_ref_source"][()],
        view_kinds=[k.decode() if isinstance(k, bytes) else k for k in g["view_kinds"][()]],
        attrs=dict(g.attrs),
    )


def centres_array(centres: dict[str, np.ndarray]) -> np.ndarray:
    """(5, 3) L1..L5 centres, NaN rows for missing levels."""
    out = np.full((len(LEVELS), 3), np.nan)
    for i, name in enumerate(LEVELS):
        if name in centres:
            out[i] = centres[name]
    return out


def crop_labels(
    labels: np.ndarray, affine: np.ndarray, margin_vox: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The label volume cropped to its labelled box plus a margin, with the matching affine."""
    idx = np.argwhere(labels > 0)
    if idx.size == 0:
        return labels, affine
    lo = np.maximum(idx.min(0) - margin_vox, 0)
    hi = np.minimum(idx.max(0) + margin_vox + 1, labels.shape)
    cropped = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return np.ascontiguousarray(cropped), shifted


def list_cases(root: Path) -> list[tuple[Path, str]]:
    """(shard path, case name) of every case under `root`, in a stable order."""
    out = []
    for path in sorted(Path(root).glob("*.h5")):
        with h5py.File(path, "r") as h5:
            out.extend((path, name) for name in h5)
    return out
