"""quarter_normal: B is bilinear sampling at the quarter points, its adjoint is its transpose,
and the operator B^T M B + weight I matches the dense numpy reference on every path (torch on
each device, Triton natively or interpreted) at awkward sizes, the same bits every run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kernels.quarter_normal as quarter_normal_module
from kernels.quarter_normal import (
    _quarter_normal_triton,
    quarter_normal,
    quarter_normal_reference,
    quarter_samples,
    quarter_samples_adjoint,
)

# float32 sums of 16 products of values in [0, 1] against float64.
FLOAT32_TOLERANCE = 1e-5
WEIGHT = 0.1


def random_case(seed: int, H: int, W: int, C: int = 3, share: float = 0.6, device: str = "cpu"):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(H, W, C, generator=generator)
    inside = torch.rand(2 * H, 2 * W, generator=generator) < share
    return values.to(device), inside.to(device)


def bilinear_at(texture: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """texture [H, W, C] sampled bilinearly at texel-unit points (centres at + 0.5), zero
    outside the texture."""
    padded = F.pad(texture.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0)
    fx, fy = x - 0.5 + 1, y - 0.5 + 1
    x0, y0 = fx.floor().long(), fy.floor().long()
    ax, ay = (fx - x0)[..., None], (fy - y0)[..., None]
    return (
        padded[y0, x0] * (1 - ax) * (1 - ay)
        + padded[y0, x0 + 1] * ax * (1 - ay)
        + padded[y0 + 1, x0] * (1 - ax) * ay
        + padded[y0 + 1, x0 + 1] * ax * ay
    )


@pytest.mark.parametrize(("H", "W"), [(2, 2), (5, 3), (17, 31)])
def test_quarter_samples_are_bilinear_sampling_at_the_quarter_points(H, W):
    values, _ = random_case(H * W, H, W)
    ys, xs = torch.meshgrid(
        torch.arange(2 * H, dtype=torch.float64) / 2 + 0.25,
        torch.arange(2 * W, dtype=torch.float64) / 2 + 0.25,
        indexing="ij",
    )
    expected = bilinear_at(values.double(), xs, ys)
    assert torch.allclose(quarter_samples(values.double()), expected, atol=1e-12)


@pytest.mark.parametrize(("H", "W"), [(2, 2), (6, 9), (23, 13)])
def test_the_adjoint_is_the_transpose(H, W):
    generator = torch.Generator().manual_seed(7)
    values = torch.rand(H, W, 2, generator=generator, dtype=torch.float64)
    samples = torch.rand(2 * H, 2 * W, 2, generator=generator, dtype=torch.float64)
    left = (quarter_samples(values) * samples).sum()
    right = (values * quarter_samples_adjoint(samples)).sum()
    assert abs(float(left - right)) < 1e-12 * float(left.abs())


@pytest.mark.parametrize(
    ("H", "W", "C", "share"), [(2, 2, 3, 1.0), (7, 5, 3, 0.6), (3, 11, 1, 0.3), (13, 6, 4, 0.0)]
)
def test_the_torch_path_matches_the_reference(device, H, W, C, share):
    values, inside = random_case(H + W, H, W, C, share, device)
    got = quarter_normal(values, inside, WEIGHT).cpu().numpy()
    expected = quarter_normal_reference(values.cpu().numpy(), inside.cpu().numpy(), WEIGHT)
    assert np.abs(got - expected).max() < FLOAT32_TOLERANCE


@pytest.mark.parametrize(
    ("H", "W", "C", "share"), [(2, 2, 3, 1.0), (9, 7, 3, 0.6), (5, 33, 2, 0.3)]
)
def test_the_triton_path_matches_the_reference(triton_device, H, W, C, share):
    values, inside = random_case(3 * H + W, H, W, C, share, triton_device)
    got = _quarter_normal_triton(values, inside, WEIGHT)
    expected = quarter_normal_reference(values.cpu().numpy(), inside.cpu().numpy(), WEIGHT)
    assert np.abs(got.cpu().numpy() - expected).max() < FLOAT32_TOLERANCE
    assert torch.equal(got, _quarter_normal_triton(values, inside, WEIGHT))


def test_the_triton_path_at_full_size(triton_device, full_size):
    if not full_size:
        pytest.skip("native GPU only")
    values, inside = random_case(1, 1823, 781, 3, 0.45, triton_device)
    got = _quarter_normal_triton(values, inside, WEIGHT)
    expected = quarter_normal(values.cpu(), inside.cpu(), WEIGHT)
    assert (got.cpu() - expected).abs().max() < FLOAT32_TOLERANCE
    assert torch.equal(got, _quarter_normal_triton(values, inside, WEIGHT))


@pytest.mark.parametrize("block", [1024, 256])
def test_the_gathers_block_does_not_change_a_bit(triton_device, full_size, monkeypatch, block):
    """Same input, same bytes whatever texels a program of the gather kernel takes: its block
    was tuned for speed (perf/RESULTS.md), and a block that changed the bits would change every
    GLB. Compiled code only: the interpreter computes in numpy either way."""
    if not full_size:
        pytest.skip("native GPU only")
    values, inside = random_case(2, 1823, 781, 3, 0.45, triton_device)
    got = _quarter_normal_triton(values, inside, WEIGHT)
    monkeypatch.setattr(quarter_normal_module, "GATHER_BLOCK", block)
    assert torch.equal(_quarter_normal_triton(values, inside, WEIGHT), got)


def test_bad_input_is_refused():
    values, inside = random_case(0, 4, 4)
    with pytest.raises(ValueError, match="inside must be"):
        quarter_normal(values, inside[:-1], WEIGHT)
    with pytest.raises(ValueError, match="values must be float32"):
        quarter_normal(values.double(), inside, WEIGHT)
    with pytest.raises(ValueError, match=r"values must be \[H >= 2"):
        quarter_normal(values[:1], inside[:2], WEIGHT)
