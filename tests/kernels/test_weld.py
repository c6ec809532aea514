"""weld (torch, any device) against weld_reference (numpy), plus hand-built known answers; and
the Triton path (`_weld_triton`, on `triton_device`) against the torch path, bit for bit.

Welding is exact integer work (bit patterns or grid cells), so every comparison is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import kernels.weld as weld_module
from kernels.hash_table import launch_block
from kernels.weld import _weld_torch, _weld_triton, weld, weld_reference

# (vertex count, tolerance): empty, single, tiny, and a "large" soup that still runs in well
# under a second on the CPU.
EXACT_COUNTS = (0, 1, 2, 7, 1000, 30_001)
GRID_CASES = ((1, 0.05), (7, 0.05), (1000, 0.1), (30_001, 0.05))
RANDOM_CASES = [(count, 0.0) for count in EXACT_COUNTS] + list(GRID_CASES)


def soup_with_duplicates(seed: int, count: int) -> np.ndarray:
    """[count, 3] float32: a triangle soup's corners, drawn from a pool a third its size, with
    about a quarter of the zeros written as -0.0 so the signed-zero rule is exercised."""
    rng = np.random.default_rng(seed)
    pool = np.round(rng.uniform(-0.5, 0.5, (max(count // 3, 1), 3)), 2).astype(np.float32)
    pool[rng.random(pool.shape) < 0.2] = 0.0
    positions = pool[rng.integers(0, len(pool), count)]
    negative_zero = (positions == 0) & (rng.random(positions.shape) < 0.25)
    positions[negative_zero] = -0.0
    return positions


def cells(positions: np.ndarray, tolerance: float) -> np.ndarray:
    """[V, 3] integer key each position welds by (independent of the module's own keys)."""
    if tolerance > 0:
        return np.floor(positions.astype(np.float64) / tolerance).astype(np.int64)
    return positions.astype(np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0, as weld wants


def assert_weld_invariants(
    positions: np.ndarray, unique: np.ndarray, remap: np.ndarray, tolerance: float
) -> None:
    """Indices in range, one output per group, first-seen order, lowest-index representative."""
    V, U = len(positions), len(unique)
    assert remap.shape == (V,) and remap.dtype == np.int64
    assert unique.dtype == positions.dtype and unique.shape == (U, 3)
    if V == 0:
        assert U == 0
        return
    assert remap.min() == 0 and remap.max() == U - 1  # every output used, none out of range
    # Same group <=> same cell.
    keys = cells(positions, tolerance)
    assert np.array_equal(cells(unique, tolerance)[remap], keys)
    assert len(np.unique(cells(unique, tolerance), axis=0)) == U  # no two outputs equal
    # Groups numbered in order of first appearance; each is its lowest index, bit for bit.
    _, first = np.unique(remap, return_index=True)
    assert np.all(np.diff(first) > 0)
    assert np.array_equal(unique.view(np.uint8), positions[first].view(np.uint8))


@pytest.mark.parametrize(("count", "tolerance"), RANDOM_CASES)
def test_matches_reference_on_random_soups(device: str, count: int, tolerance: float) -> None:
    if tolerance == 0:
        positions = soup_with_duplicates(count + 1, count)
    else:  # continuous values, so grid cells (not exact duplicates) do the merging
        positions = np.random.default_rng(count).uniform(-0.5, 0.5, (count, 3)).astype(np.float32)
    unique, remap = weld(torch.from_numpy(positions).to(device), tolerance)
    expected_unique, expected_remap = weld_reference(positions, tolerance)
    unique, remap = unique.cpu().numpy(), remap.cpu().numpy()
    assert np.array_equal(remap, expected_remap)
    assert np.array_equal(unique.view(np.uint8), expected_unique.view(np.uint8))
    assert_weld_invariants(positions, unique, remap, tolerance)
    if count >= 1000:
        assert len(unique) < count  # the input really had points to merge


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_reference_keeps_the_invariants(tolerance: float) -> None:
    positions = soup_with_duplicates(5, 2000)
    unique, remap = weld_reference(positions, tolerance)
    assert_weld_invariants(positions, unique, remap, tolerance)


def test_exact_duplicates(device: str) -> None:
    positions = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]],
        dtype=torch.float32,
        device=device,
    )
    unique, remap = weld(positions)
    assert unique.cpu().tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert remap.cpu().tolist() == [0, 1, 0, 1, 2, 2]
    assert torch.equal(unique[remap], positions)  # the remap reproduces every position


@pytest.mark.parametrize("first_sign", [-1.0, 1.0])
def test_negative_zero_welds_to_zero_keeping_the_first(device: str, first_sign: float) -> None:
    zero = 0.0 * first_sign
    positions = torch.tensor(
        [[zero, 0.5, zero], [-zero, 0.5, -zero], [0.0, 0.5, 0.0]], device=device
    )
    unique, remap = weld(positions)
    assert remap.cpu().tolist() == [0, 0, 0]
    # The representative is the lowest index, sign bit and all.
    assert torch.signbit(unique[0, 0]).item() == (first_sign < 0)


