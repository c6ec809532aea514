"""Face adjacency and per-group reductions in torch, on the mesh's device, deterministic.

- `edge_pairs`: the two faces across every edge shared by exactly two faces (a sort of the
  undirected edge keys; an edge of three or more faces joins nothing).
- `components`: connected components by hooking and pointer jumping (Shiloach and Vishkin
  1982): every edge hooks the larger of its two roots under the smaller (an integer
  `scatter_reduce` amin, order-free), then each label jumps to its label's label until
  stable; O(log n) rounds, each a few kernels and one host check. The label of a component
  is its smallest member, so the result depends only on the graph.
- `group_sums`: float sums per group through a float64 prefix sum over the elements sorted by
  group; `index_add_` would use floating-point atomics on CUDA, whose order varies.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

__all__ = [
    "components",
    "components_hooking",
    "components_scipy",
    "edge_pairs",
    "group_sums",
    "rank_by_first",
]

# Rounds of hooking before giving up; log2 of any face count we see is far below.
MAX_ROUNDS = 64


def edge_pairs(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """faces [F, 3] -> (face_a, face_b) across every edge used by exactly two faces."""
    F = len(faces)
    if F == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=faces.device)
        return empty, empty
    starts = faces.reshape(-1)
    ends = faces[:, [1, 2, 0]].reshape(-1)
    lo, hi = torch.minimum(starts, ends), torch.maximum(starts, ends)
    key = lo * (int(faces.max()) + 1) + hi
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
    return components_hooking(n, a, b)


def components_hooking(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`components` by hooking and pointer jumping, on any device."""
    label = torch.arange(n, device=a.device)
    for _ in range(MAX_ROUNDS):
        la, lb = label[a], label[b]
        lo, hi = torch.minimum(la, lb), torch.maximum(la, lb)
        hooked = label.scatter_reduce(0, hi, lo, "amin")
        while True:  # pointer jumping: each label to its root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, label):
            return label
        label = hooked
    raise RuntimeError(f"components did not settle in {MAX_ROUNDS} rounds")


def components_scipy(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`components` by scipy's union-find, on the host."""
    graph = sp.coo_matrix((np.ones(len(a), np.int8), (a.numpy(), b.numpy())), shape=(n, n))
    found = connected_components(graph.tocsr(), directed=False)[1]
    # Relabel each component by its smallest node, as the hooking does.
    smallest = np.full(found.max() + 1, n, np.int64)
    np.minimum.at(smallest, found, np.arange(n))
    return torch.from_numpy(smallest[found])


def rank_by_first(label: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Renumber labels 0..C-1 in order of their first element -> (dense [n], C)."""
    if len(label) == 0:
        return label.clone(), 0
    unique, inverse = torch.unique(label, return_inverse=True)
    index = torch.arange(len(label), device=label.device)
    first = torch.full((len(unique),), len(label), device=label.device)
    first = first.scatter_reduce(0, inverse, index, "amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(len(unique), device=label.device)
    return rank[inverse], len(unique)


def group_sums(values: torch.Tensor, group: torch.Tensor, count: int) -> torch.Tensor:
    """values [n] or [n, k], group [n] in 0..count-1 -> [count] or [count, k] float64 sums."""
    order = torch.argsort(group, stable=True)
    # Columns as contiguous rows: CUDA's scan along the long axis of [n, k] is very slow.
    ordered = values[order].double().reshape(len(order), -1).T.contiguous()  # [k, n]
    prefix = torch.cumsum(ordered, 1)
    prefix = torch.cat((torch.zeros_like(prefix[:, :1]), prefix), 1)
    ends = torch.searchsorted(group[order], torch.arange(count, device=group.device), right=True)
    starts = torch.cat((torch.zeros(1, dtype=ends.dtype, device=ends.device), ends[:-1]))
    sums = (prefix[:, ends] - prefix[:, starts]).T  # [count, k]
    return sums.reshape(count, *values.shape[1:])
