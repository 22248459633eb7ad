"""Surfaces, sampled points and anatomical frames from occupancy probabilities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from x23d_ros import surface
from x23d_ros.anatomy import LEVELS
from x23d_ros.anatomy.procedural import generate

SPACING = 1.5


def _grid(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Voxel centres (n, n, n, 3) mm of a grid centred at the origin, and its affine."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -SPACING * (n - 1) / 2
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    return idx * SPACING + affine[:3, 3], affine


def _soft_ball(points: np.ndarray, centre, radius: float) -> np.ndarray:
    """A probability falling from 1 to 0 across the ball's surface over ~2 mm."""
    r = np.linalg.norm(points - np.asarray(centre, float), axis=-1)
    return 1.0 / (1.0 + np.exp((r - radius) / 0.5))


def test_the_mesh_of_a_ball_lies_on_its_sphere_and_drops_a_stray_island():
    points, affine = _grid()
    prob = np.maximum(_soft_ball(points, [0, 0, 0], 18.0), _soft_ball(points, [22, 22, 22], 4.0))
    vertices, faces = surface.mesh_from_probability(prob, affine)
    radius = np.linalg.norm(vertices, axis=1)
    assert np.abs(radius - 18.0).max() < 0.6  # sub-voxel (1.5 mm voxels), after smoothing
    assert faces.max() < len(vertices) and faces.min() >= 0
    # Closed surface: every edge is shared by exactly two triangles.
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()


def test_sampled_points_are_on_the_surface_and_confident_where_the_wall_is_crisp():
    points, affine = _grid()
    crisp = _soft_ball(points, [0, 0, 0], 15.0)
    vertices, faces = surface.mesh_from_probability(crisp, affine)
    rng = np.random.default_rng(0)
    pts, confidence = surface.sample_points(vertices, faces, crisp, affine, 500, rng)
    assert pts.shape == (500, 3) and confidence.shape == (500,)
    assert np.abs(np.linalg.norm(pts, axis=1) - 15.0).max() < 0.8
    # Hesitant: probability never far from ½ (a scaled copy of the same ball).
    hesitant = 0.5 + 0.1 * (crisp - 0.5)
    hesitant_conf = surface.sample_points(vertices, faces, hesitant, affine, 500, rng)[1]
    assert confidence.min() >= 0 and confidence.max() <= 1
    assert confidence.mean() > 0.6
    assert hesitant_conf.mean() < 0.2 * confidence.mean()


def test_an_empty_probability_has_no_surface():
    _, affine = _grid(8)
    with pytest.raises(surface.SurfaceError, match="½"):
        surface.mesh_from_probability(np.zeros((8, 8, 8)), affine)


def test_frames_of_a_procedural_spine_follow_its_anatomy():
    """The generator builds spines in LPS: x left, y posterior, z superior. Frames computed
    from the label masks (superior from the neighbouring centres) must agree."""
    anatomy = generate(3, spacing_mm=2.0)
    centres = anatomy.centres_mm()
    names = list(LEVELS)
    for i, (name, idx) in enumerate(LEVELS.items()):
        mask = anatomy.labels == idx
        up = centres[names[max(i - 1, 0)]] - centres[names[min(i + 1, 4)]]
        T = surface.anatomical_frame(mask, anatomy.affine, up)
        R = T[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        angles = np.degrees(np.arccos(np.clip(np.diag(R), -1, 1)))  # x·L, y·P, z·S
        assert (angles < 25).all(), (name, angles)
        # The body is anterior to the centroid (the arch pulls the centroid back).
        centroid = np.argwhere(mask).mean(0) @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]
        assert (centroid - T[:3, 3]) @ R[:, 1] > 8.0, name


def test_written_ply_and_stl_meshes_read_back_in_open3d(tmp_path):
    import open3d as o3d

    points, affine = _grid(24)
    vertices, faces = surface.mesh_from_probability(_soft_ball(points, [1, 2, 3], 9.0), affine)
    surface.write_mesh(tmp_path / "ball.ply", vertices, faces)
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "ball.ply"))
    np.testing.assert_allclose(np.asarray(mesh.vertices), vertices, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mesh.triangles), faces)
    assert mesh.is_watertight()
    surface.write_mesh(tmp_path / "ball.stl", vertices, faces)
    assert (tmp_path / "ball.stl").stat().st_size == 84 + 50 * len(faces)  # binary STL
    stl = o3d.io.read_triangle_mesh(str(tmp_path / "ball.stl"))
    assert len(stl.triangles) == len(faces)
    # STL repeats each triangle's corners: the same triangles, as coordinates.
    corners = np.asarray(stl.vertices)[np.asarray(stl.triangles)]
    np.testing.assert_allclose(
        np.sort(corners.reshape(-1, 3), 0), np.sort(vertices[faces].reshape(-1, 3), 0), atol=1e-4
    )


