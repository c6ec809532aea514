"""independent_edges: the torch twin against a numpy reference of the rule, the Triton kernels
(natively or interpreted) against the twin, the taken edges' ends neither shared nor adjacent,
and bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.independent_edges import (
    _independent_torch,
    _independent_triton,
    independent_edges,
)

NONE = np.iinfo(np.int64).max


def independent_np(
    low: np.ndarray, high: np.ndarray, rank: np.ndarray, candidate: np.ndarray, V: int, passes: int
) -> np.ndarray:
    """The rule as written: per pass, each vertex's lowest candidate rank, each vertex's lowest
    over itself and its neighbours, the candidates lowest at both ends taken, the closed
    neighbourhoods of their ends claimed, the candidates touching a claimed vertex dropped."""
    taken = np.zeros(len(low), dtype=bool)
    candidate = candidate.copy()
    for _ in range(passes):
        near = np.full(V, NONE)
        np.minimum.at(near, low[candidate], rank[candidate])
        np.minimum.at(near, high[candidate], rank[candidate])
        ring = near.copy()
        np.minimum.at(ring, low, near[high])
        np.minimum.at(ring, high, near[low])
        pick = candidate & (ring[low] == rank) & (ring[high] == rank)
        taken |= pick
        at_end = np.zeros(V, dtype=bool)
        at_end[low[pick]] = at_end[high[pick]] = True
        claimed = at_end.copy()
        claimed[low[at_end[high]]] = True
        claimed[high[at_end[low]]] = True
        candidate &= ~(claimed[low] | claimed[high])
    return taken


def grid_edges(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unique edges of an n x n vertex grid cut into triangles, low < high."""
    index = torch.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    pairs = torch.cat(
        [
            torch.stack((x.reshape(-1), y.reshape(-1)), 1)
            for x, y in ((a, b), (a, c), (b, c), (b, d), (c, d))
        ]
    )
    pairs = torch.unique(torch.sort(pairs, 1).values, dim=0)
    return pairs[:, 0].contiguous(), pairs[:, 1].contiguous()


def random_case(seed: int, kind: str, size: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    if kind == "grid":
        low, high = grid_edges(size)
        V = size * size
    else:  # random graph: repeated vertices, stars, isolated vertices
        V = size
        ends = torch.randint(0, V, (2, 3 * size), generator=generator)
        ends = ends[:, ends[0] != ends[1]]
        low, high = ends.min(0).values, ends.max(0).values
    E = len(low)
    rank = torch.randperm(E, generator=generator) * 7919 + 3  # distinct, not the edge order
    candidate = torch.rand(E, generator=generator) < 0.6
    return low, high, rank, candidate, V


CASES = [
    (1, "grid", 2),
    (2, "grid", 9),
    (3, "grid", 40),
    (4, "random", 1),
    (5, "random", 30),
    (6, "random", 600),
]


@pytest.mark.parametrize(("seed", "kind", "size"), CASES)
@pytest.mark.parametrize("passes", [1, 3])
def test_torch_twin_matches_numpy(seed: int, kind: str, size: int, passes: int) -> None:
    low, high, rank, candidate, V = random_case(seed, kind, size)
    expected = independent_np(low.numpy(), high.numpy(), rank.numpy(), candidate.numpy(), V, passes)
    got = _independent_torch(low, high, rank, candidate, V, passes)
    assert np.array_equal(got.numpy(), expected)
    if size > 2:
        assert expected.sum() > 0


@pytest.mark.parametrize(("seed", "kind", "size"), CASES)
@pytest.mark.parametrize("passes", [1, 3])
def test_triton_gives_the_twins_edges(
    triton_device: str, seed: int, kind: str, size: int, passes: int
) -> None:
    low, high, rank, candidate, V = random_case(seed, kind, size)
    expected = _independent_torch(low, high, rank, candidate, V, passes)
    got = _independent_triton(
        *(t.to(triton_device) for t in (low, high, rank, candidate)), V, passes
    )
    assert got.dtype == torch.bool and torch.equal(got.cpu(), expected)


def test_triton_full_size(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    low, high, rank, candidate, V = random_case(7, "grid", 1200)
    args = [t.to(triton_device) for t in (low, high, rank, candidate)]
    assert torch.equal(_independent_triton(*args, V, 3), _independent_torch(*args, V, 3))


def test_taken_edges_are_candidates_with_ends_neither_shared_nor_adjacent(device: str) -> None:
    low, high, rank, candidate, V = random_case(8, "grid", 30)
    taken = independent_edges(*(t.to(device) for t in (low, high, rank, candidate)), V, 3).cpu()
    assert taken.sum() > 20 and not (taken & ~candidate).any()
    owner = torch.full((V,), -1)
    owner[low[taken]] = torch.arange(int(taken.sum()))
    assert (owner[high[taken]] == -1).all()  # no end shared
    owner[high[taken]] = torch.arange(int(taken.sum()))
    # No edge of the mesh joins the ends of two different taken edges.
    a, b = owner[low], owner[high]
    assert not ((a >= 0) & (b >= 0) & (a != b)).any()


def test_more_passes_take_more_edges_and_keep_the_first_passes() -> None:
    low, high, rank, candidate, V = random_case(9, "grid", 30)
    one = _independent_torch(low, high, rank, candidate, V, 1)
    three = _independent_torch(low, high, rank, candidate, V, 3)
    assert three.sum() > one.sum() and not (one & ~three).any()


def test_no_edges(device: str) -> None:
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    taken = independent_edges(empty, empty, empty, empty.bool(), 5, 3)
    assert taken.shape == (0,) and taken.dtype == torch.bool


def test_bad_arguments_are_refused() -> None:
    low, high, rank, candidate, V = random_case(10, "grid", 4)
    with pytest.raises(ValueError, match="must be \\[E\\]"):
        independent_edges(low, high[1:], rank, candidate, V, 3)
    with pytest.raises(ValueError, match="int64"):
        independent_edges(low.int(), high, rank, candidate, V, 3)
    with pytest.raises(ValueError, match="candidate must be bool"):
        independent_edges(low, high, rank, candidate.int(), V, 3)
    with pytest.raises(ValueError, match="passes"):
        independent_edges(low, high, rank, candidate, V, 0)
