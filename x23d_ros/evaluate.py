"""`x23d evaluate`: how well weights reconstruct held-out cases or a real CT.

Each case's shots go through `Reconstructor` exactly as in the product. Every reconstructed
level is scored against the ground truth on the ground truth's own voxel grid: its occupancy
probability is resampled there (trilinear), thresholded at ½ and reduced to its largest part
(as its mesh is), then `metrics.vertebra_metrics` applies. A level of the ground truth that
the reconstruction lacks scores F1 = 0 and counts as missed; a case whose shots the
Reconstructor refuses (e.g. all nearly parallel) counts as `refused`, every level missed.

    x23d evaluate --weights default --data DIR --json OUT [--views 3] [--figures DIR]
    x23d evaluate --weights default --ct CT --labels LBL --views 3 --seed 0 \\
        --domain synthetic --json OUT

The second form renders the CT through the data engine (`x23d simulate --source ct`) from
seeded C-arm poses first. `--placement truth` puts the fine grids on the true boxes instead of
where the coarse stage says: it scores the fine stage alone (a diagnostic, not the product).
A Markdown table is written next to the JSON (same name, `.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from x23d_ros.anatomy import LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.metrics import REPORTED, summarise, vertebra_metrics, wrong_level
from x23d_ros.pipeline import Reconstruction, Reconstructor, ShotSetError, shot_set_from_case
from x23d_ros.surface import box_centre, largest_component, mask_surface_mm

log = logging.getLogger(__name__)
#: Where `evaluate_folder` puts the fine grids: the coarse stage's answer (the product) or the
#: true boxes (the fine stage alone).
GRID_SOURCES = ("coarse", "truth")


def predicted_mask(
    recon: Reconstruction, level: str, affine: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """The level's reconstruction on the grid (`affine`, `shape`); all False when missing."""
    out = np.zeros(shape, bool)
    vertebra = recon.vertebrae.get(level)
    if vertebra is None:
        return out
    # The fine grid's box in the target grid's indices, so only that part is resampled.
    si, sj, sk = (n - 1 for n in vertebra.probability.shape)
    corners = np.array([[i, j, k] for i in (0, si) for j in (0, sj) for k in (0, sk)], float)
    corners_mm = corners @ vertebra.affine[:3, :3].T + vertebra.affine[:3, 3]
    inverse = np.linalg.inv(affine)
    ijk = corners_mm @ inverse[:3, :3].T + inverse[:3, 3]
    lo = np.clip(np.floor(ijk.min(0)).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, shape)
    if (hi <= lo).any():
        return out
    idx = np.stack(
        np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1
    )
    mm = idx.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    to_fine = np.linalg.inv(vertebra.affine)
    fine = mm @ to_fine[:3, :3].T + to_fine[:3, 3]
    p = ndimage.map_coordinates(vertebra.probability, fine.T, order=1, mode="constant", cval=0.0)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = (p >= 0.5).reshape(idx.shape[:3])
    return largest_component(out) if out.any() else out


