"""edge_collapse: the torch path's collapse points and errors against numpy's solve and
quadric forms, the Triton kernel (natively or interpreted) gives the torch path's bits on
well-posed, singular and far-off systems in every mode, and bad arguments are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.edge_collapse import (
    MODES,
    SINGULAR,
    _collapse_costs_torch,
    _collapse_costs_triton,
    collapse_costs,
)


def plane_quadrics(generator: torch.Generator, V: int, planes: int) -> torch.Tensor:
    """[V, 10] sums of `planes` random area-weighted plane quadrics each (rank <= planes)."""
    n = torch.nn.functional.normalize(torch.randn(V, planes, 3, generator=generator), dim=2)
    d = torch.randn(V, planes, generator=generator) * 0.3
    w = torch.rand(V, planes, generator=generator) + 0.1
    a, b, c = n.double().unbind(2)
    d, w = d.double(), w.double()
    q = torch.stack((a * a, a * b, a * c, b * b, b * c, c * c, a * d, b * d, c * d, d * d), 2)
    return (q * w[..., None]).sum(1)


def random_case(seed: int, V: int, E: int) -> tuple[torch.Tensor, ...]:
    """Quadrics of 1 plane (singular), 2 (singular), 3 and 6 (posed) planes per vertex, some
    all zero, random ends, every mode."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.cat([plane_quadrics(generator, V // 4 + 1, k) for k in (1, 2, 3, 6)])[:V]
    q[torch.rand(V, generator=generator) < 0.05] = 0.0
    points = torch.rand(V, 3, generator=generator, dtype=torch.float64) - 0.5
    low = torch.randint(0, V, (E,), generator=generator)
    high = torch.randint(0, V, (E,), generator=generator)
    mode = torch.randint(0, 4, (E,), generator=generator)
    mode[: E // 2] = MODES["optimal"]
    return q, points, low, high, mode


def error_np(q: np.ndarray, v: np.ndarray) -> float:
    A = np.array([[q[0], q[1], q[2]], [q[1], q[3], q[4]], [q[2], q[4], q[5]]])
    b = q[6:9]
    return float(v @ A @ v + 2 * b @ v + q[9])


def test_points_and_errors_match_numpy() -> None:
    q, points, low, high, mode = random_case(0, 400, 1500)
    target, cost = _collapse_costs_torch(q, points, low, high, mode)
    counts = {"solved": 0, "fallback": 0}
    for e in range(len(low)):
        qe = (q[low[e]] + q[high[e]]).numpy()
        pa, pb = points[low[e]].numpy(), points[high[e]].numpy()
        m = int(mode[e])
        if m == MODES["refused"]:
            assert cost[e] == np.inf and np.array_equal(target[e].numpy(), pa)
            continue
        if m in (MODES["low"], MODES["high"]):
            expected = pa if m == MODES["low"] else pb
        else:
            A = np.array([[qe[0], qe[1], qe[2]], [qe[1], qe[3], qe[4]], [qe[2], qe[4], qe[5]]])
            posed = abs(np.linalg.det(A)) > SINGULAR * (np.trace(A) / 3) ** 3 * (1 + 1e-9)
            solved = np.linalg.solve(A, -qe[6:9]) if posed else None
            middle = (pa + pb) / 2
            if solved is not None and np.sum((solved - middle) ** 2) < np.sum((pb - pa) ** 2) * (
                1 - 1e-9
            ):
                expected = solved
                counts["solved"] += 1
            else:
                options = [middle, pa, pb]
                errors = [error_np(qe, o) for o in options]
                expected = options[int(np.argmin(errors))]
                counts["fallback"] += 1
        np.testing.assert_allclose(target[e].numpy(), expected, rtol=1e-7, atol=1e-9)
        assert cost[e].item() == pytest.approx(error_np(qe, expected), rel=1e-6, abs=1e-12)
    assert counts["solved"] > 100 and counts["fallback"] > 100  # both branches exercised


@pytest.mark.parametrize(("seed", "V", "E"), [(1, 1, 1), (2, 50, 257), (3, 700, 3000)])
def test_triton_gives_the_torch_bits(triton_device: str, seed: int, V: int, E: int) -> None:
    case = random_case(seed, V, E)
    expected = _collapse_costs_torch(*case)
    got = _collapse_costs_triton(*(t.to(triton_device) for t in case))
    assert torch.equal(got[0].cpu(), expected[0])
    assert torch.equal(got[1].cpu(), expected[1])


def test_triton_full_size(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    case = random_case(4, 300_000, 2_000_000)
    expected = _collapse_costs_torch(*(t.to(triton_device) for t in case))
    got = _collapse_costs_triton(*(t.to(triton_device) for t in case))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_no_edges() -> None:
    q, points, low, high, mode = random_case(5, 10, 1)
    target, cost = collapse_costs(q, points, low[:0], high[:0], mode[:0])
    assert target.shape == (0, 3) and cost.shape == (0,)


def test_bad_arguments_are_refused() -> None:
    q, points, low, high, mode = random_case(6, 10, 5)
    with pytest.raises(ValueError, match="q must be float64"):
        collapse_costs(q.float(), points, low, high, mode)
    with pytest.raises(ValueError, match="points must be"):
        collapse_costs(q, points[:5], low, high, mode)
    with pytest.raises(ValueError, match="low, high and mode"):
        collapse_costs(q, points, low, high[:3], mode)
