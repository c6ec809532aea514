"""edge_modes: the torch twin against a numpy reading of the rule, the Triton kernels (natively
or interpreted) against the twin, and bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.edge_collapse import MODES
from kernels.edge_modes import _edge_modes_torch, _edge_modes_triton, edge_modes


def modes_np(
    low: np.ndarray, high: np.ndarray, counts: np.ndarray, refused: np.ndarray, V: int
) -> tuple[np.ndarray, np.ndarray]:
    on_open = np.zeros(V, dtype=bool)
    locked = np.zeros(V, dtype=bool)
    for a, b, c in zip(low, high, counts, strict=True):
        if c == 1:
            on_open[a] = on_open[b] = True
        if c > 2:
            locked[a] = locked[b] = True
    refused_set = set(refused.tolist())
    mode = np.empty(len(low), dtype=np.int64)
    for e, (a, b, c) in enumerate(zip(low, high, counts, strict=True)):
        if (
            locked[a]
            or locked[b]
            or c > 2
            or (c == 2 and on_open[a] and on_open[b])
            or int(a) * V + int(b) in refused_set
        ):
            mode[e] = MODES["refused"]
        elif c == 2 and on_open[a]:
            mode[e] = MODES["low"]
        elif c == 2 and on_open[b]:
            mode[e] = MODES["high"]
        else:
            mode[e] = MODES["optimal"]
    return mode, on_open


def random_case(seed: int, V: int, E: int, R: int) -> tuple[torch.Tensor, ...]:
    """Unique edges low < high among V vertices; mostly two faces, some open (1), some
    non-manifold (3, 4); R refused keys, most of them real edges'."""
    generator = torch.Generator().manual_seed(seed)
    ends = torch.randint(0, V, (2, 2 * E), generator=generator)
    ends = ends[:, ends[0] != ends[1]]
    keys = torch.unique(ends.min(0).values * V + ends.max(0).values)
    keys = keys[torch.randperm(len(keys), generator=generator)[:E]].sort().values
    low, high = keys // V, keys % V
    roll = torch.rand(len(keys), generator=generator)
    counts = torch.where(roll < 0.15, 1, torch.where(roll < 0.2, 3 + (roll < 0.18).long(), 2))
    extra = torch.randint(0, V * V, (R // 4,), generator=generator)
    picked = keys[torch.randperm(len(keys), generator=generator)[: R - R // 4]]
    refused = torch.unique(torch.cat((picked, extra)))
    return low, high, counts, refused, V


CASES = [(1, 2, 1, 0), (2, 40, 60, 0), (3, 40, 60, 9), (4, 500, 1500, 1), (5, 500, 1500, 300)]


@pytest.mark.parametrize(("seed", "V", "E", "R"), CASES)
def test_torch_twin_matches_numpy(seed: int, V: int, E: int, R: int) -> None:
    low, high, counts, refused, V = random_case(seed, V, E, R)
    mode, on_open = _edge_modes_torch(low, high, counts, refused, V)
    expected_mode, expected_open = modes_np(
        low.numpy(), high.numpy(), counts.numpy(), refused.numpy(), V
    )
    assert np.array_equal(mode.numpy(), expected_mode)
    assert np.array_equal(on_open.numpy(), expected_open)
    if E > 100:  # every mode occurs
        assert set(np.unique(expected_mode).tolist()) == set(MODES.values())


@pytest.mark.parametrize(("seed", "V", "E", "R"), CASES)
def test_triton_gives_the_twins_modes(
    triton_device: str, seed: int, V: int, E: int, R: int
) -> None:
    low, high, counts, refused, V = random_case(seed, V, E, R)
    expected = _edge_modes_torch(low, high, counts, refused, V)
    got = _edge_modes_triton(*(t.to(triton_device) for t in (low, high, counts, refused)), V)
    assert torch.equal(got[0].cpu(), expected[0]) and torch.equal(got[1].cpu(), expected[1])


def test_triton_full_size(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    case = random_case(6, 400_000, 1_200_000, 50_000)
    args = [t.to(triton_device) for t in case[:4]]
    expected = _edge_modes_torch(*args, case[4])
    got = _edge_modes_triton(*args, case[4])
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_no_edges(device: str) -> None:
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    mode, on_open = edge_modes(empty, empty, empty, empty, 4)
    assert mode.shape == (0,) and on_open.shape == (4,) and not bool(on_open.any())


def test_bad_arguments_are_refused() -> None:
    low, high, counts, refused, V = random_case(7, 10, 8, 2)
    with pytest.raises(ValueError, match="must be \\[E\\]"):
        edge_modes(low, high[1:], counts, refused, V)
    with pytest.raises(ValueError, match="int64"):
        edge_modes(low, high, counts.int(), refused, V)
    with pytest.raises(ValueError, match="vertex_count"):
        edge_modes(low, high, counts, refused, -1)
