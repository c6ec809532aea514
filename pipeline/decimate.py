"""Parallel quadric edge collapse on the mesh's device: a dense mesh brought down to a face
count in a few dozen whole-mesh rounds (simplify.py's method on CUDA).

Garland and Heckbert's quadric error (1997), collapsed in parallel rather than one edge at a
time: each round,
  1. the unique edges, each with its faces' count (1: open boundary, 2: manifold, more:
     non-manifold, whose vertices stay put);
  2. each edge's collapse: its ends' quadrics summed, the point minimising that sum (the
     better of the midpoint and the ends where the system is near singular, the boundary end
     where one end is on an open boundary and the other not), its error;
  3. the cheapest edges (ties in a hashed order), at most SHARE of them (so the order stays
     near the greedy one), each kept if it is the cheapest within two rings of both its ends
     (in PASSES passes, each clear of the edges kept before): the kept edges' ends are
     then neither shared nor adjacent, so no face holds two of them and their checks and
     collapses do not interact;
  4. each kept only if the link condition holds (its ends share as many neighbours as the
     edge has faces), the merged vertex keeps three neighbours (two on an open edge) and no
     face around it turns over (normal within ~78 degrees of before); an edge refused once
     does not compete again, and a round that keeps none ends the rounds;
  5. collapsed: the lower end (or the boundary end) moves to the point and takes the summed
     quadric; the edge's faces vanish.

On CUDA a round's modes (step 1's flags and refusals), selection (step 3's passes), checks
(step 4) and collapses (step 5) are Triton kernels (kernels/edge_modes.py,
independent_edges.py, collapse_checks.py, apply_collapses.py), with the point and error of
step 2 (kernels/edge_collapse.py); the torch twins give the same bits on any device. A round
waits on the host four times: for the edges' count, the chosen edges' count, the safe ones'
count and the faces left.

Quadrics are float64 in a frame scaled to the unit box. The vertices' first quadrics are
exact fixed-point group sums (kernels/segment_sums.py, the same bits in any order) and a
collapse adds two quadrics once, so the result does not depend on the order the hardware
works in: the same mesh gives the same bits on every run (ties in cost go by a hash of the
edge, then by a stable sort).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.apply_collapses import apply_collapses
from kernels.collapse_checks import collapse_checks
from kernels.edge_collapse import MODES, collapse_costs
from kernels.edge_modes import edge_modes
from kernels.independent_edges import independent_edges
from pipeline.face_graph import SegmentSums
from pipeline.winding import compact

__all__ = ["decimate"]

# The cheapest share of the collapsible edges that compete in one round. Measured (1024 and
# 384 grids, perf/RESULTS.md): 0.5 took 7-39% less time than 0.25, the surfaces as near.
SHARE = 0.5
# Edges sampled to place a round's SHARE threshold (every E // SAMPLE-th).
SAMPLE = 1 << 16
# Selection passes per round (each takes more edges clear of those taken before).
PASSES = 3
# Rounds at most (~8% of the faces a round measured at SHARE 0.25: 64 rounds take 5M faces
# to ~25k; where a budget needs more, simplify.py's slabs finish).
MAX_ROUNDS = 64
# A face around a collapse whose unit normal's dot with its old one falls below this turns.
FLIP_COS = 0.2
# Weight of the plane through an open boundary edge, perpendicular to its face (per squared
# edge length), that holds the boundary's shape.
BOUNDARY_WEIGHT = 1.0


def _plane_quadrics(normals: Tensor, points: Tensor, weights: Tensor) -> Tensor:
    """Unit normals [n, 3], a point on each plane [n, 3], weights [n] -> [n, 10] quadrics
    (a², ab, ac, b², bc, c², ad, bd, cd, d²) times the weight."""
    a, b, c = normals.unbind(1)
    d = -(normals * points).sum(1)
    q = torch.stack((a * a, a * b, a * c, b * b, b * c, c * c, a * d, b * d, c * d, d * d), 1)
    return q * weights[:, None]


def _unit(vectors: Tensor) -> tuple[Tensor, Tensor]:
    length = torch.linalg.vector_norm(vectors, dim=1)
    return vectors / length.clamp_min(1e-300)[:, None], length


def _edge_keys(faces: Tensor, vertex_count: int) -> Tensor:
    """[F * 3] each face corner's outgoing edge (corner k: k -> k+1) as low * V + high."""
    starts = faces.reshape(-1)
    ends = faces.roll(-1, 1).reshape(-1)  # a list index would wait on the host
    return torch.minimum(starts, ends) * vertex_count + torch.maximum(starts, ends)


def _edges(faces: Tensor, vertex_count: int) -> tuple[Tensor, Tensor, Tensor]:
    """-> low [E], high [E] (sorted by (low, high)), each edge's face count [E]."""
    unique, counts = torch.unique(_edge_keys(faces, vertex_count), return_counts=True)
    return unique // vertex_count, unique % vertex_count, counts


