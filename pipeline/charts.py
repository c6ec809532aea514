"""Charts for the atlas: faces grouped by normal cone, projected along the cone's axis (torch).

1. Each face takes the one of DIRECTIONS (the six axes) its normal, averaged over a few rings
   of neighbours, is closest to (its own nearest axis where that one faces it too badly).
2. A few rounds of neighbour voting move a face to the label most of its neighbours carry when
   it still faces that direction well enough (SMOOTH_MIN_COS); this removes the speckle of
   tiny charts where a normal hovers between two directions.
3. A chart is a connected piece (through edges of exactly two faces) of faces with one label;
   charts of fewer than SMALL_CHART_FACES faces dissolve into a neighbour's label where every
   face allows it.
4. A chart is projected orthographically along its direction. Every face of it faces that
   direction (cosine >= SMOOTH_MIN_COS), so no triangle flips and texel density varies by at
   most 1 / SMOOTH_MIN_COS: a planar map is within that bound, so no chart needs a conformal
   one. Where the surface is pleated (simplification leaves a
   few fold-overs) two faces of a chart can still cover the same point: `pleated_faces` finds
   those around each vertex without a texel grid, and the atlas's raster catches the rest.
5. `tile_charts` cuts charts into pieces whose bounding boxes they fill well (a quadtree on a
   grid in the chart's plane), so that rectangle packing wastes little: a silhouette with
   holes is many nearly full tiles.
Everything runs on the mesh's device, deterministic (integer atomics and stable sorts only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.face_graph import components, edge_pairs, group_sums, rank_by_first

__all__ = [
    "DIRECTIONS",
    "Charts",
    "isolate_faces",
    "pleated_faces",
    "project_charts",
    "segment_charts",
    "separate",
    "tile_charts",
]

# The six axes. Measured on inflate outputs of the shared prompts, the eight cube diagonals
# besides (no normal then more than 35 degrees from a direction) made 1.5-3x as many charts
# and lowered utilisation by 0.06-0.08: each chart costs a gutter and a seam.
DIRECTIONS = torch.tensor(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64
)
# A face may join its neighbours' label only if its normal is within ~70 degrees of that
# direction: texel density stays within 1 / 0.35 ~ 3x of the best while 45-degree speckle
# merges (no normal is more than 55 degrees from an axis).
SMOOTH_MIN_COS = 0.35
SMOOTH_ROUNDS = 3
NORMAL_SMOOTH_ROUNDS = 4
# Charts of fewer faces than this are dissolved into a neighbouring chart's direction where
# every face allows it: each tiny chart costs a gutter and a seam.
SMALL_CHART_FACES = 16
MERGE_ROUNDS = 4
# Angles as integers of ANGLE_UNIT radians, so running maxima per fan are exact; two wedges
# must overlap by PLEAT_TOLERANCE_UNITS of them to count (far below any fold covering a texel).
ANGLE_UNIT = 1e-10
PLEAT_TOLERANCE_UNITS = 10
ANGLE_BITS = 37  # 4 pi / ANGLE_UNIT < 2^37
# Tiles: square cells from TILE_TEXELS down to MIN_TILE_TEXELS (halving); a piece splits while
# its faces fill less than TILE_MIN_FILL of its bounding box.
TILE_TEXELS = 128
MIN_TILE_TEXELS = 64
TILE_MIN_FILL = 0.55


@dataclass(frozen=True)
class Charts:
    """A chart id and a direction per face."""

    chart_of_face: torch.Tensor  # [F] int64, charts numbered 0..count-1 by first face
    direction_of_face: torch.Tensor  # [F] int64 index into DIRECTIONS
    count: int


def _bases(device: torch.device) -> torch.Tensor:
    """[K, 2, 3] in-plane (u, v) per direction d with u x v = d, so projection keeps winding."""
    d = DIRECTIONS.to(device)
    helper = torch.zeros_like(d)
    helper[:, 1] = 1.0
    helper[d[:, 1].abs() > 0.9] = torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype, device=device)
    v = helper - (helper * d).sum(1, keepdim=True) * d
    v = v / v.norm(dim=1, keepdim=True)
    u = torch.cross(v, d, dim=1)
    return torch.stack((u, v), 1)


def face_normals(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] float64 unit normals (zero for degenerate faces)."""
    p = positions.double()
    n = torch.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]], dim=1)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-30)


