"""segment_charts, project_charts, pleated_faces, isolate_faces and tile_charts: charts of one
direction each, counter-clockwise projections with bounded shrink, hand-built fans with known
overlaps, the renumbering of isolated faces, and tiles that split charts only where they fill
their boxes badly. The module runs in torch; these tests drive it with numpy-built meshes."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh
from scipy.sparse.csgraph import connected_components

from pipeline import charts as charts_module
from pipeline.charts import (
    DIRECTIONS,
    SMOOTH_MIN_COS,
    Charts,
    chart_directions,
    isolate_faces,
    pleated_faces,
    project_charts,
    segment_charts,
    tile_charts,
)
from pipeline.generators.inflate import InflateGenerator
from pipeline.mesh import process_mesh
from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage

# Projected area over true area of a face is its cosine to the chart's axis; the module bounds
# it below by SMOOTH_MIN_COS. Slack for float64 rounding only.
COS_SLACK = 1e-9


AXES = DIRECTIONS.numpy()


def segment(positions: np.ndarray, faces: np.ndarray) -> Charts:
    return segment_charts(torch.from_numpy(positions), torch.from_numpy(faces))


def project(positions: np.ndarray, faces: np.ndarray, charts: Charts) -> np.ndarray:
    return project_charts(torch.from_numpy(positions), torch.from_numpy(faces), charts).numpy()


def pleats(corners: np.ndarray, faces: np.ndarray, charts: Charts) -> np.ndarray:
    flagged = pleated_faces(
        torch.from_numpy(corners), torch.from_numpy(faces), charts.chart_of_face
    )
    return flagged.numpy()


def one_chart(count: int) -> Charts:
    zeros = torch.zeros(count, dtype=torch.int64)
    return Charts(zeros, torch.full((count,), 4, dtype=torch.int64), 1)


# --- builders ---------------------------------------------------------------------------------


def bumpy_sphere(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere with seeded radial noise: normals everywhere between the axes."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    rng = np.random.default_rng(seed)
    vertices = sphere.vertices * (1 + 0.08 * rng.standard_normal((len(sphere.vertices), 1)))
    return vertices, np.asarray(sphere.faces, np.int64)


def inflated(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mesh as the atlas receives it: inflate at resolution 64, then the mesh stage."""
    settings = dataclasses.replace(PipelineSettings(device="cpu"), resolution=64, face_budget=3000)
    image = PreparedImage(torch.full((*mask.shape, 3), 0.5), torch.from_numpy(mask), "alpha")
    asset = InflateGenerator(settings, torch.device("cpu")).generate(image, 0)
    mesh = process_mesh(asset, settings)
    return mesh.positions.numpy().astype(np.float64), mesh.faces.numpy()


def ring_mask() -> np.ndarray:
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    rho = np.hypot(xs - 64, ys - 64)
    return ((rho < 51) & (rho > 23)).astype(np.float32)


def l_mask() -> np.ndarray:
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    bar = (xs > 20) & (xs < 48) & (ys > 12) & (ys < 116)
    foot = (xs > 20) & (xs < 110) & (ys > 88) & (ys < 116)
    return (bar | foot).astype(np.float32)


@functools.cache
def meshes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.25))
    return {
        "box": (np.asarray(box.vertices), np.asarray(box.faces, np.int64)),
        "bumpy_sphere": bumpy_sphere(0),
        "inflated_ring": inflated(ring_mask()),
        "inflated_l": inflated(l_mask()),
    }


@pytest.fixture(params=["box", "bumpy_sphere", "inflated_ring", "inflated_l"])
def mesh(request) -> tuple[np.ndarray, np.ndarray]:
    return meshes()[request.param]


def signed_areas(corners: np.ndarray) -> np.ndarray:
    """[F, 3, 2] -> [F] doubled signed area (positive: counter-clockwise)."""
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]


def true_double_areas(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = positions[faces]
    return np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)


