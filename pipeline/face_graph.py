"""Face adjacency and per-group reductions in torch, on the mesh's device, deterministic.

- `edge_pairs`: the two faces across every edge shared by exactly two faces (a sort of the
  undirected edge keys; an edge of three or more faces joins nothing).
- `components`: connected components by hooking and pointer jumping (Shiloach and Vishkin
  1982): every edge hooks the larger of its ends' labels under the smaller (an integer
  `scatter_reduce` amin, order-free), then each label jumps to its label's label (three times
  a round, a host check for a settled forest every two rounds); O(log n) rounds, each a few
  kernels. The label of a component is its smallest member, so the result depends only on the
  graph (kernels/components.py gives the argument). On CUDA, graphs up to
  ONE_PROGRAM_MAX_EDGES edges run the same rule in one Triton program instead
  (kernels/components.py: one launch, no host checks); on the CPU, scipy's union-find.
- `SegmentSums`, `group_sums`: float sums per group, exact and order-free: the values in
  fixed point (two int64 words) through one integer prefix sum over the elements sorted by
  group. `index_add_` would use floating-point atomics on CUDA, and torch documents a float
  `cumsum` on CUDA as nondeterministic too (its scan's association varies); integer
  addition is associative, so every run gives the same bits.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from kernels import triton_available
from kernels.components import components_one_program
from kernels.segment_sums import fixed_point_sums

__all__ = [
    "SegmentSums",
    "components",
    "components_hooking",
    "components_scipy",
    "edge_pairs",
    "flat_rows",
    "group_sums",
    "rank_by_first",
    "take_rows",
]

# Rounds of hooking before giving up; log2 of any face count we see is far below.
MAX_ROUNDS = 64
# The hooking's rounds between host checks, and pointer jumps a round (a chain 8 times shorter
# each round). On the H100 against a check after every round and every jump: the prompts' UV
# meshes (bake.uv_charts, 160k edges) 1.24-1.74 -> 0.52-0.90 ms, a shuffled 100k path 3.68 ->
# 1.41, the same labels (perf/RESULTS.md, 2026-11-25).
ROUNDS_PER_CHECK, JUMPS_PER_ROUND = 2, 3
# Graphs on CUDA up to this many edges take one Triton program (kernels/components.py), which
# works through them a block at a time; larger ones the hooking's parallel rounds. H200, paths
# in random order: one program 0.17 ms against 1.53 at 4k edges, 0.55 / 1.93 at 16k, even at
# 65k (2.09 / 2.24), 9.1 / 2.6 at 261k (perf/RESULTS.md). With the hooking's checks every two
# rounds (H100): 0.20 / 0.93 at 4k, 0.63 / 1.17 at 16k, 1.32 / 1.16 at 32k: near break-even.
ONE_PROGRAM_MAX_EDGES = 1 << 15
# `rank_by_first` numbers labels through a table of `bound` entries up to this many per element.
DENSE_RANK_PER_ELEMENT = 16


def edge_pairs(
    faces: torch.Tensor, vertices: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """faces [F, 3] -> (face_a, face_b) across every edge used by exactly two faces.

    vertices: the vertex count when the caller knows it (no wait for the largest index)."""
    F = len(faces)
    if F == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=faces.device)
        return empty, empty
    starts = faces.reshape(-1)
    ends = faces[:, [1, 2, 0]].reshape(-1)
    lo, hi = torch.minimum(starts, ends), torch.maximum(starts, ends)
    key = lo * (int(faces.max()) + 1 if vertices is None else vertices) + hi
    key, order = torch.sort(key, stable=True)
    owner = torch.div(order, 3, rounding_mode="floor")
    same = key[1:] == key[:-1]
    no = torch.zeros(1, dtype=torch.bool, device=faces.device)
    before, after = torch.cat((no, same[:-1])), torch.cat((same[1:], no))
    first = torch.nonzero(same & ~before & ~after).squeeze(1)
    return owner[first], owner[first + 1]


def components(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n] int64 label per node (its component's smallest node) joined by the edges (a, b)."""
    if len(a) == 0:
        return torch.arange(n, device=a.device)
    if a.device.type == "cpu":  # scipy's union-find is faster on the host; same labels
        return components_scipy(n, a, b)
    if len(a) <= ONE_PROGRAM_MAX_EDGES and triton_available():  # one launch, no host checks
        return components_one_program(n, a, b)
    return components_hooking(n, a, b)


