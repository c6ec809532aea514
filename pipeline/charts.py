"""Charts for the box atlas: faces grouped by the axis they face, projected along it.

1. Each face takes the one of the six axis directions its normal is closest to.
2. A few rounds of neighbour voting move a face to the label most of its neighbours carry when
   it still faces that axis well enough (SMOOTH_MIN_COS); this removes the speckle of tiny
   charts where normals hover near 45 degrees.
3. A chart is a connected piece (through shared edges) of faces with one label.
4. A chart is projected orthographically along its axis. Every face of it faces that axis, so
   no triangle flips; where the surface is pleated (simplification leaves a few fold-overs)
   two faces of a chart can still cover the same texel: the atlas finds those faces with the
   raster and gives each its own chart.
Distortion is bounded: a face's area shrinks by at most its cosine to the axis (>= 0.35).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from pipeline.topology import manifold_pairs

__all__ = ["Charts", "isolate_faces", "pleated_faces", "project_charts", "segment_charts"]

# The six projection directions: +x, -x, +y, -y, +z, -z.
AXES = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
)
# In-plane (u, v) axes per direction, chosen so the projection keeps counter-clockwise order.
PLANES = np.array(
    [
        [[0, 0, -1], [0, 1, 0]],
        [[0, 0, 1], [0, 1, 0]],
        [[1, 0, 0], [0, 0, -1]],
        [[1, 0, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 1, 0]],
        [[-1, 0, 0], [0, 1, 0]],
    ],
    dtype=np.float64,
)
# A face may join its neighbours' label only if its normal is within ~70 degrees of that
# axis: keeps texel density within 1/0.35 ~ 3x of the best while merging 45-degree speckle.
SMOOTH_MIN_COS = 0.35
SMOOTH_ROUNDS = 3
# Charts of fewer faces than this are dissolved into a neighbouring chart's axis where every
# face allows it: each tiny chart costs a gutter and a seam. Tuned on inflate outputs of the
# shared prompts, where it removes most single-face charts.
SMALL_CHART_FACES = 16
MERGE_ROUNDS = 4
# Radians by which two wedges must overlap to count: above float64 rounding of the angles,
# far below any fold that covers a texel.
PLEAT_TOLERANCE = 1e-9


class Charts:
    """A chart id and a projection axis per face."""

    def __init__(self, chart_of_face: np.ndarray, axis_of_face: np.ndarray) -> None:
        self.chart_of_face = chart_of_face  # [F] int64, charts numbered 0..C-1
        self.axis_of_face = axis_of_face  # [F] int64 in 0..5

    @property
    def count(self) -> int:
        return int(self.chart_of_face.max()) + 1 if len(self.chart_of_face) else 0


def _face_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = positions.astype(np.float64)
    n = np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def _edge_neighbours(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(face_a, face_b) across every manifold edge. A chart never grows through an edge shared
    by three or more faces: the sheets meeting there can fold over each other in projection."""
    a, b, _ = manifold_pairs(faces)
    return a, b


def _components(n: int, a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    graph = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(n, n))
    return connected_components(graph.tocsr(), directed=False)[1].astype(np.int64)


def segment_charts(positions: np.ndarray, faces: np.ndarray) -> Charts:
    """positions [V, 3], faces [F, 3] -> a chart and an axis per face."""
    F = len(faces)
    score = _face_normals(positions, faces) @ AXES.T  # [F, 6] cosine to each axis
    label = np.argmax(score, axis=1)
    a, b = _edge_neighbours(faces)
    for _ in range(SMOOTH_ROUNDS):
        pairs = np.concatenate((a * 6 + label[b], b * 6 + label[a]))
        votes = np.bincount(pairs, minlength=F * 6).reshape(F, 6)
        favourite = np.argmax(votes, axis=1)
        own = votes[np.arange(F), label]
        best = votes[np.arange(F), favourite]
        move = (best > own) & (best >= 2) & (score[np.arange(F), favourite] >= SMOOTH_MIN_COS)
        if not move.any():
            break
        label = np.where(move, favourite, label)
    chart = _components(F, a, b, label[a] == label[b])
    for _ in range(MERGE_ROUNDS):
        label, moved = _dissolve_small(score, label, chart, a, b)
        if not moved:
            break
        chart = _components(F, a, b, label[a] == label[b])
    return Charts(chart, label)