def score(
    recon: Reconstruction, labels: np.ndarray, affine: np.ndarray
) -> dict[str, dict[str, float]]:
    """`vertebra_metrics` and `wrong_level` per level of the ground truth `labels` (grid
    `affine`)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out = {}
    for name, idx in LEVELS.items():
        gt = labels == idx
        if gt.any():
            pred = predicted_mask(recon, name, affine, labels.shape)
            out[name] = vertebra_metrics(pred, gt, spacing)
            out[name]["wrong_level"] = wrong_level(pred, labels, idx)
    return out


def true_centres(labels: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """The box centre (mm) of every level present in `labels`."""
    return {n: box_centre(labels == i, affine) for n, i in LEVELS.items() if (labels == i).any()}


def evaluate_folder(
    reconstructor: Reconstructor,
    data: Path,
    views: list[int],
    domain: str,
    figures: Path | None = None,
    placement: str = "coarse",
) -> dict:
    """`placement`: "coarse" (the product) or "truth" (the fine grids on the true boxes, to
    score the fine stage alone)."""
    if placement not in GRID_SOURCES:
        raise ValueError(f"placement must be coarse or truth, not {placement!r}")
    dataset = ShotDataset(data, domain)
    per_case, timings, refused = [], [], 0
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="case"):
        item = dataset[i]
        n = item["images"].shape[0]
        if max(views) >= n:
            raise ValueError(f"case {i} has {n} shots; views {views} asked for")
        labels, affine = item["labels"].numpy(), item["affine"].numpy()
        centres = true_centres(labels, affine) if placement == "truth" else None
        try:
            recon = reconstructor.reconstruct(
                shot_set_from_case(item, views, domain), centres=centres
            )
        except ShotSetError as error:  # e.g. three near-parallel shots: nothing to triangulate
            log.warning("case %d refused: %s", i, error)
            refused += 1
            recon = Reconstruction({}, list(LEVELS), {}, str(reconstructor.device), len(views))
        per_case.append(score(recon, labels, affine))
        if recon.timings_ms:
            timings.append(recon.timings_ms)
        if figures is not None:
            draw_case(recon, labels, affine, Path(figures) / f"case_{i:03d}.png")
    result = summarise(per_case)
    result |= {
        "views": len(views),
        "view_indices": list(views),
        "refused": refused,
        "domain": domain,
        "placement": placement,
        "weights_sha256": reconstructor.weights_sha256,
        "device": str(reconstructor.device),
        "timings_ms": {
            k: float(np.median([t[k] for t in timings])) for k in (timings[0] if timings else {})
        },
    }
    return result


def markdown(result: dict, title: str) -> str:
    cols = (*REPORTED, "missed")
    lines = [
        f"# {title}",
        "",
        f"{result['cases']} cases, {result['views']} views (indices {result['view_indices']}), "
        f"{result['domain']} domain, fine grids placed by "
        f"{'the true boxes' if result.get('placement') == 'truth' else 'the coarse stage'}, "
        f"device {result['device']}; median timings (ms): "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["timings_ms"].items()),
        "",
        "| level | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    rows = [*result["per_level"].items(), ("mean", result["mean"])]
    for name, row in rows:
        cells = [f"{row[c]:.3f}" if c != "missed" else str(row[c]) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_case(recon: Reconstruction, labels: np.ndarray, affine: np.ndarray, png: Path) -> None:
    """Ground-truth surface (grey) and the predicted surface coloured by its distance to the
    ground truth, seen from the front (x–z) and the side (y–z)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.spatial import cKDTree

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 6))
    scatter = None
    for name, idx in LEVELS.items():
        gt = labels == idx
        if not gt.any():
            continue
        gt_mm = mask_surface_mm(gt, affine)
        tree = cKDTree(gt_mm)
        for ax, (a, b) in zip(axes, ((0, 2), (1, 2)), strict=True):
            ax.scatter(gt_mm[::3, a], gt_mm[::3, b], s=0.3, c="0.8")
        vertebra = recon.vertebrae.get(name)
        if vertebra is None:
            continue
        distance = tree.query(vertebra.vertices)[0]
        for ax, (a, b) in zip(axes, ((0, 2), (1, 2)), strict=True):
            scatter = ax.scatter(
                vertebra.vertices[::2, a],
                vertebra.vertices[::2, b],
                s=0.5,
                c=distance[::2],
                cmap="inferno_r",
                vmin=0,
                vmax=5,
            )
    for ax, title in zip(axes, ("front (x, z)", "side (y, z)"), strict=True):
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("mm")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, label="distance to ground truth (mm)", shrink=0.7)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="default", help="weights file, or `default`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder of shards to evaluate on")
    source.add_argument("--ct", type=Path, help="CT NIfTI to render and evaluate on")
    parser.add_argument("--labels", type=Path, help="labels of --ct (NIfTI or vertebrae folder)")
    parser.add_argument("--views", type=int, default=3, help="shots per reconstruction")
    parser.add_argument(
        "--view-indices", help="which shots of each case, e.g. 0,1,2 (default: the first --views)"
    )
    parser.add_argument("--seed", type=int, default=0, help="pose seed (with --ct)")
    parser.add_argument("--cases", type=int, default=4, help="pose draws of the CT (with --ct)")
    parser.add_argument("--configuration", default="random", help="view configuration (--ct)")
    parser.add_argument("--domain", choices=("synthetic", "realistic"), default="synthetic")
    parser.add_argument(
        "--style",
        default="default",
        help="realistic domain with synthetic weights: the style transfer (default: the "
        "shipped one; a file; none: fluoroscopy refused, every case scored as missed)",
    )
    parser.add_argument(
        "--orientation",
        default="none",
        help="what reads the patient's axes from the shots (none, the product's default: the "
        "data's frame taken as the patient's axes; default: the shipped network; a file)",
    )
    parser.add_argument("--json", type=Path, required=True, help="where to write the result")
    parser.add_argument("--figures", type=Path, help="folder for one PNG per case")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--placement",
        choices=GRID_SOURCES,
        default="coarse",
        help="where the fine grids go: the coarse stage's answer (the product) or the true "
        "boxes (scores the fine stage alone)",
    )


def run(args: argparse.Namespace) -> int:
    views = (
        [int(v) for v in args.view_indices.split(",")]
        if args.view_indices
        else list(range(args.views))
    )
    style = None if args.style == "none" else args.style
    reconstructor = Reconstructor(
        args.weights,
        device=args.device,
        style=style,
        orientation=None if args.orientation == "none" else args.orientation,
    )
    if args.ct is not None:
        if args.labels is None:
            raise SystemExit("--ct needs --labels")
        from x23d_ros.data.simulate import SimulateConfig, simulate

        with tempfile.TemporaryDirectory() as tmp:
            simulate(
                SimulateConfig(
                    out=Path(tmp),
                    cases=args.cases,
                    views=max(views) + 1,
                    seed=args.seed,
                    image_size=reconstructor.image_size,
                    source="ct",
                    ct=args.ct,
                    labels=args.labels,
                    configuration=args.configuration,
                )
            )
            result = evaluate_folder(
                reconstructor, Path(tmp), views, args.domain, args.figures, args.placement
            )
        result["source"] = {"ct": str(args.ct), "seed": args.seed}
        title = f"x23d evaluate: {args.ct.name}"
    else:
        result = evaluate_folder(
            reconstructor, args.data, views, args.domain, args.figures, args.placement
        )
        result["source"] = {"data": str(args.data)}
        title = f"x23d evaluate: {args.data}"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    args.json.with_suffix(".md").write_text(markdown(result, title))
    mean = result["mean"]
    print(", ".join(f"{m} {mean[m]:.3f}" for m in REPORTED) + f", missed {mean['missed']}")
    return 0
