"""relax_blocks: the Triton kernel (natively on CUDA, under the interpreter on the CPU) and the
torch path against the numpy reference, on whole and partial tiles, with blocks all kept, all
free and mixed; kept texels untouched; no coupling across blocks; the same bits twice on CUDA;
bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.block_smooth import (
    BLOCK,
    _relax_torch,
    _relax_triton,
    relax_blocks,
    relax_blocks_reference,
)

ROUNDS, OMEGA = 6, 1.7


def case(seed: int, C: int, H: int, W: int, share: float, device: str = "cpu"):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(C, H, W, generator=generator)
    keep = torch.rand(H, W, generator=generator) < share
    keep[:BLOCK, :BLOCK] = True  # one block all kept
    keep[:BLOCK, BLOCK : 2 * BLOCK] = False  # one all free
    return values.to(device), keep.to(device)


def reference(values: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    return relax_blocks_reference(values.cpu().numpy(), keep.cpu().numpy(), ROUNDS, OMEGA)


@pytest.mark.parametrize(("C", "H", "W"), [(3, 32, 32), (1, 24, 40), (5, 16, 8)])
def test_torch_path_matches_the_reference(device: str, C: int, H: int, W: int) -> None:
    values, keep = case(C * H + W, C, H, W, 0.2, device)
    out = _relax_torch(values, keep, ROUNDS, OMEGA)
    np.testing.assert_allclose(out.cpu().numpy(), reference(values, keep), atol=1e-5)
    assert torch.equal(out[:, keep], values[:, keep])


def test_torch_path_with_no_free_texel_returns_the_values(device: str) -> None:
    values, _ = case(5, 3, 16, 24, 0.5, device)
    keep = torch.ones(16, 24, dtype=torch.bool, device=device)
    out = _relax_torch(values, keep, ROUNDS, OMEGA)
    assert torch.equal(out, values) and out.data_ptr() != values.data_ptr()


@pytest.mark.parametrize(("C", "H", "W"), [(3, 32, 32), (1, 24, 40)])
def test_triton_kernel_matches_the_reference(triton_device: str, C: int, H: int, W: int) -> None:
    values, keep = case(C * H + W + 1, C, H, W, 0.2, triton_device)
    out = _relax_triton(values, keep, ROUNDS, OMEGA)
    np.testing.assert_allclose(out.cpu().numpy(), reference(values, keep), atol=1e-5)
    assert torch.equal(out[:, keep], values[:, keep])
    assert torch.equal(_relax_triton(values, keep, ROUNDS, OMEGA), out)  # the same bits


def test_blocks_do_not_couple() -> None:
    """Changing one block's values moves no texel of any other block."""
    values, keep = case(9, 2, 24, 24, 0.3)
    changed = values.clone()
    changed[:, 8:16, 8:16] += 0.5
    a = relax_blocks(values, keep, ROUNDS, OMEGA)
    b = relax_blocks(changed, keep, ROUNDS, OMEGA)
    other = torch.ones(24, 24, dtype=torch.bool)
    other[8:16, 8:16] = False
    assert torch.equal(a[:, other], b[:, other])
    assert not torch.equal(a[:, 8:16, 8:16], b[:, 8:16, 8:16])


def test_relaxation_converges_to_the_harmonic_fill() -> None:
    """One kept texel in a block: the harmonic fill with nothing else fixed is its value."""
    values = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2))
    keep = torch.zeros(8, 8, dtype=torch.bool)
    keep[3, 5] = True
    out = relax_blocks(values, keep, 200, OMEGA)
    torch.testing.assert_close(out, values[:, 3, 5].expand(1, 8, 8).contiguous(), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dispatches_to_triton_at_full_size() -> None:
    values, keep = case(4, 3, 2048, 2048, 0.5, "cuda")
    out = relax_blocks(values, keep, 24, OMEGA)
    assert torch.equal(out, _relax_triton(values, keep, 24, OMEGA))
    torch.testing.assert_close(
        out.cpu(), _relax_torch(values.cpu(), keep.cpu(), 24, OMEGA), atol=1e-5, rtol=0
    )


def test_bad_arguments_are_refused() -> None:
    values, keep = case(1, 1, 16, 16, 0.5)
    with pytest.raises(ValueError, match="multiples of 8"):
        relax_blocks(values[:, :12], keep[:12], 1, OMEGA)
    with pytest.raises(ValueError, match="float32"):
        relax_blocks(values.double(), keep, 1, OMEGA)
    with pytest.raises(ValueError, match="keep must be bool"):
        relax_blocks(values, keep.float(), 1, OMEGA)
