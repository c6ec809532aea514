"""segment_sums: the fixed-point segment sums are exact to float64's precision against
Python's exactly rounded `math.fsum`, the Triton kernels (natively or interpreted) give the
torch path's bits at awkward sizes, magnitudes and segment layouts, the scale's exponent is
exact at powers of two, and bad arguments are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.segment_sums import (
    _fixed_point_sums_torch,
    _fixed_point_sums_triton,
    _scale_torch,
    fixed_point_sums,
    word_bits,
)


def random_case(
    seed: int, n: int, k: int, count: int, magnitude: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ordered [n, k] float64 and the starts, ends of `count` segments covering 0..n (some
    empty), values spread over twelve orders of magnitude around `magnitude`, some zero."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n, k, generator=generator, dtype=torch.float64)
    values *= magnitude * 10.0 ** torch.randint(-6, 7, (n, 1), generator=generator).double()
    values[torch.rand(n, generator=generator) < 0.1] = 0.0
    cuts = torch.sort(torch.randint(0, n + 1, (count - 1,), generator=generator)).values
    bounds = torch.cat((torch.zeros(1, dtype=torch.int64), cuts, torch.tensor([n])))
    return values, bounds[:-1].clone(), bounds[1:].clone()


@pytest.mark.parametrize(("n", "k", "count"), [(1, 1, 1), (37, 3, 5), (1000, 2, 40), (4099, 6, 3)])
def test_the_sums_are_float64_exact_sums(n: int, k: int, count: int) -> None:
    ordered, starts, ends = random_case(n + k, n, k, count)
    sums = fixed_point_sums(ordered, starts, ends).numpy()
    values = ordered.numpy()
    peak = np.abs(values).max()
    for g in range(count):
        for c in range(k):
            exact = math.fsum(values[starts[g] : ends[g], c])
            # Each value is kept to 2^-(2 * bits) of the largest possible total (two words).
            assert (
                abs(sums[g, c] - exact)
                <= 2.0 ** -(word_bits(k) + 20) * peak * n + abs(exact) * 2.0**-52
            ), (g, c)


def test_every_order_gives_the_same_bits() -> None:
    ordered, starts, ends = random_case(1, 500, 2, 1)
    first = fixed_point_sums(ordered, starts, ends)
    shuffled = ordered[torch.randperm(500, generator=torch.Generator().manual_seed(2))]
    assert torch.equal(fixed_point_sums(shuffled, starts, ends), first)


@pytest.mark.parametrize(
    ("seed", "n", "k", "count", "magnitude"),
    [
        (0, 1, 1, 1, 1.0),
        (1, 17, 3, 4, 1e-12),
        (2, 1029, 2, 64, 1e9),
        (3, 2048, 4, 1, 1.0),  # one segment over everything
        (4, 3001, 5, 700, 1e-200),
        (5, 800, 1, 801, 1e200),  # more segments than values: most empty
    ],
)
def test_triton_gives_the_torch_paths_bits(
    triton_device: str, seed: int, n: int, k: int, count: int, magnitude: float
) -> None:
    ordered, starts, ends = random_case(seed, n, k, count, magnitude)
    expected = _fixed_point_sums_torch(ordered, starts, ends)
    args = (ordered.to(triton_device), starts.to(triton_device), ends.to(triton_device))
    result = _fixed_point_sums_triton(*args)
    assert result.shape == (count, k) and result.dtype == torch.float64
    assert torch.equal(result.cpu(), expected)
    # The same strides too: later float work on the sums may round differently on others (it
    # moved UV corners of 3 of 15 atlases by up to 0.0007 texels when this path's were not).
    assert result.stride() == expected.stride()
    assert torch.equal(_fixed_point_sums_triton(*args).cpu(), expected)  # every run


def test_triton_sums_zeros_to_zeros(triton_device: str) -> None:
    zeros = torch.zeros(300, 2, dtype=torch.float64, device=triton_device)
    starts = torch.tensor([0, 100], device=triton_device)
    ends = torch.tensor([100, 300], device=triton_device)
    result = _fixed_point_sums_triton(zeros, starts, ends)
    assert torch.equal(result.cpu(), torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("exponent", [-40, -1, 0, 1, 7, 300])
def test_the_scale_takes_powers_of_two_exactly(exponent: int) -> None:
    # peak * n = 2^exponent exactly: ceil(log2) is the exponent itself, one more just above.
    bits = word_bits(3)
    peak = torch.tensor(2.0 ** (exponent - 3), dtype=torch.float64)
    assert float(_scale_torch(peak, 8, bits)) == 2.0 ** (bits - exponent)
    above = torch.tensor(math.nextafter(2.0 ** (exponent - 3), math.inf), dtype=torch.float64)
    assert float(_scale_torch(above, 8, bits)) == 2.0 ** (bits - exponent - 1)


def test_bad_arguments_are_refused() -> None:
    ordered, starts, ends = random_case(0, 10, 2, 2)
    with pytest.raises(ValueError, match="float64"):
        fixed_point_sums(ordered.float(), starts, ends)
    with pytest.raises(ValueError, match="count"):
        fixed_point_sums(ordered, starts, ends[:1])
    with pytest.raises(ValueError, match="int64"):
        fixed_point_sums(ordered, starts.int(), ends.int())
    empty = fixed_point_sums(ordered[:0], starts[:0], ends[:0])
    assert empty.shape == (0, 2)
