"""collapse_checks: the torch twin against a numpy reading of the three conditions (the link,
the neighbours kept, no face turning), the Triton kernels (natively or interpreted) against
the twin bit for bit, and bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.collapse_checks import _checks_torch, _checks_triton, collapse_checks
from kernels.independent_edges import independent_edges
from tests.kernels.meshes import grid_mesh

FLIP_COS = 0.2


def edges_of(faces: torch.Tensor, V: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    starts, ends = faces.reshape(-1), faces.roll(-1, 1).reshape(-1)
    keys, counts = torch.unique(
        torch.minimum(starts, ends) * V + torch.maximum(starts, ends), return_counts=True
    )
    return keys // V, keys % V, counts


def grid_case(seed: int, n: int, jump: float) -> tuple[torch.Tensor, ...]:
    """A wavy open grid, an independent set of its edges, targets near each edge's midpoint
    (jump: how far off, in cell sizes; far ones turn faces over), plus a closed tube of
    triangular section (its rim edges fail the link condition) and a lone tetrahedron (every
    edge would leave two neighbours)."""
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    z = 0.3 * torch.sin(x * 0.7) * torch.cos(y * 0.5)
    points = [torch.stack((x, y, z), -1).reshape(-1, 3).double()]
    faces = [grid_mesh(n)]
    V = n * n
    angles = torch.arange(3) * 2 * torch.pi / 3
    ring = torch.stack((torch.cos(angles), torch.sin(angles)), 1).double() + n + 2
    tube = torch.tensor(
        [[k, (k + 1) % 3, k + 3] for k in range(3)]
        + [[(k + 1) % 3, (k + 1) % 3 + 3, k + 3] for k in range(3)]
    )
    points.append(torch.cat([torch.cat((ring, torch.full((3, 1), h)), 1) for h in (0.0, 1.0)]))
    faces.append(tube + V)
    V += 6
    tetra = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    points.append(torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).double() - 3)
    faces.append(tetra + V)
    V += 4
    points_t, faces_t = torch.cat(points), torch.cat(faces)
    low, high, counts = edges_of(faces_t, V)
    E = len(low)
    rank = torch.randperm(E, generator=generator)
    chosen = torch.nonzero(
        independent_edges(low, high, rank, torch.ones(E, dtype=torch.bool), V, 3)
    ).squeeze(1)
    middle = (points_t[low] + points_t[high]) / 2
    target = middle + jump * torch.randn(E, 3, generator=generator, dtype=torch.float64)
    return points_t, faces_t, low, high, counts, chosen, target


def checks_np(points, faces, low, high, counts, chosen, target) -> np.ndarray:
    """The conditions read off the mesh directly: neighbour sets and each face's normals."""
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(low.tolist(), high.tolist(), strict=True):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    ok = np.ones(len(chosen), bool)
    end_of = {}
    for i, e in enumerate(chosen.tolist()):
        a, b = int(low[e]), int(high[e])
        end_of[a] = end_of[b] = i
        common = len(neighbours[a] & neighbours[b])
        merged = len((neighbours[a] | neighbours[b]) - {a, b})
        ok[i] = common == counts[e] and merged >= (2 if counts[e] == 1 else 3)

    def unit_normal(p: np.ndarray) -> tuple[np.ndarray, float]:
        u, v = p[1] - p[0], p[2] - p[0]
        n = np.array(
            [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
        )
        length = np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
        return n / max(length, 1e-300), length

    for face in faces:
        owners = [end_of.get(int(c), -1) for c in face]
        moving = [o >= 0 for o in owners]
        if sum(moving) != 1:
            continue
        i = max(owners)
        before = points[face]
        after = before.copy()
        after[moving.index(True)] = target[chosen[i]]
        n0, _ = unit_normal(before)
        n1, size = unit_normal(after)
        if n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2] < FLIP_COS or size == 0:
            ok[i] = False
    return ok


@pytest.mark.parametrize(("seed", "n", "jump"), [(1, 3, 0.0), (2, 8, 0.3), (3, 25, 1.5)])
def test_torch_twin_matches_numpy(seed: int, n: int, jump: float) -> None:
    case = grid_case(seed, n, jump)
    expected = checks_np(*(t.numpy() for t in case))
    got = _checks_torch(*case, FLIP_COS)
    assert np.array_equal(got.numpy(), expected)
    if n > 3:  # both verdicts
        assert 0 < int(got.sum()) < len(got)


def test_the_rim_of_a_tube_and_a_tetrahedron_fail_the_link_and_a_flat_grid_passes() -> None:
    points, faces, low, high, counts, *_ = grid_case(4, 6, 0.0)
    V = len(points)
    on_tube = (low >= V - 10) & (low < V - 4) & (high < V - 4)
    rim = torch.nonzero(on_tube & (high - low == 1) & (low != V - 7)).squeeze(1)[:1]
    tetra = torch.nonzero(low >= V - 4).squeeze(1)[:1]
    inner = torch.nonzero((low == 7) & (high == 14)).squeeze(1)  # an interior diagonal
    chosen = torch.cat((rim, tetra, inner))
    middle = (points[low] + points[high]) / 2
    ok = collapse_checks(points, faces, low, high, counts, chosen, middle, FLIP_COS)
    assert ok.tolist() == [False, False, True]


def test_a_target_across_the_ring_turns_faces_over() -> None:
    points, faces, low, high, counts, *_ = grid_case(5, 6, 0.0)
    chosen = torch.nonzero((low == 7) & (high == 14)).squeeze(1)
    middle = (points[low] + points[high]) / 2
    far = middle.clone()
    far[chosen, 0] += 3.0  # past the ring's other side, in the plane
    verdicts = [
        bool(collapse_checks(points, faces, low, high, counts, chosen, t, FLIP_COS)[0])
        for t in (middle, far)
    ]
    assert verdicts == [True, False]


@pytest.mark.parametrize(("seed", "n", "jump"), [(1, 3, 0.0), (2, 8, 0.3), (3, 25, 1.5)])
def test_triton_gives_the_twins_verdicts(
    triton_device: str, seed: int, n: int, jump: float
) -> None:
    case = grid_case(seed, n, jump)
    expected = _checks_torch(*case, FLIP_COS)
    got = _checks_triton(*(t.to(triton_device) for t in case), FLIP_COS)
    assert torch.equal(got.cpu(), expected)


def test_triton_full_size(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    for jump in (0.05, 0.5):
        case = [t.to(triton_device) for t in grid_case(6, 700, jump)]
        expected = _checks_torch(*case, FLIP_COS)
        assert 0 < int(expected.sum()) < len(expected)
        assert torch.equal(_checks_triton(*case, FLIP_COS), expected)


def test_nothing_chosen(device: str) -> None:
    case = [t.to(device) for t in grid_case(7, 4, 0.0)]
    case[5] = case[5][:0]
    assert collapse_checks(*case, FLIP_COS).shape == (0,)


def test_bad_arguments_are_refused() -> None:
    case = list(grid_case(8, 4, 0.0))
    with pytest.raises(ValueError, match="float64"):
        collapse_checks(case[0].float(), *case[1:], FLIP_COS)
    with pytest.raises(ValueError, match="target"):
        collapse_checks(*case[:6], case[6][:-1], FLIP_COS)
    with pytest.raises(ValueError, match="int64"):
        collapse_checks(case[0], case[1].int(), *case[2:], FLIP_COS)