def _inside_depth(v: np.ndarray, f: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How deep (mm) each point lies inside the mesh (negative: outside)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    return -scene.compute_signed_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def test_a_collision_mesh_is_decimated_to_its_budget_and_encloses_the_surface_by_the_padding():
    """#23: the planner's mesh holds at most `max_triangles` and lies outside the reconstructed
    surface everywhere by at least `padding_mm` (less a quarter millimetre; the unsafe
    direction is inwards), and not much more; padding 0 and no budget leave the surface as it
    is."""
    points, affine = _grid(48)
    vertices, faces = surface.mesh_from_probability(_soft_ball(points, [1, 2, 3], 14.0), affine)
    assert len(faces) > 3000
    same = surface.collision_mesh(vertices, faces, padding_mm=0.0, max_triangles=0)
    np.testing.assert_array_equal(same[0], vertices)
    np.testing.assert_array_equal(np.sort(same[1], 1), np.sort(faces, 1))  # wound outwards
    v, f = surface.collision_mesh(vertices, faces, padding_mm=0.0, max_triangles=800)
    assert 0 < len(f) <= 800
    depth = _inside_depth(v, f, vertices)
    assert depth.min() > -0.3 and depth.max() < 0.3  # decimated only
    warnings.simplefilter("error", surface.CollisionFallbackWarning)  # the level set, no hull
    for padding in (1.0, 2.0):
        v, f = surface.collision_mesh(vertices, faces, padding_mm=padding, max_triangles=800)
        assert 0 < len(f) <= 800
        depth = _inside_depth(v, f, vertices)
        assert depth.min() > padding - 0.3, (padding, depth.min())
        assert np.median(depth) < padding + 2.0, (padding, np.median(depth))


def _soft_box(points: np.ndarray, lo, hi) -> np.ndarray:
    """A probability falling from 1 to 0 across the box's surface over ~2 mm."""
    outside = np.max(np.maximum(np.asarray(lo) - points, points - np.asarray(hi)), axis=-1)
    return 1.0 / (1.0 + np.exp(outside / 0.5))


def test_the_padding_holds_in_concave_places_where_moving_along_normals_folds():
    """A U with a 2 mm slit (a lamina beside a spinous process is as close): growing the
    surface by moving its vertices 2 mm along their normals crosses the slit's walls, folds,
    and left the slit's floor 0.1 mm outside (the implementation before); the collision mesh
    is a level set of the distance field, checked, so every surface point lies inside it by
    the padding."""
    points, affine = _grid(56)
    prob = np.maximum.reduce(
        [
            _soft_box(points, [-15, -15, -10], [-1, 15, 10]),
            _soft_box(points, [1, -15, -10], [15, 15, 10]),
            _soft_box(points, [-15, -15, -16], [15, 15, -10]),
        ]
    )
    vertices, faces = surface.mesh_from_probability(prob, affine)
    warnings.simplefilter("error", surface.CollisionFallbackWarning)  # the level set, no hull
    v, f = surface.collision_mesh(vertices, faces, padding_mm=2.0, max_triangles=1500)
    assert 0 < len(f) <= 1500
    depth = _inside_depth(v, f, vertices)
    assert depth.min() > 2.0 - 0.3, depth.min()
    assert np.median(depth) < 4.0


def test_the_last_resorts_hold_the_padding_within_the_budget():
    """When the level set fails its check: the padded convex hull (decimated to the budget,
    then grown by what the decimation cut) and, when nothing can be made, the padded box
    both hold every surface point by at least the padding."""
    points, affine = _grid(40)
    vertices, faces = surface.mesh_from_probability(
        _soft_box(points, [-12, -9, -6], [12, 9, 6]) * (1 - _soft_ball(points, [0, 0, 9], 7.0)),
        affine,
    )
    faces = surface._wound_outwards(vertices, faces)
    with pytest.warns(surface.CollisionFallbackWarning):
        v, f = surface.padded_hull(vertices, faces, 2.0, max_triangles=60)
    assert 0 < len(f) <= 60
    assert _inside_depth(v, f, vertices).min() > 2.0 - 0.01
    v, f = surface.padded_box(vertices, 2.0)
    assert len(v) == 8 and len(f) == 12
    depth = _inside_depth(v, f, vertices)
    assert depth.min() == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("budget", [0, 200])
def test_the_padded_hull_holds_the_padding_where_normals_tilt(budget):
    """A ball with a thin spike (a spinous process, much simplified): growing the surface along
    its vertex normals leaves the spike's flanks nearer than the padding to the hull (1.66 mm
    of 2 before the hull was checked); the check grows it until every point holds it."""
    points, affine = _grid(40)
    probability = np.maximum(
        _soft_ball(points, [0, 0, 0], 8.0), _soft_box(points, [0, -1, -1], [17, 1, 1])
    )
    vertices, faces = surface.mesh_from_probability(probability, affine)
    faces = surface._wound_outwards(vertices, faces)
    with pytest.warns(surface.CollisionFallbackWarning):
        v, f = surface.padded_hull(vertices, faces, 2.0, max_triangles=budget)
    assert budget == 0 or len(f) <= budget
    depth = _inside_depth(v, f, vertices)
    assert depth.min() >= 2.0 - surface.COLLISION_TOLERANCE_MM, depth.min()
    assert np.median(depth) < 8.0  # a hull, not a balloon


def test_a_hull_that_never_passes_its_check_becomes_the_padded_box(monkeypatch):
    """With no growth attempt left after the first (`COLLISION_ATTEMPTS` 0), the spiked ball's
    hull is grown once and not checked again: it is not returned unchecked but replaced by the
    padded bounding box, which holds the padding by construction."""
    monkeypatch.setattr(surface, "COLLISION_ATTEMPTS", 0)
    points, affine = _grid(40)
    probability = np.maximum(
        _soft_ball(points, [0, 0, 0], 8.0), _soft_box(points, [0, -1, -1], [17, 1, 1])
    )
    vertices, faces = surface.mesh_from_probability(probability, affine)
    faces = surface._wound_outwards(vertices, faces)
    with pytest.warns(surface.CollisionBoxWarning, match="bounding box"):
        v, f = surface.padded_hull(vertices, faces, 2.0)
    assert len(v) == 8 and len(f) == 12
    assert _inside_depth(v, f, vertices).min() >= 2.0 - 1e-6


def test_a_hull_that_passes_its_check_after_one_growth_is_returned():
    """The spiked ball's hull fails its first check (1.66 mm of 2) and passes after one growth
    along rays: with one attempt it is returned as the hull, checked, not the box."""
    import warnings

    points, affine = _grid(40)
    probability = np.maximum(
        _soft_ball(points, [0, 0, 0], 8.0), _soft_box(points, [0, -1, -1], [17, 1, 1])
    )
    vertices, faces = surface.mesh_from_probability(probability, affine)
    faces = surface._wound_outwards(vertices, faces)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(surface, "COLLISION_ATTEMPTS", 1)
            v, f = surface.padded_hull(vertices, faces, 2.0)
    assert not any(issubclass(w.category, surface.CollisionBoxWarning) for w in caught)
    assert len(v) > 8
    assert _inside_depth(v, f, vertices).min() >= 2.0 - surface.COLLISION_TOLERANCE_MM


def test_the_fallback_is_returned_not_warned_for_callers_that_report_it(monkeypatch):
    """`collision_mesh_and_fallback` says which fallback it took without a warning (a thread
    that catches warnings to classify them can swallow another's): none for a ball, the box
    for the spiked ball's hull with no growth left."""
    import warnings

    points, affine = _grid(40)
    ball = _soft_ball(points, [0, 0, 0], 8.0)
    spiked = np.maximum(ball, _soft_box(points, [0, -1, -1], [17, 1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vertices, faces = surface.mesh_from_probability(ball, affine)
        v, f, fallback = surface.collision_mesh_and_fallback(vertices, faces, 2.0, 500)
        assert fallback is None and len(f) <= 500
        monkeypatch.setattr(surface, "COLLISION_ATTEMPTS", 0)
        vertices, faces = surface.mesh_from_probability(spiked, affine)
        faces = surface._wound_outwards(vertices, faces)
        v, f, fallback = surface._padded_hull(vertices, faces, 2.0)
    assert fallback.kind == "box" and "bounding box" in fallback.detail and len(v) == 8


def test_inside_by_scanlines_matches_open3ds_per_point_vote_off_the_surface():
    """The collision mesh's inside (`_inside_on_grid`: one ray per grid line and axis, three
    axes' vote) is open3d's per-point occupancy (3 rays a point) wherever a grid point is not
    on the surface itself, here on a torus (concave: its lines cross the surface 4 times)."""
    import open3d as o3d

    torus = o3d.geometry.TriangleMesh.create_torus(20.0, 6.0, 60, 30)
    v, f = np.asarray(torus.vertices, float), np.asarray(torus.triangles, np.int64)
    scene = surface._scene(v, f)
    lo, grid = v.min(0) - 3.0, 0.7
    shape = [int(n) for n in np.ceil((v.max(0) + 3.0 - lo) / grid) + 1]
    inside = surface._inside_on_grid(scene, lo, shape, grid)
    axes = [lo[a] + grid * np.arange(shape[a]) for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    reference = scene.compute_occupancy(o3d.core.Tensor(points), nsamples=3).numpy() > 0.5
    off_surface = scene.compute_distance(o3d.core.Tensor(points)).numpy() > 0.05
    assert inside.sum() > 10_000 and (~inside).sum() > 10_000
    np.testing.assert_array_equal(inside.ravel()[off_surface], reference[off_surface])
    # The hole of the torus is outside, its tube inside.
    centre = np.round((np.zeros(3) - lo) / grid).astype(int)
    tube = np.round((np.array([20.0, 0.0, 0.0]) - lo) / grid).astype(int)
    assert not inside[tuple(centre)] and inside[tuple(tube)]


@pytest.mark.parametrize("at_the_edge", [False, True])
def test_the_body_centre_is_the_thickest_parts_centre_on_the_whole_grid(at_the_edge):
    """The distance transform runs on the mask's box only: the centre must be the one the
    whole grid gives (a reference computed here on the whole grid), also for a mask that
    touches the grid's side, where no background lies beyond it."""
    from scipy import ndimage

    i, j, k = np.indices((40, 36, 30))
    body = (i - 14) ** 2 + (j - 18) ** 2 + (k - 15) ** 2 <= 8**2  # the thick part
    process = (abs(j - 18) <= 2) & (abs(k - 15) <= 2) & (i >= 14) & (i <= 36)  # a thin rod
    mask = body | process
    if at_the_edge:
        mask = np.roll(mask, -7, axis=0)  # the body now reaches the grid's first slices
        assert mask[0].any()
    affine = np.diag([1.5, 1.2, 2.0, 1.0])
    affine[:3, 3] = [-30.0, 12.0, 5.0]
    depth = ndimage.distance_transform_edt(mask, sampling=[1.5, 1.2, 2.0])
    core = surface.largest_component(depth >= 0.6 * depth.max())
    expected = np.argwhere(core).mean(0) @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(surface.body_centre(mask, affine), expected, atol=1e-9)
    # and it lies in the body, not on the rod
    np.testing.assert_allclose(expected[1:], [18 * 1.2 + 12.0, 15 * 2.0 + 5.0], atol=1.0)


def test_the_distance_field_is_exact_wherever_a_level_set_can_pass():
    """The collision meshes' field (`_DistanceField`) gives open3d's exact distance to the
    triangles at every grid point within the reach plus a grid step (negative inside), and
    more than the reach everywhere else, so every level set up to the reach is the exact
    field's, here on a torus (concave, with a hole the field must see as outside)."""
    import open3d as o3d

    torus = o3d.geometry.TriangleMesh.create_torus(20.0, 6.0, 60, 30)
    v, f = (
        np.asarray(torus.vertices, float),
        surface._wound_outwards(
            np.asarray(torus.vertices, float), np.asarray(torus.triangles, np.int64)
        ),
    )
    reach, grid = 4.5, 3.0
    field = surface._DistanceField(v, f, reach, grid)
    axes = [field.lo[a] + grid * np.arange(n) for a, n in enumerate(field.distance.shape)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    exact = surface._scene(v, f).compute_signed_distance(o3d.core.Tensor(points)).numpy()
    got = field.distance.ravel()
    band = np.abs(exact) <= reach + grid
    assert band.sum() > 1000 and (~band).sum() > 1000
    np.testing.assert_allclose(got[band], exact[band], atol=1e-3)
    assert np.all(np.abs(got[~band]) > reach)
    assert np.all(np.sign(got[~band]) == np.sign(exact[~band]))
    # A level set is the exact field's: its vertices lie at the offset from the torus.
    verts, _ = field.level_set(3.0)
    on = surface._scene(v, f).compute_distance(o3d.core.Tensor(verts.astype(np.float32)))
    assert np.abs(on.numpy() - 3.0).max() < 0.5
    # A thick solid (a ball of 20 mm: the torus's tube is thinner than the reach): its core,
    # farther than the band from the surface, is inside (negative), beyond the reach.
    ball = o3d.geometry.TriangleMesh.create_sphere(20.0, 40)
    bv = np.asarray(ball.vertices, float)
    bf = surface._wound_outwards(bv, np.asarray(ball.triangles, np.int64))
    field = surface._DistanceField(bv, bf, reach, grid)
    axes = [field.lo[a] + grid * np.arange(n) for a, n in enumerate(field.distance.shape)]
    radius = np.linalg.norm(np.stack(np.meshgrid(*axes, indexing="ij"), -1), axis=-1)
    core = radius < 20.0 - reach - grid - 2.0  # 2 mm: the sphere's chords
    assert core.sum() > 50 and np.all(field.distance[core] < -reach)
