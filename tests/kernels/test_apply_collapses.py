"""apply_collapses: the torch twin against a numpy reading of one round's collapses, the
Triton kernels (natively or interpreted) against the twin bit for bit, and bad arguments
refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.apply_collapses import _apply_torch, _apply_triton, apply_collapses
from kernels.independent_edges import independent_edges
from tests.kernels.meshes import grid_mesh


def random_case(seed: int, n: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    faces = grid_mesh(n)
    V = n * n
    keys = torch.unique(
        torch.cat(
            [
                torch.minimum(faces[:, k], faces[:, (k + 1) % 3]) * V
                + torch.maximum(faces[:, k], faces[:, (k + 1) % 3])
                for k in range(3)
            ]
        )
    )
    low, high = keys // V, keys % V
    E = len(low)
    counts = torch.where(torch.rand(E, generator=generator) < 0.2, 1, 2)
    on_open = torch.rand(V, generator=generator) < 0.3
    rank = torch.randperm(E, generator=generator)
    chosen = torch.nonzero(
        independent_edges(low, high, rank, torch.ones(E, dtype=torch.bool), V, 3)
    )
    chosen = chosen.squeeze(1)
    ok = torch.rand(len(chosen), generator=generator) < 0.8
    points = torch.rand(V, 3, generator=generator, dtype=torch.float64)
    q = torch.rand(V, 10, generator=generator, dtype=torch.float64)
    moved = torch.rand(V, generator=generator) < 0.1
    target = torch.rand(E, 3, generator=generator, dtype=torch.float64)
    return points, q, moved, faces, low, high, counts, on_open, chosen, ok, target


def apply_np(points, q, moved, faces, low, high, counts, on_open, chosen, ok, target):
    points, q, moved = points.copy(), q.copy(), moved.copy()
    remap = np.arange(len(points))
    for e in chosen[ok]:
        a, b = low[e], high[e]
        keep, gone = (b, a) if on_open[b] and not on_open[a] and counts[e] == 2 else (a, b)
        points[keep] = target[e]
        q[keep] = q[a] + q[b]
        moved[keep] = True
        remap[gone] = keep
    faces = remap[faces]
    alive = (
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    )
    return points, q, moved, faces[alive]


@pytest.mark.parametrize(("seed", "n"), [(1, 2), (2, 5), (3, 30)])
def test_torch_twin_matches_numpy(seed: int, n: int) -> None:
    case = random_case(seed, n)
    expected = apply_np(*(t.numpy() for t in case))
    points, q, moved = (t.clone() for t in case[:3])
    faces = _apply_torch(points, q, moved, *case[3:])
    for got, want in zip((points, q, moved, faces), expected, strict=True):
        assert np.array_equal(got.numpy(), want)
    if n > 5:
        assert len(faces) < len(case[3]) and bool((points != case[0]).any())


@pytest.mark.parametrize(("seed", "n"), [(1, 2), (2, 5), (3, 30)])
def test_triton_gives_the_twins_bits(triton_device: str, seed: int, n: int) -> None:
    case = random_case(seed, n)
    points, q, moved = (t.clone() for t in case[:3])
    faces = _apply_torch(points, q, moved, *case[3:])
    on = [t.to(triton_device) for t in case]
    got_faces = _apply_triton(*on)
    for got, want in zip((*on[:3], got_faces), (points, q, moved, faces), strict=True):
        assert torch.equal(got.cpu(), want)


def test_triton_full_size(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    case = [t.to(triton_device) for t in random_case(4, 700)]
    twin = [t.clone() for t in case[:3]]
    faces = _apply_torch(*twin, *case[3:])
    got_faces = _apply_triton(*case)
    for got, want in zip((*case[:3], got_faces), (*twin, faces), strict=True):
        assert torch.equal(got, want)


def test_nothing_ok_changes_nothing(device: str) -> None:
    case = [t.to(device) for t in random_case(5, 6)]
    case[9] = torch.zeros_like(case[9])
    before = [t.clone() for t in case[:4]]
    faces = apply_collapses(*case)
    assert all(torch.equal(a, b) for a, b in zip(case[:3], before[:3], strict=True))
    assert torch.equal(faces, before[3])


def test_bad_arguments_are_refused() -> None:
    case = list(random_case(6, 4))
    with pytest.raises(ValueError, match="float64"):
        apply_collapses(case[0].float(), *case[1:])
    with pytest.raises(ValueError, match="contiguous"):
        apply_collapses(case[0].T.contiguous().T, *case[1:])
    with pytest.raises(ValueError, match="bool"):
        apply_collapses(*case[:9], case[9].int(), case[10])
