"""face_graph: edge pairs agree with the numpy topology module, the hooking components agree
with scipy's on random graphs (and so on every device), group sums with numpy's, and labels
are renumbered by first appearance; group sums are exact, the same bits in any order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

import pipeline.face_graph as face_graph
from pipeline.face_graph import (
    ONE_PROGRAM_MAX_EDGES,
    components,
    components_hooking,
    components_scipy,
    edge_pairs,
    group_sums,
    rank_by_first,
)
from pipeline.topology import manifold_pairs
from tests.pipeline.conftest import DEVICES


def test_edge_pairs_match_manifold_pairs_with_a_fin_and_a_boundary() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    faces = np.asarray(sphere.faces, np.int64)
    # A fin on edge (faces[0][0], faces[0][1]): that edge now has three faces and joins none;
    # dropping the last face opens a boundary.
    fin = np.array([[faces[0][0], faces[0][1], len(sphere.vertices)]])
    faces = np.concatenate([faces[:-1], fin])
    a, b = edge_pairs(torch.from_numpy(faces))
    ref_a, ref_b, _ = manifold_pairs(faces)
    ours = {tuple(sorted(p)) for p in zip(a.tolist(), b.tolist(), strict=True)}
    theirs = {tuple(sorted(p)) for p in zip(ref_a.tolist(), ref_b.tolist(), strict=True)}
    assert ours == theirs
    # 480 edges of the sphere: the dropped face opens 3, the fin takes one pair away.
    assert len(ours) == len(a) == 480 - 3 - 1
    # Told a vertex count above the largest index (no wait for it), the same pairs in order.
    told = edge_pairs(torch.from_numpy(faces), len(sphere.vertices) + 5)
    assert torch.equal(told[0], a) and torch.equal(told[1], b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hooking_components_equal_scipys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    # Long chains (many rounds of hooking) plus random shortcuts.
    order = rng.permutation(n)
    chain = np.stack([order[:-1], order[1:]], 1)[rng.random(n - 1) < 0.97]
    extra = rng.integers(0, n, (200, 2))
    edges = torch.from_numpy(np.concatenate([chain, extra]))
    a, b = edges[:, 0].contiguous(), edges[:, 1].contiguous()
    hooked, reference = components_hooking(n, a, b), components_scipy(n, a, b)
    assert torch.equal(hooked, reference)
    assert torch.equal(components(n, a, b), reference)
    # Each label is its component's smallest node.
    assert torch.equal(reference[reference], reference)
    assert (reference <= torch.arange(n)).all()


@pytest.mark.parametrize("n", [2, 3, 4096, 4097])
def test_hooking_a_path_in_order_settles_to_one_label(n: int) -> None:
    # The first hooking makes a chain n - 1 deep (node i under i - 1): the deepest tree the
    # pointer jumping must flatten.
    a = torch.arange(n - 1)
    assert torch.equal(components_hooking(n, a, a + 1), torch.zeros(n, dtype=torch.int64))
    assert torch.equal(components_hooking(n, a + 1, a), torch.zeros(n, dtype=torch.int64))


def test_hooking_past_its_batched_rounds_finishes_with_rounds_that_jump_until_stable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two batched rounds leave the in-order path's labels 64 apart: the later rounds finish.
    calls = []
    hooked = face_graph._hooked
    monkeypatch.setattr(face_graph, "MAX_ROUNDS", 2)
    monkeypatch.setattr(face_graph, "_hooked", lambda *args: calls.append(1) or hooked(*args))
    a = torch.arange(4096)
    assert torch.equal(components_hooking(4097, a, a + 1), torch.zeros(4097, dtype=torch.int64))
    assert len(calls) > 2
    monkeypatch.setattr(face_graph, "MAX_ROUNDS", 0)
    with pytest.raises(RuntimeError, match="did not settle"):
        components_hooking(4097, a, a + 1)


def test_components_without_edges_are_singletons() -> None:
    empty = torch.zeros(0, dtype=torch.int64)
    assert torch.equal(components(5, empty, empty), torch.arange(5))


def test_group_sums_match_numpy() -> None:
    rng = np.random.default_rng(3)
    group = rng.integers(0, 50, 1000)
    group[group == 7] = 8  # an empty group sums to zero
    values = rng.standard_normal((1000, 2))
    sums = group_sums(torch.from_numpy(values), torch.from_numpy(group), 50).numpy()
    expected = np.stack([np.bincount(group, values[:, k], minlength=50) for k in range(2)], 1)
    np.testing.assert_allclose(sums, expected, atol=1e-12)
    assert (sums[7] == 0).all()


def test_group_sums_are_exact_whatever_the_order_and_the_magnitudes() -> None:
    """Fixed-point sums: the same bits for any order of the elements (a float prefix sum
    rounds differently), and small values beside huge ones keep float64's precision."""
    rng = np.random.default_rng(5)
    n, count = 20000, 300
    group = rng.integers(0, count, n)
    values = rng.standard_normal((n, 3)) * 10.0 ** rng.integers(-9, 3, (n, 1))
    sums = group_sums(torch.from_numpy(values), torch.from_numpy(group), count)
    shuffled = rng.permutation(n)
    again = group_sums(torch.from_numpy(values[shuffled]), torch.from_numpy(group[shuffled]), count)
    assert torch.equal(sums, again)
    exact = np.zeros((count, 3), dtype=np.longdouble)
    np.add.at(exact, group, values.astype(np.longdouble))
    scale = np.abs(values).max()
    np.testing.assert_allclose(sums.numpy(), exact.astype(np.float64), rtol=0, atol=1e-15 * scale)
    # A group of tiny values only is summed to its own precision, not the largest value's.
    tiny = group == 0
    values[tiny] = 1e-12 * rng.standard_normal((int(tiny.sum()), 3))
    sums = group_sums(torch.from_numpy(values), torch.from_numpy(group), count).numpy()
    np.testing.assert_allclose(sums[0], values[tiny].sum(0), rtol=1e-9)