def chart_pieces(faces: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """[C] number of edge-connected pieces each chart's faces form."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    key = np.sort(edges, 1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    same = (key[order][1:] == key[order][:-1]).all(1)
    a, b = owner[order][:-1][same], owner[order][1:][same]
    keep = chart[a] == chart[b]
    F = len(faces)
    graph = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(F, F))
    labels = connected_components(graph, directed=False)[1]
    return np.array([len(np.unique(labels[chart == c])) for c in range(chart.max() + 1)])


# --- segment_charts and project_charts ----------------------------------------------------------


def test_charts_are_numbered_densely_and_each_is_one_connected_piece(mesh) -> None:
    positions, faces = mesh
    charts = segment(positions, faces)
    chart = charts.chart_of_face.numpy()
    assert chart.shape == (len(faces),) and chart.dtype == np.int64
    assert np.array_equal(np.unique(chart), np.arange(charts.count))
    assert charts.direction_of_face.numpy().shape == (len(faces),)
    assert (
        charts.direction_of_face.numpy().min() >= 0 and charts.direction_of_face.numpy().max() <= 5
    )
    assert (chart_pieces(faces, chart) == 1).all()


def test_faces_of_a_chart_share_one_axis(mesh) -> None:
    positions, faces = mesh
    charts = segment(positions, faces)
    for c in range(charts.count):
        assert (
            len(np.unique(charts.direction_of_face.numpy()[charts.chart_of_face.numpy() == c])) == 1
        )


def test_every_face_projects_counter_clockwise_with_bounded_shrink(mesh) -> None:
    positions, faces = mesh
    charts = segment(positions, faces)
    corners = project(positions, faces, charts)
    assert corners.shape == (len(faces), 3, 2) and corners.dtype == np.float64
    projected = signed_areas(corners)
    assert (projected > 0).all()
    ratio = projected / true_double_areas(positions, faces)
    assert ratio.min() >= SMOOTH_MIN_COS - COS_SLACK
    assert ratio.max() <= 1 + COS_SLACK


def test_projection_is_rigid_in_the_plane_across_each_charts_direction(mesh) -> None:
    """Each chart is laid flat along chart_directions: corner distances in the projection are
    the 3D distances less their component along the chart's direction."""
    positions, faces = mesh
    charts = segment(positions, faces)
    corners = project(positions, faces, charts)
    direction = chart_directions(
        torch.from_numpy(positions), torch.from_numpy(faces), charts
    ).numpy()[charts.chart_of_face.numpy()]  # [F, 3]
    np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1.0, atol=1e-12)
    p = positions[faces]
    for i, j in ((0, 1), (1, 2), (2, 0)):
        edge = p[:, j] - p[:, i]
        along = (edge * direction).sum(1)
        flat = np.linalg.norm(corners[:, j] - corners[:, i], axis=1)
        np.testing.assert_allclose(flat**2, (edge**2).sum(1) - along**2, atol=1e-12)


def test_a_tilted_flat_side_projects_without_shrink() -> None:
    """A box turned off the axes: each side is one chart laid out along its own normal, so
    projected areas are the true ones (along an axis they would shrink by the tilt's cos)."""
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.25))
    box.apply_transform(trimesh.transformations.rotation_matrix(0.5, [1.0, 1.0, 0.0]))
    positions, faces = np.asarray(box.vertices), np.asarray(box.faces, np.int64)
    charts = segment(positions, faces)
    assert charts.count == 6
    ratio = signed_areas(project(positions, faces, charts)) / true_double_areas(positions, faces)
    np.testing.assert_allclose(ratio, 1.0, atol=1e-12)