def components_hooking(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`components` by hooking and pointer jumping, on any device: ROUNDS_PER_CHECK rounds
    of a hooking and JUMPS_PER_ROUND jumps between host checks for a settled forest; past
    MAX_ROUNDS rounds, rounds that each jump until stable, from where it got to."""
    label = torch.arange(n, device=a.device)
    for _ in range(0, MAX_ROUNDS, ROUNDS_PER_CHECK):
        for _ in range(ROUNDS_PER_CHECK):
            label = _hooked(label, a, b)
            for _ in range(JUMPS_PER_ROUND):
                label = label[label]
        # Every edge within one label and every label a root: each component then carries
        # one label, its smallest node (kernels/components.py's argument).
        if bool(((label[a] == label[b]).all() & (label[label] == label).all()).item()):
            return label
    for _ in range(MAX_ROUNDS):
        hooked = _hooked(label, a, b)
        while True:  # pointer jumping: each label to its root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, label):
            return label
        label = hooked
    raise RuntimeError(f"components did not settle in {2 * MAX_ROUNDS} rounds")


def _hooked(label: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One hooking: each edge's larger label takes the smaller (an integer amin, order-free)."""
    la, lb = label[a], label[b]
    return label.scatter_reduce(0, torch.maximum(la, lb), torch.minimum(la, lb), "amin")


def components_scipy(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`components` by scipy's union-find, on the host."""
    graph = sp.coo_matrix((np.ones(len(a), np.int8), (a.numpy(), b.numpy())), shape=(n, n))
    found = connected_components(graph.tocsr(), directed=False)[1]
    # Relabel each component by its smallest node, as the hooking does.
    smallest = np.full(found.max() + 1, n, np.int64)
    np.minimum.at(smallest, found, np.arange(n))
    return torch.from_numpy(smallest[found])


def rank_by_first(label: torch.Tensor, bound: int | None = None) -> tuple[torch.Tensor, int]:
    """Renumber labels 0..C-1 in order of their first element -> (dense [n], C).

    bound: when given, every label lies in 0..bound-1. Up to DENSE_RANK_PER_ELEMENT labels an
    element, a table of each label's first element then replaces `torch.unique`'s sort and the
    argsort of the firsts (the atlas's small meshes are bound by launches and waits);
    the same numbers either way, every value an integer.
    """
    n = len(label)
    if n == 0:
        return label.clone(), 0
    index = torch.arange(n, device=label.device)
    if bound is not None and bound <= DENSE_RANK_PER_ELEMENT * n:
        first = torch.full((bound,), n, device=label.device)
        first_of = first.scatter_reduce(0, label, index, "amin")[label]
        # A label's number: how many labels opened (met their first element) up to its first.
        opened = torch.cumsum(first_of == index, 0) - 1
        return opened[first_of], int(opened[-1]) + 1
    unique, inverse = torch.unique(label, return_inverse=True)
    first = torch.full((len(unique),), n, device=label.device)
    first = first.scatter_reduce(0, inverse, index, "amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(len(unique), device=label.device)
    return rank[inverse], len(unique)


class SegmentSums:
    """Sums of float64 values into groups, the same bits on every run and device kind
    (for values of magnitude below 2^900 / n, far beyond any geometry here).

    The elements are sorted by group once; each call sums the groups' stretches in fixed
    point (kernels/segment_sums.py: 2^bits over the largest possible total, then what that
    rounds away in a second word as fine again, so small values keep float64's precision
    beside large ones; one int64 scan).
    """

    def __init__(self, group: torch.Tensor, count: int) -> None:
        """group [n] in 0..count-1 (any order)."""
        self.order = torch.argsort(group, stable=True)
        sorted_group = group[self.order]
        every = torch.arange(count, device=group.device)
        self.ends = torch.searchsorted(sorted_group, every, right=True)
        self.starts = torch.searchsorted(sorted_group, every, right=False)
        self._rows: dict[int, torch.Tensor] = {}

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """values [n, k] in the groups' element order -> [count, k] float64 sums."""
        k = values.shape[1]
        if k not in self._rows:
            self._rows[k] = flat_rows(self.order, k)
        return self.sorted(take_rows(values, self._rows[k]))

    def sorted(self, ordered: torch.Tensor) -> torch.Tensor:
        """values [n, k] already sorted by group (`order`) -> [count, k] float64 sums."""
        return fixed_point_sums(ordered.double(), self.starts, self.ends)


def flat_rows(index: torch.Tensor, k: int) -> torch.Tensor:
    """Element indices of rows `index` [...] of a contiguous [n, k] table -> [..., k]."""
    return index[..., None] * k + torch.arange(k, device=index.device)


def take_rows(table: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Rows of table [n, k] at `flat_rows` indices -> [..., k]. Element by element: CUDA's
    row gather of 16-byte rows ran at ~30 GB/s on the H100, the element-wise take far
    faster."""
    return torch.take(table.contiguous(), flat)


def group_sums(values: torch.Tensor, group: torch.Tensor, count: int) -> torch.Tensor:
    """values [n] or [n, k], group [n] in 0..count-1 -> [count] or [count, k] float64 sums."""
    sums = SegmentSums(group, count)(values.double().reshape(len(group), -1))
    return sums.reshape(count, *values.shape[1:])
