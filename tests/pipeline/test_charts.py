"""segment_charts, project_charts, pleated_faces and isolate_faces: charts of one axis each,
counter-clockwise projections with bounded shrink, hand-built fans with known overlaps, and
the renumbering of isolated faces."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh
from scipy.sparse.csgraph import connected_components

from pipeline.charts import (
    AXES,
    SMOOTH_MIN_COS,
    Charts,
    isolate_faces,
    pleated_faces,
    project_charts,
    segment_charts,
)
from pipeline.generators.inflate import InflateGenerator
from pipeline.mesh import process_mesh
from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage

# Projected area over true area of a face is its cosine to the chart's axis; the module bounds
# it below by SMOOTH_MIN_COS. Slack for float64 rounding only.
COS_SLACK = 1e-9


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
    charts = segment_charts(positions, faces)
    chart = charts.chart_of_face
    assert chart.shape == (len(faces),) and chart.dtype == np.int64
    assert np.array_equal(np.unique(chart), np.arange(charts.count))
    assert charts.axis_of_face.shape == (len(faces),)
    assert charts.axis_of_face.min() >= 0 and charts.axis_of_face.max() <= 5
    assert (chart_pieces(faces, chart) == 1).all()


def test_faces_of_a_chart_share_one_axis(mesh) -> None:
    positions, faces = mesh
    charts = segment_charts(positions, faces)
    for c in range(charts.count):
        assert len(np.unique(charts.axis_of_face[charts.chart_of_face == c])) == 1


def test_every_face_projects_counter_clockwise_with_bounded_shrink(mesh) -> None:
    positions, faces = mesh
    charts = segment_charts(positions, faces)
    corners = project_charts(positions, faces, charts)
    assert corners.shape == (len(faces), 3, 2) and corners.dtype == np.float64
    projected = signed_areas(corners)
    assert (projected > 0).all()
    ratio = projected / true_double_areas(positions, faces)
    assert ratio.min() >= SMOOTH_MIN_COS - COS_SLACK
    assert ratio.max() <= 1 + COS_SLACK


def test_projection_keeps_the_in_plane_coordinates() -> None:
    """Projection along an axis drops that coordinate and keeps the other two (up to sign)."""
    positions, faces = meshes()["bumpy_sphere"]
    charts = segment_charts(positions, faces)
    corners = project_charts(positions, faces, charts)
    p = positions[faces]  # [F, 3, 3]
    for axis in range(6):
        chosen = charts.axis_of_face == axis
        dropped = int(np.argmax(np.abs(AXES[axis])))
        kept = [d for d in range(3) if d != dropped]
        np.testing.assert_allclose(
            np.sort(np.abs(corners[chosen]), axis=-1),
            np.sort(np.abs(p[chosen][..., kept]), axis=-1),
        )


def test_a_box_gets_one_chart_per_side_along_its_outward_normal() -> None:
    positions, faces = meshes()["box"]
    charts = segment_charts(positions, faces)
    assert charts.count == 6
    centroids = positions[faces].mean(1)
    # The side a face lies on is the coordinate at its extreme; its chart's axis points out.
    outward = AXES[charts.axis_of_face]
    half = np.array([0.5, 0.25, 0.125])
    np.testing.assert_allclose((centroids * outward).sum(1), np.abs(outward) @ half)
    assert len(np.unique(charts.axis_of_face)) == 6


def test_charts_are_deterministic() -> None:
    positions, faces = meshes()["inflated_ring"]
    first, second = segment_charts(positions, faces), segment_charts(positions.copy(), faces)
    np.testing.assert_array_equal(first.chart_of_face, second.chart_of_face)
    np.testing.assert_array_equal(first.axis_of_face, second.axis_of_face)


def test_a_convex_surface_has_no_pleats() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    positions, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    charts = segment_charts(positions, faces)
    flagged = pleated_faces(project_charts(positions, faces, charts), faces, charts)
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
    one_chart = Charts(np.zeros(len(faces), np.int64), np.full(len(faces), 4, np.int64))
    return np.array(corners), np.array(faces), one_chart


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
    flagged = pleated_faces(corners, faces, charts)
    assert 2 <= flagged.sum() <= 3  # two suffice; the sweep may take one more
    assert_no_kept_overlap(corners, flagged)


def test_a_fan_that_folds_back_is_flagged() -> None:
    """Three wedges going round by 80 degrees, and one folded back over the last two."""
    corners, faces, charts = fan([(0, 80), (80, 160), (160, 240), (120, 200)])
    flagged = pleated_faces(corners, faces, charts)
    assert flagged.any() and not flagged[0]
    assert_no_kept_overlap(corners, flagged)


def test_a_wedge_hidden_inside_another_is_flagged() -> None:
    corners, faces, charts = fan([(10, 170), (40, 60)])
    flagged = pleated_faces(corners, faces, charts)
    assert flagged.sum() == 1
    assert_no_kept_overlap(corners, flagged)


def test_wedges_that_only_touch_are_not_flagged() -> None:
    """A closed fan (five 72-degree wedges) and an open one with a gap."""
    closed = [(72 * n, 72 * (n + 1)) for n in range(5)]
    for wedges in (closed, [(0, 90), (90, 135), (200, 300)]):
        corners, faces, charts = fan(wedges)
        assert not pleated_faces(corners, faces, charts).any()


def test_overlapping_wedges_in_different_charts_are_not_flagged() -> None:
    corners, faces, _ = fan([(0, 100), (100, 200), (200, 300), (300, 400), (400, 500)])
    separate = Charts(np.arange(len(faces), dtype=np.int64), np.full(len(faces), 4, np.int64))
    assert not pleated_faces(corners, faces, separate).any()


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
    charts = Charts(np.zeros(len(faces), np.int64), np.full(len(faces), 4, np.int64))
    assert not pleated_faces(corners, faces, charts).any()


# --- isolate_faces ------------------------------------------------------------------------------


def test_isolated_faces_get_charts_of_their_own() -> None:
    positions, faces = meshes()["bumpy_sphere"]
    charts = segment_charts(positions, faces)
    rng = np.random.default_rng(2)
    chosen = rng.random(len(faces)) < 0.1
    isolated = isolate_faces(charts, chosen)
    chart = isolated.chart_of_face
    assert np.array_equal(np.unique(chart), np.arange(isolated.count))
    assert isolated.count == len(np.unique(charts.chart_of_face[~chosen])) + int(chosen.sum())
    counts = np.bincount(chart)
    assert (counts[chart[chosen]] == 1).all()
    # The other faces keep their grouping, and every face keeps its axis.
    kept_old, kept_new = charts.chart_of_face[~chosen], chart[~chosen]
    pairs = np.unique(np.stack([kept_old, kept_new], 1), axis=0)
    assert len(pairs) == len(np.unique(kept_old)) == len(np.unique(kept_new))
    np.testing.assert_array_equal(isolated.axis_of_face, charts.axis_of_face)
    # Charts are renumbered in order of their first face.
    first_face = np.array([np.nonzero(chart == c)[0][0] for c in range(isolated.count)])
    assert (np.diff(first_face) > 0).all()


def test_isolating_nothing_changes_nothing() -> None:
    positions, faces = meshes()["inflated_l"]
    charts = segment_charts(positions, faces)
    same = isolate_faces(charts, np.zeros(len(faces), bool))
    # Only the numbering may change; the partition may not.
    pairs = np.unique(np.stack([charts.chart_of_face, same.chart_of_face], 1), axis=0)
    assert len(pairs) == charts.count == same.count
