"""Face clean-up and consistent outward winding on the device: topology.py's recipe in torch,
for a mesh already on the GPU (on the H100 host the numpy path took ~100 ms of an 80k-face
generation's critical path, perf/RESULTS.md).

The same faces out as `topology.clean_faces` and `topology.orient_outward` wherever the
manifold pieces can be wound consistently (tested against them); they differ in how a piece
that cannot (a Moebius strip) is cut:
  1. `manifold_pairs`: the faces on every edge used by exactly two faces, and whether they walk
     it the same way (then one of them must turn);
  2. each face's parity relative to the smallest face of its piece, by hooking with parities:
     every round, each root with an edge to a smaller root hooks under the smallest such root
     (ties to the lowest edge: integer `amin`, no float atomics), taking the parity that edge
     implies; pointer jumping then composes the parities down to the roots. The roots at
     least halve every two rounds, so a piece of n faces settles in about 2 log2(n) rounds;
     on an inconsistent piece the edges hooked decide where the seam falls, where topology.py
     uses a breadth-first tree;
  3. each piece whose signed volume (an exact group sum) is negative turns as a whole.
"""

from __future__ import annotations

import torch

from pipeline.face_graph import group_sums
from pipeline.topology import drop_degenerate

__all__ = ["clean_faces", "compact", "manifold_pairs", "orient_outward"]

# Hooking rounds at most: 2 log2(n) + 2 would do for n < 2^62 faces.
MAX_ROUNDS = 128


def _stable_order(keys: torch.Tensor) -> torch.Tensor:
    """[N, K] non-negative integer rows -> their stable order, first column first (one sort
    of the rows packed into an int64 where they fit, else one stable sort per column)."""
    base = int(keys.max()) + 1 if keys.numel() else 1
    if base ** keys.shape[1] < 1 << 62:
        packed = keys[:, 0].clone()
        for column in range(1, keys.shape[1]):
            packed = packed * base + keys[:, column]
        return torch.argsort(packed, stable=True)
    order = torch.arange(len(keys), device=keys.device)
    for column in reversed(range(keys.shape[1])):  # least significant first, each stable
        order = order[torch.argsort(keys[order, column], stable=True)]
    return order


def clean_faces(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """positions [V, 3], faces [F, 3] int64 -> the non-degenerate faces, each vertex triple
    once (the first occurrence, whatever its order or winding), in their original order."""
    faces = drop_degenerate(positions, faces)
    if len(faces) == 0:
        return faces
    triples = torch.sort(faces, dim=1).values
    order = _stable_order(triples)
    sorted_triples = triples[order]
    repeat = torch.zeros(len(faces), dtype=torch.bool, device=faces.device)
    repeat[1:] = (sorted_triples[1:] == sorted_triples[:-1]).all(dim=1)
    keep = torch.ones_like(repeat)
    keep[order[repeat]] = False  # the stable order put the lowest index of each triple first
    return faces[keep]


def compact(
    positions: torch.Tensor, faces: torch.Tensor, index_dtype: torch.dtype = torch.int64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vertices the faces use, in their order, and the faces renumbered to them (as
    index_dtype)."""
    used = torch.zeros(len(positions), dtype=torch.bool, device=positions.device)
    used[faces.reshape(-1)] = True
    new_index = torch.cumsum(used, 0, dtype=index_dtype) - 1
    return positions[used], new_index[faces]


def manifold_pairs(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(face_a, face_b, flip) for every edge shared by exactly two faces, in the order of
    the edges' (low, high) vertex pairs; flip: both walk it the same way."""
    F = len(faces)
    starts = faces.reshape(-1)
    ends = faces[:, [1, 2, 0]].reshape(-1)
    lo, hi = torch.minimum(starts, ends), torch.maximum(starts, ends)
    edge_faces = torch.arange(F, device=faces.device).repeat_interleave(3)
    forward = starts < ends
    order = _stable_order(torch.stack((lo, hi), dim=1))
    lo, hi, edge_faces, forward = lo[order], hi[order], edge_faces[order], forward[order]
    same_as_next = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
    # An edge used exactly twice: equal to the next, and neither the one before nor after that.
    false = same_as_next.new_zeros(1)
    prev_same = torch.cat((false, same_as_next[:-1]))
    next_next_same = torch.cat((same_as_next[1:], false))
    first = torch.nonzero(same_as_next & ~prev_same & ~next_next_same).squeeze(1)
    flip = forward[first] == forward[first + 1]
    return edge_faces[first], edge_faces[first + 1], flip


def _jump(up: torch.Tensor, parity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointer jumping until every node points at its root, composing the parities (a root's
    parity is 0) -> (root [n], parity to the root [n])."""
    while True:
        upper = up[up]
        if torch.equal(upper, up):
            return up, parity
        parity = parity ^ parity[up]
        up = upper


def face_parities(
    count: int, a: torch.Tensor, b: torch.Tensor, flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """count faces, pairs (a, b, flip) -> (root [count]: the smallest face of each one's
    piece, parity [count] int64: 1 where the face must turn to agree with its root)."""
    up = torch.arange(count, device=a.device)
    parity = torch.zeros(count, dtype=torch.int64, device=a.device)
    flip = flip.long()
    edges = len(a)
    edge = torch.arange(edges, device=a.device)
    none = count * max(edges, 1)  # above every key
    for _ in range(MAX_ROUNDS):
        ra, rb = up[a], up[b]
        across = torch.nonzero(ra != rb).squeeze(1)
        if len(across) == 0:
            return up, parity
        low = torch.minimum(ra[across], rb[across])
        high = torch.maximum(ra[across], rb[across])
        best = torch.full((count,), none, dtype=torch.int64, device=a.device)
        best = best.scatter_reduce(0, high, low * edges + edge[across], "amin")
        roots = torch.nonzero(best < none).squeeze(1)
        chosen = best[roots] % edges
        up[roots] = best[roots] // edges
        parity[roots] = parity[a[chosen]] ^ parity[b[chosen]] ^ flip[chosen]
        up, parity = _jump(up, parity)
    raise RuntimeError(f"face parities did not settle in {MAX_ROUNDS} rounds")


def orient_outward(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """positions [V, 3], faces [F, 3] int64 -> faces [F, 3] re-wound consistently and
    outward."""
    F = len(faces)
    if F == 0:
        return faces
    a, b, flip = manifold_pairs(faces)
    root, parity = face_parities(F, a, b, flip)
    faces = torch.where(parity[:, None].bool(), faces.flip(1), faces)
    p = positions.double()
    corners = p[faces]  # [F, 3, 3]
    signed = (corners[:, 0] * torch.linalg.cross(corners[:, 1], corners[:, 2], dim=1)).sum(1)
    volume = group_sums(signed, root, F)
    inward = volume[root] < 0
    return torch.where(inward[:, None], faces.flip(1), faces).contiguous()