def test_tolerance_snaps_to_cells_of_that_size(device: str) -> None:
    # Cells of 0.1: 0 and 0.09 share [0, 0.1); float32 0.1 is just above 0.1, so it starts the
    # next cell; -0.01 lies in [-0.1, 0).
    positions = torch.tensor(
        [[0.0, 0, 0], [0.09, 0, 0], [0.1, 0, 0], [-0.01, 0, 0], [0.05, 0, 0]], device=device
    )
    unique, remap = weld(positions, tolerance=0.1)
    assert remap.cpu().tolist() == [0, 0, 1, 2, 0]
    assert torch.equal(unique, positions[[0, 2, 3]])


def test_unique_input_comes_back_unchanged(device: str) -> None:
    rng = np.random.default_rng(3)
    positions = torch.from_numpy(rng.normal(size=(513, 3)).astype(np.float32)).to(device)
    unique, remap = weld(positions)
    assert torch.equal(unique, positions)
    assert torch.equal(remap.cpu(), torch.arange(513))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_the_input_dtype(device: str, dtype: torch.dtype) -> None:
    positions = torch.tensor([[0.25, 0.5, 1.0], [0.25, 0.5, 1.0]], dtype=dtype, device=device)
    unique, remap = weld(positions)
    assert unique.dtype == dtype and remap.dtype == torch.int64
    assert unique.shape == (1, 3)


def test_is_deterministic(device: str) -> None:
    positions = torch.from_numpy(soup_with_duplicates(11, 20_000)).to(device)
    first, second = weld(positions, 0.0), weld(positions, 0.0)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("shape", [(4,), (4, 2), (4, 4), (2, 4, 3)])