def _dissolve_small(
    score: np.ndarray, label: np.ndarray, chart: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Move the faces of small charts to the best-facing label among their other neighbours."""
    small = np.bincount(chart)[chart] < SMALL_CHART_FACES  # [F]
    across = chart[a] != chart[b]
    # Candidate (face, label) pairs: a small chart's face and a neighbour's label.
    face = np.concatenate((a[across & small[a]], b[across & small[b]]))
    other = np.concatenate((label[b[across & small[a]]], label[a[across & small[b]]]))
    if len(face) == 0:
        return label, False
    cos = score[face, other]
    # Per face, the candidate with the best cosine; ties to the first candidate in order.
    order = np.lexsort((np.arange(len(face)), -cos, face))
    first = np.r_[True, face[order][1:] != face[order][:-1]]
    chosen_face, chosen_label = face[order][first], other[order][first]
    allowed = score[chosen_face, chosen_label] >= SMOOTH_MIN_COS
    new_label = label.copy()
    new_label[chosen_face[allowed]] = chosen_label[allowed]
    return new_label, bool(allowed.any())


def isolate_faces(charts: Charts, faces_mask: np.ndarray) -> Charts:
    """Give every face in `faces_mask` a chart of its own; renumber charts by first face."""
    chart = charts.chart_of_face.copy()
    chart[faces_mask] = charts.count + np.arange(int(faces_mask.sum()))
    # A chart that lost faces may now be in pieces; it stays one chart, which is harmless:
    # its pieces keep their relative layout, which had no overlap.
    _, first, inverse = np.unique(chart, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return Charts(rank[inverse], charts.axis_of_face)


def pleated_faces(corners: np.ndarray, faces: np.ndarray, charts: Charts) -> np.ndarray:
    """[F] bool: faces to take out of their chart so no two of its faces overlap near a vertex.

    Every face of a chart is counter-clockwise in its projection, so at each corner it covers
    a wedge of directions [start, start + angle). Two faces of one chart sharing a vertex
    overlap near it exactly when their wedges there overlap: simplification's pleats. Sorted
    by start angle, each (vertex, chart) fan flags every wedge that begins before an earlier
    one ends, and every wedge that reaches round past the fan's first start; taking those
    faces out leaves no overlapping pair. Grid-free, so it runs before any texel layout.
    corners: [F, 3, 2] projected corner coordinates.
    """
    F = len(faces)
    a, b, c = corners, np.roll(corners, -1, axis=1), np.roll(corners, -2, axis=1)
    start = np.arctan2(b[..., 1] - a[..., 1], b[..., 0] - a[..., 0])
    finish = np.arctan2(c[..., 1] - a[..., 1], c[..., 0] - a[..., 0])
    span = np.mod(finish - start, 2 * np.pi).reshape(-1)
    start = np.mod(start, 2 * np.pi).reshape(-1)
    V = int(faces.max()) + 1
    group = (np.repeat(charts.chart_of_face, 3) * V + faces.reshape(-1)).astype(np.int64)
    order = np.lexsort((start, group))
    g, s0 = group[order], start[order]
    s1 = s0 + span[order]
    first = np.r_[True, g[1:] != g[:-1]]
    group_id = np.cumsum(first) - 1
    # The furthest end reached by the wedges before each one in its fan.
    previous_end = np.r_[-np.inf, s1[:-1]]
    reach = _running_max_by_group(previous_end, first, group_id)
    clash = ~first & (s0 < reach - PLEAT_TOLERANCE)
    # Going round: a wedge whose end passes 2 pi beyond the fan's first start.
    first_start = s0[first][group_id]
    clash |= ~first & (s1 - 2 * np.pi > first_start + PLEAT_TOLERANCE)
    flagged = np.zeros(3 * F, bool)
    flagged[order[clash]] = True
    return flagged.reshape(F, 3).any(axis=1)


def _running_max_by_group(
    values: np.ndarray, first_of_group: np.ndarray, group_id: np.ndarray
) -> np.ndarray:
    """Running maximum of `values` that restarts at each group's first element.

    Groups are lifted apart by a step far above any angle (< 4 pi) so one accumulate serves.
    """
    lift = group_id.astype(np.float64) * 100.0
    lifted = np.where(first_of_group, lift - 50.0, values + lift)
    return np.maximum.accumulate(lifted) - lift


def project_charts(positions: np.ndarray, faces: np.ndarray, charts: Charts) -> np.ndarray:
    """[F, 3, 2] float64 corner coordinates of every face in its chart's plane (model units)."""
    corners = positions[faces].astype(np.float64)  # [F, 3, 3]
    # Every plane axis is a signed coordinate axis: pick the coordinate, apply the sign.
    component = np.abs(PLANES).argmax(axis=2)[charts.axis_of_face]  # [F, 2]
    sign = PLANES.sum(axis=2)[charts.axis_of_face]  # [F, 2], +-1
    picked = np.take_along_axis(corners, component[:, None, :], axis=2)  # [F, 3, 2]
    return picked * sign[:, None, :]
