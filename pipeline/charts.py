"""Charts for the atlas: faces grouped by normal cone, projected along the cone's axis (torch).

1. Each face takes the one of DIRECTIONS (the six axes) its normal, averaged over a few rings
   of neighbours, is closest to (its own nearest axis where that one faces it too badly).
2. A few rounds of neighbour voting move a face to the label most of its neighbours carry when
   it still faces that direction well enough (SMOOTH_MIN_COS); this removes the speckle of
   tiny charts where a normal hovers between two directions.
3. A chart is a connected piece (through edges of exactly two faces) of faces with one label;
   charts of fewer than SMALL_CHART_FACES faces dissolve into a neighbour's label where every
   face allows it.
4. A chart is projected orthographically along its mean normal where every face of it is
   within SMOOTH_MIN_COS of that (the direction of largest projected area: a tilted flat
   chart keeps its true size), else along its axis, which every face is within by step 2.
   So no triangle flips and texel density varies by at most 1 / SMOOTH_MIN_COS, and
   pipeline/relax.py then relaxes each chart towards its true shape. Where the surface is pleated
   (simplification leaves a few fold-overs) two faces of a chart can still cover the same
   point: `pleated_faces` finds those around each vertex without a texel grid, and the
   atlas's raster catches the rest.
5. `tile_charts` cuts charts into pieces along a quadtree in the chart's plane wherever the
   pieces' boxes, gutters included, take less texture than the whole: a silhouette with
   holes becomes a few nearly full tiles, a full rectangle stays whole unless it is longer
   than the texture at the expected scale (a plank, a blade, a pole), which is cut into
   tiles that fit rather than shrink every chart to its length.
Everything runs on the mesh's device, deterministic (integer atomics and stable sorts only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from pipeline.face_graph import (
    SegmentSums,
    components,
    edge_pairs,
    flat_rows,
    group_sums,
    rank_by_first,
    take_rows,
)

__all__ = [
    "DIRECTIONS",
    "Charts",
    "chart_directions",
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
# Tiles: the cell sides (texels) of the quadtree levels below the whole chart. Measured on
# the CPU (axis projection, shelf packing only) against fixed 128 -> 64 cells split while a
# piece fills less than 0.55 of its box: utilisation 0.52 -> 0.57 (Duck), 0.37 -> 0.58
# (CesiumMilkTruck), 0.39 -> 0.45 (prompt 1), with a quarter (Duck) to a half
# (CesiumMilkTruck) of the pieces; a 1024 level above changed nothing.
TILE_LEVELS = (512, 256, 128, 64, 32)
# A node whose box, at the expected scale, is longer than the texture's side less the gutter
# cannot be laid at that scale: the packing would shrink everything to fit it (a 10 x 1 x 0.2
# plank got utilisation 0.24, a 10:1 flat strip 0.10). Such a node costs this many texture
# areas more than its box, so the cut first leaves as few of them as it can (none, unless a
# face is that long), then the least box area.
OVERSIZE_PENALTY = 1e3


@dataclass(frozen=True)
class Charts:
    """A chart id and a direction per face."""

    chart_of_face: torch.Tensor  # [F] int64, charts numbered 0..count-1 by first face
    direction_of_face: torch.Tensor  # [F] int64 index into DIRECTIONS
    count: int


def _face_cross(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] float64 normals of length twice the face's area."""
    p = positions.double()
    return torch.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]], dim=1)


def face_normals(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] float64 unit normals (zero for degenerate faces)."""
    n = _face_cross(positions, faces)
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
        votes = _counts(pairs, F * K).reshape(F, K)
        favourite = torch.argmax(votes, dim=1)
        own, best = votes[every, label], votes[every, favourite]
        move = (best > own) & (best >= 2) & (score[every, favourite] >= SMOOTH_MIN_COS)
        label = torch.where(move, favourite, label)
    chart = components(F, *_joined(a, b, label))
    candidates = _candidates(a, b)
    for _ in range(MERGE_ROUNDS):
        label, moved = _dissolve_small(score, label, chart, candidates)
        if not moved:
            break
        chart = components(F, *_joined(a, b, label))
    dense, count = rank_by_first(chart, bound=F)  # a component's smallest face
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
    sums = SegmentSums(neighbour, F)
    other = flat_rows(torch.cat((b, a))[sums.order], 3)  # each face's neighbours, grouped
    smooth = normals.double()
    for _ in range(NORMAL_SMOOTH_ROUNDS):
        smooth = smooth + sums.sorted(take_rows(smooth, other))
        smooth = smooth / smooth.norm(dim=1, keepdim=True).clamp_min(1e-30)
    label = torch.argmax(smooth @ DIRECTIONS.to(normals.device).T, dim=1)
    every = torch.arange(F, device=normals.device)
    fits = score[every, label] >= SMOOTH_MIN_COS
    return torch.where(fits, label, torch.argmax(score, dim=1))


def _counts(values: torch.Tensor, size: int) -> torch.Tensor:
    """[size] int64: how often each of 0..size-1 occurs in `values`. Integer adds, where
    `torch.bincount` on CUDA reads the values' range on the host first (a wait each call)."""
    return torch.zeros(size, dtype=torch.int64, device=values.device).index_add_(
        0, values, torch.ones_like(values)
    )


