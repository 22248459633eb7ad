"""Per-vertebra crops: the adjusted P projects points onto the crop where their pixels went."""

from __future__ import annotations

import numpy as np
import torch

from x23d_ros import geometry as g
from x23d_ros.model.crops import crop_views

UP = np.array([0.0, 0.0, 1.0])
SIZE = 256


def _setup():
    centre = np.array([4.0, -6.0, 20.0])
    K = g.intrinsics(1000.0, 1.2, SIZE, SIZE)
    poses = [
        g.look_at(centre + 600 * np.array([np.sin(a), -np.cos(a), 0.1]), np.zeros(3), UP)
        for a in (0.0, 1.2)
    ]
    P = torch.tensor(np.stack([g.projection_matrix(K, T) for T in poses]))
    return centre, P


def test_a_blob_lands_in_the_crop_where_the_adjusted_p_projects_it():
    centre, P = _setup()
    point = centre + np.array([7.0, 3.0, -9.0])
    v, u = np.mgrid[0:SIZE, 0:SIZE]
    images = []
    for Pv in P.numpy():
        (pu, pv), _ = g.project(Pv, point)
        images.append(np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 2.0**2)))
    crops, P_crop = crop_views(
        torch.tensor(np.stack(images)), P, torch.tensor(centre), size_mm=60.0, out_px=64
    )
    assert crops.shape == (2, 64, 64)
    for view in range(2):
        (cu, cv), _ = g.project(P_crop[view].numpy(), point)
        crop = crops[view].numpy()
        w = np.clip(crop - 0.2, 0, None)
        vv, uu = np.mgrid[0:64, 0:64]
        peak = np.array([(uu * w).sum(), (vv * w).sum()]) / w.sum()
        assert np.linalg.norm(peak - [cu, cv]) < 0.5


def test_the_crop_spans_size_mm_at_the_centres_depth():
    centre, P = _setup()
    _, P_crop = crop_views(
        torch.zeros(2, SIZE, SIZE, dtype=torch.float64), P, torch.tensor(centre), 60.0, 64
    )
    for view in range(2):
        (u_c, v_c), _ = g.project(P_crop[view].numpy(), centre)
        assert np.allclose([u_c, v_c], [31.5, 31.5], atol=1e-6)  # centred
        # 30 mm to the side at the same depth is the crop's edge: 32 px from its centre.
        axis = P[view].numpy()[2, :3] / np.linalg.norm(P[view].numpy()[2, :3])  # viewing axis
        side = np.cross(axis, UP)
        side /= np.linalg.norm(side)
        (u_e, v_e), _ = g.project(P_crop[view].numpy(), centre + 30.0 * side)
        assert abs(np.hypot(u_e - u_c, v_e - v_c) - 32.0) < 0.05