def two_faces(tilt_a: float, tilt_b: float, scale_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Two separate triangles, normals in the x-z plane tilted tilt_a and -tilt_b radians off
    +Z; the second scale_b times the size of the first."""
    base = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = []
    for tilt, size in ((tilt_a, 1.0), (-tilt_b, scale_b)):
        turn = trimesh.transformations.rotation_matrix(tilt, [0.0, 1.0, 0.0])[:3, :3]
        out.append(base * size @ turn.T)
    return np.concatenate(out), np.array([[0, 1, 2], [3, 4, 5]])


def test_a_chart_takes_its_mean_normal_unless_a_face_would_fall_outside_the_cone() -> None:
    charts = one_chart(2)  # axis +Z
    positions, faces = two_faces(0.3, 0.3, 0.5)
    direction = chart_directions(torch.from_numpy(positions), torch.from_numpy(faces), charts)
    # Area-weighted mean of the unit normals (areas 1 : 0.25).
    normals = np.array([[np.sin(0.3), 0, np.cos(0.3)], [-np.sin(0.3), 0, np.cos(0.3)]])
    mean = normals[0] + 0.25 * normals[1]
    np.testing.assert_allclose(direction.numpy()[0], mean / np.linalg.norm(mean), atol=1e-12)
    # 1.2 rad (cos 0.36) each side of +Z: the mean leans towards the larger face, leaving the
    # smaller one beyond SMOOTH_MIN_COS of it, so the chart keeps its axis.
    positions, faces = two_faces(1.2, 1.2, 0.5)
    direction = chart_directions(torch.from_numpy(positions), torch.from_numpy(faces), charts)
    np.testing.assert_array_equal(direction.numpy()[0], [0.0, 0.0, 1.0])


def test_a_box_gets_one_chart_per_side_along_its_outward_normal() -> None:
    positions, faces = meshes()["box"]
    charts = segment(positions, faces)
    assert charts.count == 6
    centroids = positions[faces].mean(1)
    # The side a face lies on is the coordinate at its extreme; its chart's axis points out.
    outward = AXES[charts.direction_of_face.numpy()]
    half = np.array([0.5, 0.25, 0.125])
    np.testing.assert_allclose((centroids * outward).sum(1), np.abs(outward) @ half)
    assert len(np.unique(charts.direction_of_face.numpy())) == 6


def test_charts_are_deterministic() -> None:
    positions, faces = meshes()["inflated_ring"]
    first, second = segment(positions, faces), segment(positions.copy(), faces)
    torch.testing.assert_close(first.chart_of_face, second.chart_of_face, rtol=0, atol=0)
    np.testing.assert_array_equal(first.direction_of_face.numpy(), second.direction_of_face.numpy())


def test_a_convex_surface_has_no_pleats() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    positions, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    charts = segment(positions, faces)
    flagged = pleats(project(positions, faces, charts), faces, charts)
    assert flagged.shape == (len(faces),) and flagged.dtype == bool
    assert not flagged.any()


# --- pleated_faces on hand-built fans -----------------------------------------------------------


def fan(wedges_deg: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, Charts]:
    """Faces around vertex 0 at the origin, all in one chart: face n spans the wedge
    (start, end) in degrees, counter-clockwise, with its own two outer vertices (unit radius).
    -> corners [F, 3, 2], faces [F, 3], charts."""
    corners, faces = [], []
    for n, (start, end) in enumerate(wedges_deg):
        a, b = np.radians(start), np.radians(end)
        corners.append([[0.0, 0.0], [np.cos(a), np.sin(a)], [np.cos(b), np.sin(b)]])
        faces.append([0, 2 * n + 1, 2 * n + 2])
    return np.array(corners), np.array(faces), one_chart(len(faces))


def wedge_at_origin(corners: np.ndarray) -> tuple[float, float]:
    """(start, end) angle in radians of a fan face's wedge at vertex 0 (its first corner)."""
    start = np.arctan2(corners[1, 1], corners[1, 0]) % (2 * np.pi)
    span = (np.arctan2(corners[2, 1], corners[2, 0]) - start) % (2 * np.pi)
    return start, start + span


def wedges_overlap(w1: tuple[float, float], w2: tuple[float, float]) -> bool:
    for shift in (-2 * np.pi, 0.0, 2 * np.pi):
        if min(w1[1], w2[1] + shift) - max(w1[0], w2[0] + shift) > 1e-9:
            return True
    return False


def assert_no_kept_overlap(corners: np.ndarray, flagged: np.ndarray) -> None:
    kept = [wedge_at_origin(corners[n]) for n in np.nonzero(~flagged)[0]]
    for m in range(len(kept)):
        for n in range(m + 1, len(kept)):
            assert not wedges_overlap(kept[m], kept[n]), (kept[m], kept[n])


def test_a_fan_whose_wedges_sum_past_a_full_turn_is_flagged() -> None:
    """5 wedges of 100 degrees around one vertex: 500 degrees, so some must overlap."""
    corners, faces, charts = fan([(0, 100), (100, 200), (200, 300), (300, 400), (400, 500)])
    assert (signed_areas(corners) > 0).all()
    flagged = pleats(corners, faces, charts)
    assert 2 <= flagged.sum() <= 3  # two suffice; the sweep may take one more
    assert_no_kept_overlap(corners, flagged)


def test_a_fan_that_folds_back_is_flagged() -> None:
    """Three wedges going round by 80 degrees, and one folded back over the last two."""
    corners, faces, charts = fan([(0, 80), (80, 160), (160, 240), (120, 200)])
    flagged = pleats(corners, faces, charts)
    assert flagged.any() and not flagged[0]
    assert_no_kept_overlap(corners, flagged)


def test_a_wedge_hidden_inside_another_is_flagged() -> None:
    corners, faces, charts = fan([(10, 170), (40, 60)])
    flagged = pleats(corners, faces, charts)
    assert flagged.sum() == 1
    assert_no_kept_overlap(corners, flagged)


def test_wedges_that_only_touch_are_not_flagged() -> None:
    """A closed fan (five 72-degree wedges) and an open one with a gap."""
    closed = [(72 * n, 72 * (n + 1)) for n in range(5)]
    for wedges in (closed, [(0, 90), (90, 135), (200, 300)]):
        corners, faces, charts = fan(wedges)
        assert not pleats(corners, faces, charts).any()


def test_overlapping_wedges_in_different_charts_are_not_flagged() -> None:
    corners, faces, _ = fan([(0, 100), (100, 200), (200, 300), (300, 400), (400, 500)])
    apart = torch.arange(len(faces))
    separate = Charts(apart, torch.full((len(faces),), 4, dtype=torch.int64), len(faces))
    assert not pleats(corners, faces, separate).any()


@pytest.mark.parametrize("n", [1, 7, 1024, 1025, 5000])
@pytest.mark.parametrize("row", [4, 1024])
def test_the_running_max_by_rows_is_cummax(n: int, row: int) -> None:
    """Exact: rows scanned side by side, each raised to the rows before it (ties, negative
    values and the int64 extremes included)."""
    rng = np.random.default_rng(n + row)
    values = torch.from_numpy(rng.integers(-(1 << 62), 1 << 62, n))
    values[rng.integers(0, n, max(1, n // 10))] = torch.iinfo(torch.int64).min
    values[n - 1 - n // 7] = torch.iinfo(torch.int64).max  # late: the rows before it count
    values[::17] = values[0]  # repeated values
    expected = torch.cummax(values, 0).values
    assert torch.equal(charts_module._rows_running_max(values, row), expected)
    assert torch.equal(charts_module._running_max(values), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_pleats_on_cuda_are_the_cpu_ones() -> None:
    """Fans of many wedges (over SCAN_ROW corners, so the row scan runs on CUDA), some folded
    back or going round past a full turn, in several charts: the same flags on both devices."""
    rng = np.random.default_rng(5)
    wedges = []
    for n in range(300):  # every other fan clean; the rest overlap or go round
        start, extra = rng.uniform(0, 360), (0 if n % 2 else 25)
        wedges += [
            (start + 40 * k, start + 40 * (k + 1) + rng.uniform(-5, extra)) for k in range(9)
        ]
    corners, faces, _ = fan(wedges)
    faces[:, 0] = np.arange(len(faces)) // 9  # fan n round vertex n: vertex ids stay distinct
    faces[:, 1:] += 300
    chart = torch.from_numpy(rng.integers(0, 3, len(faces)))
    on_cpu = pleated_faces(torch.from_numpy(corners), torch.from_numpy(faces), chart)
    on_cuda = pleated_faces(
        torch.from_numpy(corners).cuda(), torch.from_numpy(faces).cuda(), chart.cuda()
    )
    assert 3 * len(faces) > charts_module.SCAN_ROW
    assert 0 < int(on_cpu.sum()) < len(faces)
    assert torch.equal(on_cuda.cpu(), on_cpu)


@pytest.mark.parametrize("n", [2, 7, 16])
def test_a_flat_grid_has_no_pleats(n: int) -> None:
    xs, ys = np.meshgrid(np.arange(n + 1.0), np.arange(n + 1.0), indexing="xy")
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, 1:].ravel(), index[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    corners = points[faces]
    assert (signed_areas(corners) > 0).all()
    assert not pleats(corners, faces, one_chart(len(faces))).any()


# --- isolate_faces ------------------------------------------------------------------------------


def test_isolated_faces_get_charts_of_their_own() -> None:
    positions, faces = meshes()["bumpy_sphere"]
    charts = segment(positions, faces)
    rng = np.random.default_rng(2)
    chosen = rng.random(len(faces)) < 0.1
    isolated = isolate_faces(charts, torch.from_numpy(chosen))
    chart = isolated.chart_of_face.numpy()
    assert np.array_equal(np.unique(chart), np.arange(isolated.count))
    assert isolated.count == len(np.unique(charts.chart_of_face.numpy()[~chosen])) + int(
        chosen.sum()
    )
    counts = np.bincount(chart)
    assert (counts[chart[chosen]] == 1).all()
    # The other faces keep their grouping, and every face keeps its axis.
    kept_old, kept_new = charts.chart_of_face.numpy()[~chosen], chart[~chosen]
    pairs = np.unique(np.stack([kept_old, kept_new], 1), axis=0)
    assert len(pairs) == len(np.unique(kept_old)) == len(np.unique(kept_new))
    np.testing.assert_array_equal(isolated.direction_of_face, charts.direction_of_face)
    # Charts are renumbered in order of their first face.
    first_face = np.array([np.nonzero(chart == c)[0][0] for c in range(isolated.count)])
    assert (np.diff(first_face) > 0).all()


def test_isolating_nothing_changes_nothing() -> None:
    positions, faces = meshes()["inflated_l"]
    charts = segment(positions, faces)
    same = isolate_faces(charts, torch.zeros(len(faces), dtype=torch.bool))
    # Only the numbering may change; the partition may not.
    pairs = np.unique(
        np.stack([charts.chart_of_face.numpy(), same.chart_of_face.numpy()], 1), axis=0
    )
    assert len(pairs) == charts.count == same.count


# --- tile_charts --------------------------------------------------------------------------------


def grid_corners(n: int, holes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of unit squares (two faces each) in one plane -> corners [F, 3, 2] and
    each face's square (x, y); `holes` leaves out every square of a checkerboard's black."""
    corners, squares = [], []
    for y in range(n):
        for x in range(n):
            if holes and (x // 4 + y // 4) % 2:
                continue
            a, b, c, d = (x, y), (x + 1, y), (x + 1, y + 1), (x, y + 1)
            corners += [[a, b, c], [a, c, d]]
            squares += [(x, y), (x, y)]
    return np.array(corners, np.float64), np.array(squares)


GUTTER = 4


SIZE = 2048  # the texture's side: no chart of these tests is longer unless it asks


def tiles(corners: np.ndarray, chart: np.ndarray, scale: float, size: int = SIZE) -> np.ndarray:
    corners_t, chart_t = torch.from_numpy(corners), torch.from_numpy(chart)
    piece, count = tile_charts(corners_t, chart_t, scale, GUTTER, size)
    assert count == (int(piece.max()) + 1 if len(piece) else 0)
    return piece.numpy()


def box_cost(texels: np.ndarray, size: int = SIZE) -> float:
    """The texture a group of faces takes: its bounding box (at least a texel) plus gutter,
    plus OVERSIZE_PENALTY textures where that is longer than the texture's side."""
    points = texels.reshape(-1, 2)
    extent = np.maximum(points.max(0) - points.min(0), 1.0) + GUTTER
    penalty = charts_module.OVERSIZE_PENALTY * size * size if extent.max() > size else 0.0
    return float(extent[0] * extent[1]) + penalty


def least_cost(texels: np.ndarray, level: int, size: int = SIZE) -> float:
    """The cheapest cut of one node (its faces' texel corners) along the cells below `level`,
    by plain recursion: keep the node whole, or cut it into its cells at the next level. A
    chart (level 0) longer than the texture takes its cells from its own corner."""
    whole = box_cost(texels, size)
    if level == len(charts_module.TILE_LEVELS):
        return whole
    cell = charts_module.TILE_LEVELS[level]
    points = texels.reshape(-1, 2)
    too_long = (np.maximum(points.max(0) - points.min(0), 1.0) + GUTTER).max() > size
    origin = points.min(0) if level == 0 and too_long else 0.0
    keys = np.floor((texels.mean(1) - origin) / cell)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    cut = sum(least_cost(texels[group == g], level + 1, size) for g in range(group.max() + 1))
    return min(whole, cut)


def pieces_cost(texels: np.ndarray, piece: np.ndarray, size: int = SIZE) -> float:
    return sum(box_cost(texels[piece == p], size) for p in range(piece.max() + 1))


def test_a_full_square_stays_one_piece_at_any_size() -> None:
    corners, _ = grid_corners(16)
    # 4 to 64 texels a unit: the square spans up to 1024 texels, two cells of the first level.
    for scale in (4.0, 16.0, 64.0):
        piece = tiles(corners, np.zeros(len(corners), np.int64), scale)
        assert (piece == 0).all(), scale


def test_tiles_are_the_cheapest_cut_and_cut_where_it_pays() -> None:
    corners, squares = grid_corners(64, holes=True)
    chart = (squares[:, 0] >= 32).astype(np.int64)  # two charts side by side
    # 16 texels a unit: each chart 512 x 1024 texels, holes of 64 texels in a checkerboard.
    scale = 16.0
    piece = tiles(corners, chart, scale)
    texels = corners * scale
    cheapest = sum(least_cost(texels[chart == c], 0) for c in (0, 1))
    whole = sum(box_cost(texels[chart == c]) for c in (0, 1))
    assert pieces_cost(texels, piece) == pytest.approx(cheapest, rel=1e-12)
    # The holes make cutting pay: 32 x 32-texel checkerboard squares alone need half the area.
    assert cheapest < 0.7 * whole
    assert piece.max() + 1 > 2


def strip_corners(width: int, height: int, offset: float) -> np.ndarray:
    """A width x height grid of unit squares (two faces each) from (offset, offset)."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    a = np.stack((x, y), -1).reshape(-1, 1, 2) + offset
    square = a + np.array([[0, 0], [1, 0], [1, 1], [0, 1]])  # [N, 4, 2]
    return np.concatenate((square[:, [0, 1, 2]], square[:, [0, 2, 3]])).astype(np.float64)


@pytest.mark.parametrize("offset", [0.0, -37.3])
def test_a_chart_longer_than_the_texture_is_cut_into_tiles_that_fit_it(offset: float) -> None:
    # A 100 x 6 strip at 16 texels a unit: 1600 x 96 texels, one chart.
    corners = strip_corners(100, 6, offset)
    chart = np.zeros(len(corners), np.int64)
    scale, texels = 16.0, corners * 16.0
    # Where the texture holds it, a full rectangle stays whole.
    assert (tiles(corners, chart, scale, size=2048) == 0).all()
    # In 1024 texels it cannot lie: cut along its length into tiles that fit, whole rows of
    # the strip each (its cells start at its own corner, wherever the plane's origin is),
    # and no more of them than the cheapest cut that fits.
    piece = tiles(corners, chart, scale, size=1024)
    count = piece.max() + 1
    assert 2 <= count <= 4
    for p in range(count):
        points = texels[piece == p].reshape(-1, 2)
        extent = points.max(0) - points.min(0)
        assert extent.max() + GUTTER <= 1024
        assert extent[1] == pytest.approx(96.0)  # the strip's full height
    cheapest = least_cost(texels, 0, size=1024)
    assert cheapest < charts_module.OVERSIZE_PENALTY * 1024 * 1024  # none left too long
    assert pieces_cost(texels, piece, size=1024) == pytest.approx(cheapest, rel=1e-12)


def test_pieces_refine_charts_and_are_numbered_by_first_face() -> None:
    corners, squares = grid_corners(64, holes=True)
    chart = (squares[:, 0] >= 32).astype(np.int64)
    piece = tiles(corners, chart, 16.0)
    count = piece.max() + 1
    assert np.array_equal(np.unique(piece), np.arange(count))
    first = np.array([np.nonzero(piece == p)[0][0] for p in range(count)])
    assert (np.diff(first) > 0).all()
    assert all(len(np.unique(chart[piece == p])) == 1 for p in range(count))


def dissolve_reference(score, label, chart, a, b):  # type: ignore[no-untyped-def]
    """The small-chart move one face at a time, from the rule: each face of a chart under
    SMALL_CHART_FACES faces takes, of the labels across its edges to other charts (edges from
    a's side first, then from b's, each in order), the first with the best cosine, where that
    cosine reaches SMOOTH_MIN_COS."""
    score, label, chart, a, b = (x.numpy() for x in (score, label, chart, a, b))
    small = np.bincount(chart, minlength=len(chart))[chart] < charts_module.SMALL_CHART_FACES
    candidates: dict[int, list[int]] = {}
    for face, other in [(a, b), (b, a)]:
        for f, o in zip(face, other, strict=True):
            if chart[f] != chart[o] and small[f]:
                candidates.setdefault(int(f), []).append(int(label[o]))
    new = label.copy()
    for f, labels in candidates.items():
        best = labels[0]
        for candidate in labels[1:]:
            if score[f, candidate] > score[f, best]:
                best = candidate
        if score[f, best] >= SMOOTH_MIN_COS:
            new[f] = best
    return torch.from_numpy(new), any(new != label)


@pytest.mark.parametrize("seed", range(6))
def test_small_charts_dissolve_as_the_rule_says(seed: int) -> None:
    rng = np.random.default_rng(seed)
    F, E = 300, 700
    a = torch.from_numpy(rng.integers(0, F, E))
    b = torch.from_numpy(rng.integers(0, F, E))
    # Cosines on a coarse grid, so equal best candidates (ties) are common.
    score = torch.from_numpy(rng.integers(-4, 5, (F, len(DIRECTIONS))) / 4.0).float()
    label = torch.from_numpy(rng.integers(0, len(DIRECTIONS), F))
    chart = torch.from_numpy(rng.integers(0, 40 if seed % 2 else 12, F))
    new, moved = charts_module._dissolve_small(score, label, chart, charts_module._candidates(a, b))
    expected, expected_moved = dissolve_reference(score, label, chart, a, b)
    assert torch.equal(new, expected) and moved == expected_moved
    if seed % 2:  # 40 charts over 300 faces: every chart small, so some faces move
        assert moved


def test_dissolving_with_no_edges_moves_nothing() -> None:
    none = torch.zeros(0, dtype=torch.int64)
    label = torch.tensor([0, 1, 2])
    new, moved = charts_module._dissolve_small(
        torch.ones(3, 6), label, label, charts_module._candidates(none, none)
    )
    assert torch.equal(new, label) and not moved