def segment_charts(
    positions: torch.Tensor,
    faces: torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Charts:
    """positions [V, 3], faces [F, 3] -> a chart and a direction per face.

    pairs: `edge_pairs(faces)` when the caller has it already.
    """
    F, K = len(faces), len(DIRECTIONS)
    device = faces.device
    if F == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return Charts(empty, empty, 0)
    normals = face_normals(positions, faces)
    score = normals @ DIRECTIONS.to(device).T  # [F, K] cosines
    a, b = edge_pairs(faces) if pairs is None else pairs
    label = _smoothed_labels(normals, score, a, b)
    every = torch.arange(F, device=device)
    for _ in range(SMOOTH_ROUNDS):
        pairs = torch.cat((a * K + label[b], b * K + label[a]))
        votes = torch.bincount(pairs, minlength=F * K).reshape(F, K)
        favourite = torch.argmax(votes, dim=1)
        own, best = votes[every, label], votes[every, favourite]
        move = (best > own) & (best >= 2) & (score[every, favourite] >= SMOOTH_MIN_COS)
        label = torch.where(move, favourite, label)
    chart = components(F, *_joined(a, b, label))
    for _ in range(MERGE_ROUNDS):
        label, moved = _dissolve_small(score, label, chart, a, b)
        if not moved:
            break
        chart = components(F, *_joined(a, b, label))
    dense, count = rank_by_first(chart)
    return Charts(dense, label, count)


def _smoothed_labels(
    normals: torch.Tensor, score: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """[F] direction per face, chosen by its normal averaged over its neighbourhood.

    Noisy surfaces (marching cubes, simplification) scatter single faces across direction
    boundaries; the averaged normal does not. A face whose own normal is too far from the
    averaged choice keeps its own nearest direction.
    """
    F = len(normals)
    neighbour = torch.cat((a, b))
    other = torch.cat((b, a))
    order = torch.argsort(neighbour, stable=True)
    neighbour, other = neighbour[order], other[order]
    ends = torch.searchsorted(neighbour, torch.arange(F, device=normals.device), right=True)
    starts = torch.cat((ends.new_zeros(1), ends[:-1]))
    smooth = normals.T.contiguous()  # [3, F]: CUDA scans a long contiguous row fast, a
    for _ in range(NORMAL_SMOOTH_ROUNDS):  # [N, 3] column three hundred times slower
        prefix = torch.cat((smooth.new_zeros(3, 1), torch.cumsum(smooth[:, other], 1)), 1)
        smooth = smooth + prefix[:, ends] - prefix[:, starts]
        smooth = smooth / smooth.norm(dim=0, keepdim=True).clamp_min(1e-30)
    smooth = smooth.T
    label = torch.argmax(smooth @ DIRECTIONS.to(normals.device).T, dim=1)
    every = torch.arange(F, device=normals.device)
    fits = score[every, label] >= SMOOTH_MIN_COS
    return torch.where(fits, label, torch.argmax(score, dim=1))


def _joined(a: torch.Tensor, b: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
    same = label[a] == label[b]
    return a[same], b[same]


def _dissolve_small(
    score: torch.Tensor, label: torch.Tensor, chart: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    """Move the faces of small charts to the best-facing label among their other neighbours."""
    small = torch.bincount(chart, minlength=len(chart))[chart] < SMALL_CHART_FACES
    across = chart[a] != chart[b]
    from_a, from_b = across & small[a], across & small[b]
    face = torch.cat((a[from_a], b[from_b]))
    other = torch.cat((label[b[from_a]], label[a[from_b]]))
    if len(face) == 0:
        return label, False
    cos = score[face, other]
    # Per face, the candidate with the best cosine; ties to the first candidate in order.
    order = torch.argsort(-cos, stable=True)
    order = order[torch.argsort(face[order], stable=True)]
    face, other = face[order], other[order]
    first = torch.ones_like(face, dtype=torch.bool)
    first[1:] = face[1:] != face[:-1]
    chosen_face, chosen_label = face[first], other[first]
    allowed = score[chosen_face, chosen_label] >= SMOOTH_MIN_COS
    new_label = label.clone()
    new_label[chosen_face[allowed]] = chosen_label[allowed]
    return new_label, bool(allowed.any())


def separate(label: torch.Tensor, count: int, faces_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Give every face in `faces_mask` a label of its own; renumber labels by first face.

    A group that lost faces may now be in pieces; it stays one group, which is harmless: its
    pieces keep their relative layout, which had no overlap.
    """
    label = label.clone()
    flagged = torch.nonzero(faces_mask).squeeze(1)
    label[flagged] = count + torch.arange(len(flagged), device=label.device)
    return rank_by_first(label)


def isolate_faces(charts: Charts, faces_mask: torch.Tensor) -> Charts:
    """Give every face in `faces_mask` a chart of its own."""
    chart, count = separate(charts.chart_of_face, charts.count, faces_mask)
    return Charts(chart, charts.direction_of_face, count)


def project_charts(positions: torch.Tensor, faces: torch.Tensor, charts: Charts) -> torch.Tensor:
    """[F, 3, 2] float64 corner coordinates of every face in its chart's plane (model units)."""
    basis = _bases(positions.device)[charts.direction_of_face]  # [F, 2, 3]
    corners = positions.double()[faces]  # [F, 3, 3]
    return torch.einsum("fcx,fkx->fck", corners, basis)


def pleated_faces(corners: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor) -> torch.Tensor:
    """[F] bool: faces to take out of their chart so no two of its faces overlap near a vertex.

    Every face of a chart is counter-clockwise in its projection, so at each corner it covers
    a wedge of directions [start, start + angle). Two faces of one chart sharing a vertex
    overlap near it exactly when their wedges there overlap: simplification's pleats. Sorted
    by start angle, each (vertex, chart) fan flags every wedge that begins before an earlier
    one ends, and every wedge that reaches round past the fan's first start; taking those
    faces out leaves no overlapping pair. Grid-free, so it runs before any texel layout.
    corners: [F, 3, 2] projected corner coordinates; chart: [F].
    """
    F = len(faces)
    if F == 0:
        return torch.zeros(0, dtype=torch.bool, device=faces.device)
    a, b, c = corners, corners.roll(-1, 1), corners.roll(-2, 1)
    start = torch.atan2(b[..., 1] - a[..., 1], b[..., 0] - a[..., 0])
    finish = torch.atan2(c[..., 1] - a[..., 1], c[..., 0] - a[..., 0])
    turn = 2 * math.pi
    span = torch.remainder(finish - start, turn).reshape(-1)
    start = torch.remainder(start, turn).reshape(-1)
    s0 = torch.round(start / ANGLE_UNIT).long()
    s1 = s0 + torch.round(span / ANGLE_UNIT).long()
    V = int(faces.max()) + 1
    group = chart.repeat_interleave(3) * V + faces.reshape(-1)
    order = torch.argsort(s0, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g, s0, s1 = group[order], s0[order], s1[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    group_id = torch.cumsum(first.long(), 0) - 1
    # The furthest end reached by the wedges before each one in its fan: a running maximum
    # restarted per fan, as one cummax over values lifted apart by the fan's number.
    lift = group_id << ANGLE_BITS
    previous_end = torch.cat((s1[:1], s1[:-1]))
    lifted = torch.where(first, lift, previous_end + lift)
    reach = torch.cummax(lifted, 0).values - lift
    clash = ~first & (s0 < reach - PLEAT_TOLERANCE_UNITS)
    # Going round: a wedge whose end passes a full turn beyond the fan's first start.
    first_start = s0[first][group_id]
    full_turn = round(turn / ANGLE_UNIT)
    clash |= ~first & (s1 - full_turn > first_start + PLEAT_TOLERANCE_UNITS)
    flagged = torch.zeros(3 * F, dtype=torch.bool, device=faces.device)
    flagged[order[clash]] = True
    return flagged.reshape(F, 3).any(1)


def tile_charts(corners: torch.Tensor, chart: torch.Tensor, texels_per_unit: float) -> torch.Tensor:
    """[F] int64 piece per face (0..P-1 by first face): charts cut into well-filled tiles.

    corners: [F, 3, 2] projected corners (model units); texels_per_unit: the expected scale.
    A face belongs to the grid cell of its centroid; at each level a piece (chart, cell) whose
    faces fill at least TILE_MIN_FILL of their bounding box, or that is already small, keeps
    its faces, and the rest go on to cells half the size.
    """
    F = len(chart)
    texels = corners * texels_per_unit
    centroid = texels.mean(1)  # [F, 2]
    area = (
        0.5
        * (
            (texels[:, 1, 0] - texels[:, 0, 0]) * (texels[:, 2, 1] - texels[:, 0, 1])
            - (texels[:, 1, 1] - texels[:, 0, 1]) * (texels[:, 2, 0] - texels[:, 0, 0])
        ).abs()
    )
    lo, hi = texels.amin(1), texels.amax(1)  # [F, 2]
    piece = torch.full((F,), -1, dtype=torch.int64, device=chart.device)
    open_faces = torch.arange(F, device=chart.device)
    cell = TILE_TEXELS
    next_piece = 0
    while len(open_faces):
        # Cells per chart axis stay far below 2^15 (charts span at most a few atlas widths).
        grid = torch.floor(centroid[open_faces] / cell).long().clamp(-(1 << 15), (1 << 15) - 1)
        grid = grid + (1 << 15)
        key = (chart[open_faces] << 32) | (grid[:, 0] << 16) | grid[:, 1]
        unique, inverse = torch.unique(key, return_inverse=True)
        count = len(unique)
        box_lo = torch.full((count, 2), math.inf, dtype=texels.dtype, device=chart.device)
        box_hi = torch.full((count, 2), -math.inf, dtype=texels.dtype, device=chart.device)
        index = inverse[:, None].expand(-1, 2)
        box_lo = box_lo.scatter_reduce(0, index, lo[open_faces], "amin")
        box_hi = box_hi.scatter_reduce(0, index, hi[open_faces], "amax")
        extent = (box_hi - box_lo).clamp_min(1.0)
        fill = group_sums(area[open_faces], inverse, count) / (extent[:, 0] * extent[:, 1])
        small = extent.amax(1) <= MIN_TILE_TEXELS
        done = (fill >= TILE_MIN_FILL) | small | (cell <= MIN_TILE_TEXELS)
        keep = done[inverse]
        piece[open_faces[keep]] = next_piece + inverse[keep]
        next_piece += count
        open_faces = open_faces[~keep]
        cell //= 2
    return rank_by_first(piece)[0]
