"""Both renderers against analytic answers, and against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from x23d_ros import geometry as g
from x23d_ros.anatomy import Anatomy
from x23d_ros.xray.instruments import InstrumentParams
from x23d_ros.xray.materials import MU_WATER_PER_MM
from x23d_ros.xray.raycast import line_integrals
from x23d_ros.xray.realistic import RealisticParams
from x23d_ros.xray.render import RenderParams, SyntheticParams, cast, render_shots

SPACING = 0.5
UP = np.array([0.0, 0.0, 1.0])


def _phantom(
    radius_mm: float, centre_mm=(0.0, 0.0, 0.0), background_hu=-1000.0, half_mm=40.0, body_mm=0.0
):
    """A ball of cortical bone (anti-aliased), optionally inside a water cylinder along z."""
    n = int(2 * half_mm / SPACING) + 1
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -half_mm
    axis = -half_mm + SPACING * np.arange(n)
    X, Y, Z = np.meshgrid(axis, axis, axis, indexing="ij")
    dist = np.sqrt((X - centre_mm[0]) ** 2 + (Y - centre_mm[1]) ** 2 + (Z - centre_mm[2]) ** 2)
    ball = np.clip(0.5 - (dist - radius_mm) / SPACING, 0.0, 1.0)
    hu = np.full(X.shape, background_hu, np.float32)
    if body_mm:
        hu[np.hypot(X, Y) <= body_mm] = 0.0
    hu = (ball * 1000.0 + (1 - ball) * hu).astype(np.float32)
    labels = (dist <= radius_mm).astype(np.uint8)
    return Anatomy(hu=hu, labels=labels, affine=affine, source="phantom")


def _ap_camera(size=96, pixel_mm=0.6):
    T = g.look_at(np.array([0.0, -600.0, 0.0]), np.zeros(3), UP)
    return g.intrinsics(1000.0, pixel_mm, size, size), T


def test_synthetic_drr_matches_the_analytic_line_integral_through_a_sphere():
    radius = 20.0
    anatomy = _phantom(radius)
    K, T = _ap_camera()
    # A threshold below the background makes μ linear in the ball's anti-aliased occupancy,
    # so the integral, not the (deliberate) clipping of partial-volume edges, is tested.
    params = RenderParams(step_mm=0.25, synthetic=SyntheticParams(bone_threshold_hu=-999.0))
    synthetic, _ = cast(anatomy, None, None, K, T[None], 96, params)
    image = synthetic[0].numpy()
    # Each pixel's ray: distance of its line from the sphere's centre (the origin).
    v, u = np.mgrid[0:96, 0:96]
    rays = g.pixel_rays(K, np.stack([u, v], -1).astype(float)) @ T[:3, :3].T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    source = T[:3, 3]
    d = np.linalg.norm(np.cross(rays, -source), axis=-1)
    inside = d < 0.9 * radius
    mu = MU_WATER_PER_MM * (1.0 + 1000.0 / 1000.0)  # cortical ball at 1000 HU
    expected = 2.0 * np.sqrt(radius**2 - d[inside] ** 2) * mu
    assert inside.sum() > 500
    np.testing.assert_allclose(image[inside], expected, rtol=0.01)
    assert np.abs(image[d > 1.1 * radius]).max() == 0.0


def test_each_vertebras_projected_centroid_falls_on_its_footprint_centroid():
    from x23d_ros.anatomy.procedural import generate

    spine = generate(11, spacing_mm=1.5)
    centre = np.mean(list(spine.centres_mm().values()), axis=0)
    size, pixel = 128, 2.4
    for T in (
        g.look_at(centre + np.array([0, -600.0, 0]), centre, UP),
        g.look_at(centre + np.array([600.0, 0, 0]), centre, UP),
    ):
        K = g.intrinsics(1000.0, pixel, size, size)
        P = g.projection_matrix(K, T)
        for name, centroid in spine.centres_mm().items():
            mask = torch.from_numpy((spine.labels == int(name[1])).astype(np.float32))[None]
            drr = line_integrals(mask, spine.affine, K, T, size, size, step_mm=0.75)[0, 0].numpy()
            v, u = np.mgrid[0:size, 0:size]
            footprint = np.array([(u * drr).sum(), (v * drr).sum()]) / drr.sum()
            projected, _ = g.project(P, centroid)
            assert np.linalg.norm(projected - footprint) < 2.0, name


@pytest.fixture(scope="module")
def paired():
    """One shot of a bone bead in a water body, rendered in both domains (no warp, no metal)."""
    anatomy = _phantom(3.0, centre_mm=(2.0, 3.0, -3.0), body_mm=12.0)
    K, T = _ap_camera()
    params = RenderParams(
        realistic=RealisticParams(
            invert_probability=0.0,
            photons_per_mm2=(5000.0, 5000.0),
            intensifier_probability=0.0,  # flat panel, shutters fully open: no collimation
            shutter_margin=(0.0, 0.0),
            # Display filters move no pixel, but edge enhancement lets the body's rim outshine
            # the bead that this test finds by its brightness.
            range_compression=(0.0, 0.0),
            edge_enhancement=(0.0, 0.0),
        ),
        instruments=InstrumentParams(case_probability=0.0),
    )
    rendered = render_shots(
        anatomy, K, T[None], 96, 0.6, np.random.default_rng(3), params, distortion=False
    )
    P = g.projection_matrix(K, T)
    return rendered, g.project(P, np.array([2.0, 3.0, -3.0]))[0]


def _bead_centroid(image: np.ndarray, around: np.ndarray, radius: float = 9.0) -> np.ndarray:
    """Weighted centroid of what stands above the local background within `radius` px."""
    v, u = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    r = np.hypot(u - around[0], v - around[1])
    background = np.median(image[(r > radius - 2) & (r <= radius)])
    w = np.clip(image - background, 0.0, None) * (r <= radius - 2)
    return np.array([(u * w).sum(), (v * w).sum()]) / w.sum()


def test_a_landmark_falls_on_the_same_pixel_in_both_domains(paired):
    rendered, bead_px = paired
    synthetic = _bead_centroid(rendered.synthetic[0], bead_px)
    realistic = _bead_centroid(rendered.realistic[0], bead_px)
    assert np.linalg.norm(synthetic - bead_px) < 0.5
    assert np.linalg.norm(realistic - synthetic) < 1.0


def test_realistic_shows_soft_tissue_and_noise_the_synthetic_lacks(paired):
    rendered, _ = paired
    synthetic, realistic = rendered.synthetic[0], rendered.realistic[0]
    assert synthetic[10:30, 35:45].max() == 0.0  # bone-only: the body is invisible
    # The 12 mm water cylinder covers columns ≈ 28–67 of this AP view; air lies outside.
    body = realistic[10:30, 35:45]
    air = realistic[10:30, 2:12]
    assert body.mean() > air.mean() + 0.05  # soft tissue attenuates in the realistic image
    assert body.std() > 0.002  # quantum noise