def _initial_quadrics(points: Tensor, faces: Tensor) -> Tensor:
    """[V, 10] each vertex's face planes (area weighted) and its open edges' boundary planes."""
    corners = points[faces]
    normals, twice_area = _unit(
        torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    )
    face_q = _plane_quadrics(normals, corners[:, 0], twice_area / 2)
    V = len(points)
    _unique, corner_edge, counts = torch.unique(
        _edge_keys(faces, V), return_inverse=True, return_counts=True
    )
    # Open edges: the plane through the edge, perpendicular to its face.
    open_corner = torch.nonzero(counts[corner_edge] == 1).squeeze(1)
    face = open_corner // 3
    start = faces.reshape(-1)[open_corner]
    end = faces.roll(-1, 1).reshape(-1)[open_corner]
    along = points[end] - points[start]
    side, _ = _unit(torch.linalg.cross(along, normals[face]))
    edge_q = _plane_quadrics(side, points[start], BOUNDARY_WEIGHT * (along * along).sum(1))
    sums = SegmentSums(torch.cat((faces.reshape(-1), start, end)), V)
    # A column at a time: the fixed-point words of all ten at once took ~8 GB at 5M faces.
    return torch.cat(
        [
            sums(
                torch.cat((face_q[:, j].repeat_interleave(3), edge_q[:, j], edge_q[:, j]))[:, None]
            )
            for j in range(10)
        ],
        1,
    )


def _priority(cost: Tensor) -> Tensor:
    """[E] distinct int64 keys ordering the edges by float32 cost, ties by a multiplicative
    hash of the edge's index (odd, so a bijection on 32 bits: no two keys are equal). On a
    flat region every cost is 0, and ties in edge order would run one way across it, leaving
    one edge a region cheapest within its rings where a scattered order leaves many."""
    bits = cost.clamp_min(0).float().view(torch.int32).long()  # +inf's bits are the largest
    index = torch.arange(len(cost), device=cost.device)
    return (bits << 32) | ((index * 2_654_435_761) & 0xFFFF_FFFF)


def _threshold(priority: Tensor, allowed: Tensor) -> Tensor:
    """0-d: the key below which about SHARE of the allowed edges lie, from an even sample of
    at most ~2 SAMPLE keys (no full sort, no host sync)."""
    stride = max(1, len(priority) // SAMPLE)
    big = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(allowed, priority, big)[::stride]).values
    at = (allowed[::stride].sum() * SHARE).long().clamp(1, len(ordered) - 1)
    return ordered.index_select(0, at.view(1)).squeeze(0)  # `ordered[at]` waits on the host


def _independent(low: Tensor, high: Tensor, rank: Tensor, candidate: Tensor, V: int) -> Tensor:
    """Candidate edges no two of which have ends that are the same or adjacent, in PASSES
    passes (kernels/independent_edges.py) -> their indices, ascending. rank [E]: distinct
    int64 keys, the cheapest lowest."""
    return torch.nonzero(independent_edges(low, high, rank, candidate, V, PASSES)).squeeze(1)


def decimate(positions: Tensor, faces: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """positions [V, 3] float32, faces [F, 3] int64 (welded, no degenerate face), on any
    device -> float32 positions and int64 faces of the vertices still used, with target or
    target - 1 faces (more where the mesh runs out of safe collapses). Vertices no collapse
    kept keep their exact positions."""
    V = len(positions)
    if len(faces) <= target or V == 0:
        return positions, faces
    lo, hi = positions.amin(0), positions.amax(0)
    center, extent = (lo + hi).double() / 2, float((hi - lo).amax()) or 1.0
    points = (positions.double() - center) / extent
    q = _initial_quadrics(points, faces)
    moved = torch.zeros(V, dtype=torch.bool, device=positions.device)
    # Edges (low * V + high) refused by the link or turn test: they do not compete again.
    rejected = torch.zeros(0, dtype=torch.int64, device=faces.device)
    for _ in range(MAX_ROUNDS):
        needed = (len(faces) - target + 1) // 2  # collapses: most remove two faces
        if needed <= 0:
            break
        low, high, counts = _edges(faces, V)
        # Vertices on an open edge may only slide along it (one open end of an interior edge:
        # the collapse goes to it); those on a non-manifold edge stay.
        mode, on_open = edge_modes(low, high, counts, rejected, V)
        allowed = mode != MODES["refused"]
        target_points, cost = collapse_costs(q, points, low, high, mode)
        priority = _priority(cost)
        candidate = allowed & (priority < _threshold(priority, allowed))
        chosen = _independent(low, high, priority, candidate, V)
        if len(chosen) == 0:
            break
        if len(chosen) > needed:  # no more than the target needs: the cheapest
            chosen = torch.sort(chosen[torch.argsort(priority[chosen])[:needed]]).values
        ok = collapse_checks(points, faces, low, high, counts, chosen, target_points, FLIP_COS)
        S, safe = len(chosen), int(ok.sum())
        if safe < S:  # the refused first (a stable sort: no wait for their count)
            refused = chosen[torch.sort(ok.to(torch.uint8), stable=True).indices[: S - safe]]
            # Not refused before (they were allowed) and distinct: a sort keeps them unique.
            rejected = torch.sort(torch.cat((rejected, low[refused] * V + high[refused]))).values
        if safe == 0:  # nothing safe among the cheapest: stop (bounded on soups)
            break
        faces = apply_collapses(
            points, q, moved, faces, low, high, counts, on_open, chosen, ok, target_points
        )
    return compact(
        torch.where(moved[:, None], (points * extent + center).float(), positions), faces
    )