def test_group_sums_of_zeros_are_zeros() -> None:
    """All-zero values (a converged residual, a mesh of degenerate faces) have no scale to
    take from their largest: the sums must still be exact zeros, not NaN."""
    group = torch.tensor([0, 0, 1, 2, 2])
    sums = group_sums(torch.zeros(5, 3, dtype=torch.float64), group, 4)
    assert torch.equal(sums, torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("bound", [None, 10])
def test_rank_by_first_numbers_labels_in_order_of_appearance(bound: int | None) -> None:
    dense, count = rank_by_first(torch.tensor([9, 3, 9, 5, 3, 1]), bound=bound)
    assert count == 4
    assert dense.tolist() == [0, 1, 0, 2, 1, 3]


@pytest.mark.parametrize("device", DEVICES)
def test_rank_by_first_through_its_table_equals_the_sort(device: str) -> None:
    """The bounded form (a table of first elements) numbers exactly as the unbounded one
    (torch.unique's sort), on labels with gaps, repeats and the bound's last value."""
    rng = np.random.default_rng(3)
    for n, bound in [(1, 1), (50, 7), (5000, 40_000), (20_000, 20_000)]:
        label = torch.from_numpy(rng.integers(0, bound, n)).to(device)
        label[-1] = bound - 1
        dense, count = rank_by_first(label, bound=bound)
        assert torch.equal(dense, rank_by_first(label)[0])
        assert count == len(torch.unique(label)) == int(dense.max()) + 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hooking_components_on_cuda_equal_scipys() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    order = rng.permutation(n)
    chain = np.stack([order[:-1], order[1:]], 1)[rng.random(n - 1) < 0.999]
    edges = torch.from_numpy(chain)
    a, b = edges[:, 0].contiguous(), edges[:, 1].contiguous()
    assert len(a) > ONE_PROGRAM_MAX_EDGES  # the hooking's rounds
    on_gpu = components(n, a.cuda(), b.cuda()).cpu()
    assert torch.equal(on_gpu, components_scipy(n, a, b))
    few = slice(0, ONE_PROGRAM_MAX_EDGES)  # small graphs: the one-program kernel, same labels
    assert torch.equal(
        components(n, a[few].cuda(), b[few].cuda()).cpu(), components_scipy(n, a[few], b[few])
    )
