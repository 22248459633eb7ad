"""Can the coarse stage tell the patient's axes from the shots? (issue #23 item 5, a probe)

    .venv/bin/python bench/orientation_probe.py [--weights default] [--cases 16 8]

For each validation case (3 views), the shots are turned into 16 candidate frames: the
normal of the plane the viewing directions span (about which a C-arm turns), either way up,
and turned by 0°, 45°, … 315° about it (0° keeps x nearest the poses' own x, so candidate
(+1, 0°) is the patient's frame up to the view plane's tilt). The coarse stage runs in each;
a frame is chosen by the largest total mass of the levels' chained blobs (`levels.chain`) or
by the mean top probability over the foreground. Writes bench/results/orientation_probe.json
and .md: how often each choice is the patient's frame.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from x23d_ros import geometry, levels
from x23d_ros.anatomy import LEVELS
from x23d_ros.data.dataset import ShotDataset
from x23d_ros.pipeline import LEVEL_NAMES, Reconstructor, shot_set_from_case

RESULTS = Path(__file__).parent / "results"
SETS = ("data/val/p2_level", "data/val/rs_val")


def coarse_scores(rec: Reconstructor, views) -> tuple[float, int, float]:
    """(chained blob mass, levels chained, mean top probability over the foreground)."""
    batch = rec.coarse_batch(views)
    logits = rec.coarse(batch["images"], batch["P"], batch["points"])
    prob = logits.float().softmax(1)[0].cpu().numpy()
    labels, points = prob.argmax(0), batch["points"][0].cpu().numpy()
    min_voxels = rec.coarse_cfg.get("min_voxels", 8)
    candidates = {
        n: levels.blobs(labels, prob[i], points, i, min_voxels, "centroid")
        for n, i in LEVELS.items()
    }
    chained = levels.chain(candidates, LEVEL_NAMES)
    mass = sum(
        next(b.mass for b in candidates[n] if np.allclose(b.point, p)) for n, p in chained.items()
    )
    foreground = prob[1:].sum(0) > 0.5
    confidence = float(prob.max(0)[foreground].mean()) if foreground.any() else 0.0
    return mass, len(chained), confidence


def candidate_frames(directions: np.ndarray) -> list[tuple[tuple[int, int], np.ndarray]]:
    normal = np.linalg.svd(directions)[2][-1]
    normal = normal if normal[2] > 0 else -normal
    e = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    e /= np.linalg.norm(e)
    out = []
    for sign in (1, -1):
        z = sign * normal
        for k in range(8):
            theta = np.radians(45.0 * k)
            x = np.cos(theta) * e + np.sin(theta) * np.cross(z, e)
            out.append(((sign, 45 * k), np.stack([x, np.cross(z, x), z], 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--cases", type=int, nargs=2, default=[16, 8])
    args = parser.parse_args()
    rec = Reconstructor(args.weights)
    rows = []
    for folder, count in zip(SETS, args.cases, strict=True):
        dataset = ShotDataset(Path(folder))
        for i in range(min(count, len(dataset))):
            shot_set = shot_set_from_case(dataset[i], [0, 1, 2])
            directions = np.stack(
                [geometry.principal_ray(s.T_ref_source)[1] for s in shot_set.shots]
            )
            scored = []
            for key, C in candidate_frames(directions):
                to_c = np.eye(4)
                to_c[:3, :3] = C.T
                shots = [
                    replace(s, T_ref_source=to_c @ np.asarray(s.T_ref_source, float))
                    for s in shot_set.shots
                ]
                with torch.inference_mode():
                    scored.append(
                        (key, coarse_scores(rec, rec.prepare(replace(shot_set, shots=shots))))
                    )
            by_mass = max(scored, key=lambda r: r[1][0])[0]
            by_confidence = max(scored, key=lambda r: r[1][2])[0]
            levels_found = [r[1][1] for r in scored]
            rows.append(
                {
                    "set": folder,
                    "case": i,
                    "by_mass": list(by_mass),
                    "by_confidence": list(by_confidence),
                    "levels_in_true_frame": scored[0][1][1],
                    "median_levels_in_other_frames": float(np.median(levels_found[1:])),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    right = (1, 0)
    summary = {
        "weights_sha256": rec.weights_sha256,
        "cases": len(rows),
        "true_frame_by_mass": sum(tuple(r["by_mass"]) == right for r in rows),
        "true_frame_by_confidence": sum(tuple(r["by_confidence"]) == right for r in rows),
        "chance": len(rows) / 16,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orientation_probe.json").write_text(json.dumps(summary, indent=1))
    (RESULTS / "orientation_probe.md").write_text(
        "# Can the coarse stage tell the patient's axes? (16 candidate frames a case)\n\n"
        f"Weights `{rec.weights_sha256[:16]}…`, {len(rows)} validation cases, 3 views.\n\n"
        "| choice | the patient's frame chosen |\n|---|---:|\n"
        f"| largest chained blob mass | {summary['true_frame_by_mass']} of {len(rows)} |\n"
        f"| largest mean top probability | {summary['true_frame_by_confidence']} of {len(rows)} |\n"
        f"| chance | {summary['chance']:.1f} of {len(rows)} |\n"
    )
    print((RESULTS / "orientation_probe.md").read_text())


if __name__ == "__main__":
    main()