def test_rejects_positions_not_v_by_3(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[V, 3\]"):
        weld(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"\[V, 3\]"):
        weld_reference(np.zeros(shape, np.float32))


@pytest.mark.parametrize("tolerance", [-0.1, float("nan"), float("inf")])
def test_rejects_bad_tolerances(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        weld(torch.zeros(3, 3), tolerance)
    with pytest.raises(ValueError, match="tolerance"):
        weld_reference(np.zeros((3, 3), np.float32), tolerance)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_rejects_non_finite_positions(bad: float) -> None:
    positions = torch.zeros(3, 3)
    positions[1, 2] = bad
    with pytest.raises(ValueError, match="finite"):
        weld(positions)


# --- The Triton path ---------------------------------------------------------------------------


def torus_soup(rows: int, columns: int, seed: int) -> np.ndarray:
    """[6 * rows * columns, 3] float32: a closed torus of rows x columns quads, two triangles
    each, its faces shuffled and expanded to per-corner positions (a generator's soup: every
    vertex repeats bit for bit in its 6 faces, rows * columns of them unique)."""
    u = 2 * np.pi * np.arange(rows)[:, None] / rows
    v = 2 * np.pi * np.arange(columns)[None, :] / columns
    ring = 0.35 + 0.12 * np.cos(v)
    grid = np.stack(np.broadcast_arrays(ring * np.cos(u), ring * np.sin(u), 0.12 * np.sin(v)), -1)
    vertices = grid.reshape(-1, 3).astype(np.float32)
    i, j = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    a, b = i * columns + j, (i + 1) % rows * columns + j
    c, d = (i + 1) % rows * columns + (j + 1) % columns, i * columns + (j + 1) % columns
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    faces = faces[np.random.default_rng(seed).permutation(len(faces))]
    return vertices[faces].reshape(-1, 3)


@contextlib.contextmanager
def poisoned_allocations() -> Iterator[None]:
    """torch.empty hands out NaN-filled (float) or -1-filled (integer) tensors, so an output
    element a kernel should write but does not shows up in the comparison."""
    empty = torch.empty

    def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
        tensor = empty(*args, **kwargs)
        return tensor.fill_(float("nan") if tensor.is_floating_point() else -1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "empty", poisoned)
        yield


def assert_triton_equals_torch(positions: np.ndarray, tolerance: float, device: str) -> None:
    """_weld_triton on `device` against _weld_torch there, bit for bit, plus the invariants."""
    tensor = torch.from_numpy(positions).to(device)
    with poisoned_allocations():
        unique, remap = _weld_triton(tensor, tolerance)
    expected_unique, expected_remap = _weld_torch(tensor, tolerance)
    assert remap.dtype == torch.int64 and torch.equal(remap, expected_remap)
    assert unique.dtype == torch.float32 and unique.shape == expected_unique.shape
    assert torch.equal(unique.view(torch.int32), expected_unique.view(torch.int32))
    assert_weld_invariants(positions, unique.cpu().numpy(), remap.cpu().numpy(), tolerance)


def awkward_counts(device: str) -> list[int]:
    """0, 1, and one either side of each kernel's block (as launched on `device`), plus 3000."""
    counts = {0, 1, 3000}
    for block in (weld_module.INSERT_BLOCK, weld_module.BLOCK):
        launched = launch_block(block, device)
        counts |= {launched - 1, launched, launched + 1}
    return sorted(counts)


@pytest.mark.parametrize("tolerance", [0.0, 0.05])
def test_triton_matches_torch_at_awkward_sizes(triton_device: str, tolerance: float) -> None:
    for count in awkward_counts(triton_device):
        if tolerance == 0:
            positions = soup_with_duplicates(count + 7, count)
        else:  # continuous values, signs mixed, merged by grid cells
            rng = np.random.default_rng(count)
            positions = rng.uniform(-0.5, 0.5, (count, 3)).astype(np.float32)
        assert_triton_equals_torch(positions, tolerance, triton_device)


def test_triton_on_a_torus_soup_and_on_unique_points(triton_device: str) -> None:
    soup = torus_soup(12, 9, seed=0)  # 648 corners of 108 vertices
    assert_triton_equals_torch(soup, 0.0, triton_device)
    assert_triton_equals_torch(soup, 0.01, triton_device)
    unique, _ = _weld_triton(torch.from_numpy(soup).to(triton_device), 0.0)
    assert len(unique) == 12 * 9
    # Already unique: comes back unchanged (every slot of the table holds one vertex).
    assert_triton_equals_torch(unique.cpu().numpy(), 0.0, triton_device)


TET_A, TET_B, TET_C, TET_D = [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]  # a tetrahedron
# (positions, tolerance, expected remap, expected representative of each output)
KNOWN_CASES = {
    "exact duplicates": (
        [[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]],
        0.0,
        [0, 1, 0, 1, 2, 2],
        [0, 1, 4],
    ),
    "signed zeros": ([[-0.0, 0.5, 0.0], [0.0, 0.5, -0.0], [-0.0, 0.5, -0.0]], 0.0, [0, 0, 0], [0]),
    "cells of 0.1": (
        [[0.0, 0, 0], [0.09, 0, 0], [0.1, 0, 0], [-0.01, 0, 0], [0.05, 0, 0]],
        0.1,
        [0, 0, 1, 2, 0],
        [0, 2, 3],
    ),
    "one vertex": ([[0.25, -0.5, 3.0]], 0.0, [0], [0]),
    "all alike": ([[0.5, 0.5, 0.5]] * 5, 0.0, [0] * 5, [0]),
    "a tetrahedron soup": (
        [TET_A, TET_B, TET_C, TET_A, TET_D, TET_B, TET_A, TET_C, TET_D, TET_B, TET_D, TET_C],
        0.0,
        [0, 1, 2, 0, 3, 1, 0, 2, 3, 1, 3, 2],
        [0, 1, 2, 4],
    ),
    "far from the origin": ([[1e30, -1e30, 7.0], [1e30, -1e30, 7.0]], 0.0, [0, 0], [0]),
}


@pytest.mark.parametrize("case", KNOWN_CASES)
def test_triton_known_answers(triton_device: str, case: str) -> None:
    points, tolerance, expected_remap, representatives = KNOWN_CASES[case]
    positions = torch.tensor(points, dtype=torch.float32, device=triton_device)
    with poisoned_allocations():
        unique, remap = _weld_triton(positions, tolerance)
    assert remap.cpu().tolist() == expected_remap
    # The representative is the lowest index, bit for bit (the sign of a zero included).
    assert torch.equal(unique.view(torch.int32), positions[representatives].view(torch.int32))


def test_triton_is_deterministic_and_welds_a_large_soup(
    triton_device: str, full_size: bool
) -> None:
    # Natively: 10M vertices (a 3.3M-face torus soup); under the interpreter a small one.
    rows, columns = (1667, 1000) if full_size else (20, 15)
    positions = torch.from_numpy(torus_soup(rows, columns, seed=1)).to(triton_device)
    for tolerance in (0.0, 1e-4):
        unique, remap = _weld_triton(positions, tolerance)
        again = _weld_triton(positions, tolerance)
        assert torch.equal(unique, again[0]) and torch.equal(remap, again[1])
        expected_unique, expected_remap = _weld_torch(positions, tolerance)
        assert torch.equal(remap, expected_remap) and torch.equal(unique, expected_unique)
    assert len(unique) <= rows * columns


@pytest.mark.skipif(not torch.cuda.is_available(), reason="dispatch to Triton happens on CUDA")
@pytest.mark.gpu
def test_weld_sends_float32_cuda_tensors_to_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(positions: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(positions.dtype)
        return _weld_triton(positions, tolerance)

    monkeypatch.setattr(weld_module, "_weld_triton", spy)
    positions = torch.from_numpy(soup_with_duplicates(2, 300)).cuda()
    weld(positions)
    weld(positions.double())  # 64-bit keys: the torch path
    weld(positions.cpu())
    assert calls == [torch.float32]


def test_rejects_a_tolerance_too_small_for_integer_cells() -> None:
    with pytest.raises(ValueError, match="too small"):
        weld(torch.ones(3, 3), 1e-30)