def _joined(a: torch.Tensor, b: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The edges (a, b) whose faces share a label; the others as loops (b, b), which join
    nothing: masked rather than compacted, so nothing waits on the device for a count."""
    return torch.where(label[a] == label[b], a, b), b


class _Candidates(NamedTuple):
    """Every edge from a's side, then from b's: the labels a small chart's face may take, in
    a fixed order (masked rather than compacted, so nothing waits on the device for a count).
    """

    a: torch.Tensor
    b: torch.Tensor
    face: torch.Tensor  # a then b
    position: torch.Tensor  # each candidate's place in that order


def _candidates(a: torch.Tensor, b: torch.Tensor) -> _Candidates:
    face = torch.cat((a, b))
    return _Candidates(a, b, face, torch.arange(len(face), device=face.device))


def _dissolve_small(
    score: torch.Tensor, label: torch.Tensor, chart: torch.Tensor, candidates: _Candidates
) -> tuple[torch.Tensor, bool]:
    """Move the faces of small charts to the best-facing label among their other neighbours."""
    a, b = candidates.a, candidates.b
    if len(a) == 0:
        return label, False
    small = _counts(chart, len(chart))[chart] < SMALL_CHART_FACES
    across = chart[a] != chart[b]
    face, other = candidates.face, torch.cat((label[b], label[a]))
    valid = torch.cat((across & small[a], across & small[b]))
    cos = torch.where(valid, score[face, other], -math.inf)
    # Per face, the candidate with the best cosine; ties to the first candidate in order.
    best = torch.full_like(score[:, 0], -math.inf).scatter_reduce(0, face, cos, "amax")
    none = len(face)
    position = torch.where(valid & (cos == best[face]), candidates.position, none)
    first = torch.full_like(label, none).scatter_reduce(0, face, position, "amin")
    found = first < none
    chosen = torch.where(found, other[first.clamp_max(none - 1)], label)
    allowed = found & (score.gather(1, chosen[:, None])[:, 0] >= SMOOTH_MIN_COS)
    new_label = torch.where(allowed, chosen, label)
    return new_label, bool(allowed.any())


def separate(label: torch.Tensor, count: int, faces_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Give every face in `faces_mask` a label of its own; renumber labels by first face.

    A group that lost faces may now be in pieces; it stays one group, which is harmless: its
    pieces keep their relative layout, which had no overlap.
    """
    # The flagged faces take count, count + 1, ... in face order (a scan, not a compaction:
    # nothing waits on the device for how many there are).
    label = torch.where(faces_mask, count - 1 + torch.cumsum(faces_mask, 0), label)
    return rank_by_first(label, bound=count + len(label))


def isolate_faces(charts: Charts, faces_mask: torch.Tensor) -> Charts:
    """Give every face in `faces_mask` a chart of its own."""
    chart, count = separate(charts.chart_of_face, charts.count, faces_mask)
    return Charts(chart, charts.direction_of_face, count)


def _plane_bases(direction: torch.Tensor) -> torch.Tensor:
    """[C, 3] unit directions d -> [C, 2, 3] in-plane (u, v) with u x v = d (keeps winding)."""
    helper = torch.zeros_like(direction)
    helper[torch.arange(len(direction)), direction.abs().argmin(1)] = 1.0  # least aligned axis
    v = helper - (helper * direction).sum(1, keepdim=True) * direction
    v = v / v.norm(dim=1, keepdim=True)
    u = torch.cross(v, direction, dim=1)
    return torch.stack((u, v), 1)


def chart_directions(positions: torch.Tensor, faces: torch.Tensor, charts: Charts) -> torch.Tensor:
    """[C, 3] float64 unit direction each chart is projected along.

    The chart's mean normal (area-weighted) where every face of it is within SMOOTH_MIN_COS of
    it, else its axis (which every face is within by construction). Of all directions the mean
    normal gives the chart the largest projected area, so the most texels at a given scale,
    and it lays a flat chart out without shrink whichever way it is tilted.
    """
    cross = _face_cross(positions, faces)
    length = cross.norm(dim=1, keepdim=True)
    axis_of_chart = torch.zeros(charts.count, dtype=torch.int64, device=faces.device)
    axis_of_chart[charts.chart_of_face] = charts.direction_of_face  # one axis per chart
    axes = DIRECTIONS.to(positions.device)[axis_of_chart]
    mean = group_sums(cross, charts.chart_of_face, charts.count)  # [C, 3]
    norm = mean.norm(dim=1, keepdim=True)
    mean = torch.where(norm > 0, mean / norm.clamp_min(1e-300), axes)
    # Degenerate faces have no normal and fit any direction.
    cos = torch.where(
        length[:, 0] > 0,
        ((cross / length.clamp_min(1e-300)) * mean[charts.chart_of_face]).sum(1),
        1.0,
    )
    least = torch.ones(charts.count, dtype=cos.dtype, device=cos.device)
    least = least.scatter_reduce(0, charts.chart_of_face, cos, "amin")
    return torch.where((least >= SMOOTH_MIN_COS)[:, None], mean, axes)


def project_charts(positions: torch.Tensor, faces: torch.Tensor, charts: Charts) -> torch.Tensor:
    """[F, 3, 2] float64 corner coordinates of every face in its chart's plane (model units),
    projected along `chart_directions`."""
    basis = _plane_bases(chart_directions(positions, faces, charts))[charts.chart_of_face]
    corners = positions.double()[faces]  # [F, 3, 3]
    return torch.einsum("fcx,fkx->fck", corners, basis)


# Elements a row of `_rows_running_max`'s first scan.
SCAN_ROW = 1024


def _running_max(values: torch.Tensor) -> torch.Tensor:
    """[N] int64 -> the running maximum, `torch.cummax(values, 0).values`: on CUDA by rows
    (one long scan there took ~0.7 ms for 240k values on the H100), elsewhere as it is."""
    return _rows_running_max(values) if values.is_cuda else torch.cummax(values, 0).values


def _rows_running_max(values: torch.Tensor, row: int = SCAN_ROW) -> torch.Tensor:
    """`torch.cummax(values, 0).values` for [N] integers: rows of `row` values scanned side by
    side, then each row raised to the largest value of the rows before it. Exact."""
    n = len(values)
    if n <= row:
        return torch.cummax(values, 0).values
    rows = -(-n // row)
    least = torch.iinfo(values.dtype).min
    padded = torch.cat((values, values.new_full((rows * row - n,), least)))
    within = padded.view(rows, row).cummax(1).values
    before = torch.cat((values.new_full((1,), least), within[:-1, -1].cummax(0).values))
    return torch.maximum(within, before[:, None]).reshape(-1)[:n]


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
    # (chart, vertex) as one key, vertex ids below 2^31: no host read of the largest id.
    group = (chart.repeat_interleave(3) << 31) | faces.reshape(-1)
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
    reach = _running_max(lifted) - lift
    clash = ~first & (s0 < reach - PLEAT_TOLERANCE_UNITS)
    # Going round: a wedge whose end passes a full turn beyond the fan's first start.
    fan_start = torch.full_like(group_id, len(g)).scatter_reduce(
        0, group_id, torch.arange(len(g), device=g.device), "amin"
    )
    first_start = s0[fan_start[group_id]]  # each fan's first start
    full_turn = round(turn / ANGLE_UNIT)
    clash |= ~first & (s1 - full_turn > first_start + PLEAT_TOLERANCE_UNITS)
    flagged = torch.empty_like(clash)
    flagged[order] = clash  # order is a permutation: no mask, so no host read of a count
    return flagged.reshape(F, 3).any(1)


# Tile keys: (level, chart, cell x, cell y) in one int64, the level on top, so one sort numbers
# the nodes of every level at once (levels in order, each level's nodes in key order).
LEVEL_SHIFT = 58
MAX_TILED_FACES = 1 << 26  # chart ids stay below bit 58 - 32


def _cell_keys(chart: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """[1 + len(TILE_LEVELS), F] int64 key of each face's node per level: its chart at level
    0, then (chart, the TILE_LEVELS cell holding its centroid)."""
    cells = torch.tensor(TILE_LEVELS, dtype=centroid.dtype, device=centroid.device)
    # Cells per chart axis stay far below 2^15 (charts span at most a few atlas widths).
    grid = torch.floor(centroid / cells[:, None, None]).long()  # [levels - 1, F, 2]
    grid = grid.clamp(-(1 << 15), (1 << 15) - 1) + (1 << 15)
    level = torch.arange(1, len(TILE_LEVELS) + 1, device=chart.device)[:, None] << LEVEL_SHIFT
    tiles = level | (chart << 32) | (grid[..., 0] << 16) | grid[..., 1]
    return torch.cat((chart[None], tiles))


def _grown_extent(lo: torch.Tensor, hi: torch.Tensor, gutter: int) -> torch.Tensor:
    """Boxes lo, hi [N, 2] (texels) -> their sides, at least a texel, grown by the gutter."""
    return (hi - lo).clamp_min(1.0) + gutter


def tile_charts(
    corners: torch.Tensor, chart: torch.Tensor, texels_per_unit: float, gutter: int, size: int
) -> tuple[torch.Tensor, int]:
    """-> ([F] int64 piece per face (0..P-1 by first face), P): charts cut where cutting saves
    texture.

    corners: [F, 3, 2] projected corners (model units); texels_per_unit: the expected scale;
    gutter: texels between pieces; size: the texture's side. The nodes of the tree are the
    whole chart, then its faces grouped by the TILE_LEVELS cell holding their centroid (each
    cell inside one of the level before). A node's cost is its bounding box grown by the
    gutter, in texels, plus OVERSIZE_PENALTY texture areas where the box is longer than the
    texture leaves room for (such a chart's cells start at its own corner); bottom-up, a node
    is cut into its children when their cheapest cuts cost less than it does, and each face's
    piece is the first node from the top that is not cut: the cut of least total cost. Every
    level's nodes are numbered, boxed and costed at once (one sort, one host read).
    """
    F = len(chart)
    if F == 0:
        return chart.clone(), 0
    if F >= MAX_TILED_FACES:
        raise ValueError(f"tile_charts takes fewer than {MAX_TILED_FACES} faces, not {F}")
    texels = corners * texels_per_unit
    centroid = texels.mean(1)  # [F, 2]
    lo, hi = texels.amin(1), texels.amax(1)  # [F, 2]
    # A chart too long for the texture is tiled from its own corner, so that its tiles start
    # full; the others keep the cells of the projection plane (tiling every chart from its
    # corner moved the prompts' PSNR by -0.40 to +0.39 dB, median 0: perf/RESULTS.md).
    by_chart = chart[:, None].expand(-1, 2)
    chart_lo = lo.new_full((F, 2), math.inf).scatter_reduce(0, by_chart, lo, "amin")
    chart_hi = hi.new_full((F, 2), -math.inf).scatter_reduce(0, by_chart, hi, "amax")
    too_long = (_grown_extent(chart_lo, chart_hi, gutter).amax(1) > size)[chart]
    centroid = centroid - torch.where(too_long[:, None], chart_lo[chart], 0.0)
    levels = 1 + len(TILE_LEVELS)
    keys, node = torch.unique(_cell_keys(chart, centroid), return_inverse=True)  # node [L, F]
    first = torch.searchsorted(keys >> LEVEL_SHIFT, torch.arange(levels + 1, device=keys.device))
    first = first.tolist()  # each level's first node; the one host read
    index = node.reshape(-1, 1).expand(-1, 2)
    box_lo = texels.new_full((len(keys), 2), math.inf).scatter_reduce(
        0, index, lo.repeat(levels, 1), "amin"
    )
    box_hi = texels.new_full((len(keys), 2), -math.inf).scatter_reduce(
        0, index, hi.repeat(levels, 1), "amax"
    )
    extent = _grown_extent(box_lo, box_hi, gutter)
    cost = extent[:, 0] * extent[:, 1]  # [nodes]
    too_long_node = (extent.amax(1) > size).to(cost.dtype)
    cost = cost + too_long_node * (OVERSIZE_PENALTY * size * size)
    parent = torch.empty(len(keys), dtype=torch.int64, device=chart.device)
    parent[node[1:].reshape(-1)] = node[:-1].reshape(-1)  # every face agrees
    # Bottom-up: the least cost of each node's subtree and whether it is cut.
    cut = torch.zeros(len(keys), dtype=torch.bool, device=chart.device)
    best = cost[first[-2] :]
    for level in range(levels - 2, -1, -1):
        here, below = slice(first[level], first[level + 1]), first[level + 1]
        children = group_sums(
            best, parent[below : below + len(best)] - first[level], here.stop - here.start
        )
        cut[here] = children < cost[here]
        best = torch.minimum(children, cost[here])
    # Each face's piece: its node at the first level from the top that is not cut.
    kept = (~cut[node]).to(torch.uint8)  # [L, F]; the last level is never cut
    top = torch.argmax(kept, dim=0)  # the first maximum: the first kept level
    piece = node.gather(0, top[None])[0]
    return rank_by_first(piece, bound=len(keys))
