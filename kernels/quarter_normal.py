"""quarter_normal: the normal-equations operator of a texture fitted at its quarter points.

`quarter_normal(values, inside, weight)` -> B^T M B values + weight * values, where B samples a
texture [H, W, C] bilinearly at its texels' quarter points ((x + 1/4, y + 1/4) ...
(x + 3/4, y + 3/4) in texel units: a 2x bilinear upsampling, weights 3/4 and 1/4 per axis,
zero beyond the texture's edge) and M keeps the quarter points `inside` [2H, 2W]. It is the
one matrix product each conjugate-gradient step of `pipeline.texture_fit.fit_texture` takes.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_quarter_normal_triton`):
  one kernel writes the masked samples M B values [2H, 2W, C] (four taps a point), a second
  gathers each texel's 16 quarter points (B^T) and adds weight * values. Gathers only, no
  atomics: the same bits every run.
- `_quarter_normal_torch` (any device, the CPU path): the same products as shifted
  elementwise sums along each axis.
- `quarter_normal_reference` (numpy, float64): the dense matrices, for small textures.
The paths agree to float32 rounding (the order of the sums differs).
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path serves every device
    triton = None

__all__ = [
    "quarter_matrix",
    "quarter_normal",
    "quarter_normal_reference",
    "quarter_samples",
    "quarter_samples_adjoint",
]

# Elements per Triton program: quarter points in the first kernel, texels in the second. Both
# are a few gathers per element, bound by memory. The second's 48 unrolled loads an element
# spilled at 1024 (255 registers a thread and a 320-byte stack): on the H100 at 2048² it took
# 0.334 ms there and 0.133 at 128, fit_texture 10.05 -> 8.21 ms, the same bits
# (perf/RESULTS.md). The first's result bits change with its block (at 256), so it stays.
SAMPLES_BLOCK = 1024
GATHER_BLOCK = 128


def _check(values: torch.Tensor, inside: torch.Tensor) -> None:
    if values.ndim != 3 or values.shape[0] < 2 or values.shape[1] < 2:
        raise ValueError(f"values must be [H >= 2, W >= 2, C], got {tuple(values.shape)}")
    H, W, _ = values.shape
    if tuple(inside.shape) != (2 * H, 2 * W) or inside.dtype != torch.bool:
        raise ValueError(f"inside must be bool [{2 * H}, {2 * W}], got {tuple(inside.shape)}")
    if values.device != inside.device:
        raise ValueError(
            f"values and inside must be on one device: {values.device}, {inside.device}"
        )
    if values.dtype != torch.float32:
        raise ValueError(f"values must be float32, got {values.dtype}")


def quarter_normal(values: torch.Tensor, inside: torch.Tensor, weight: float) -> torch.Tensor:
    """values [H, W, C] float32, inside [2H, 2W] bool -> [H, W, C]: B^T M B values + weight *
    values. CUDA tensors go to the Triton kernels, anything else to the torch path."""
    _check(values, inside)
    if triton is not None and values.is_cuda and values.numel() * 4 < 2**31:
        return _quarter_normal_triton(values.contiguous(), inside.contiguous(), weight)
    return _quarter_normal_torch(values, inside, weight)


def _upsample_axis(values: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., n, ...] -> [..., 2n, ...]: bilinear at the quarter points along `dim`, zero beyond
    the ends (point 2m = 1/4 T[m-1] + 3/4 T[m], point 2m+1 = 3/4 T[m] + 1/4 T[m+1])."""
    n = values.shape[dim]
    zero = torch.zeros_like(values.narrow(dim, 0, 1))
    previous = torch.cat((zero, values.narrow(dim, 0, n - 1)), dim)
    following = torch.cat((values.narrow(dim, 1, n - 1), zero), dim)
    even = 0.25 * previous + 0.75 * values
    odd = 0.75 * values + 0.25 * following
    return torch.stack((even, odd), dim + 1).flatten(dim, dim + 1)


def _upsample_adjoint_axis(samples: torch.Tensor, dim: int) -> torch.Tensor:
    """The transpose of `_upsample_axis`: [..., 2n, ...] -> [..., n, ...]."""
    n = samples.shape[dim] // 2
    shape = list(samples.shape)
    shape[dim : dim + 1] = [n, 2]
    pairs = samples.reshape(shape)
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    zero = torch.zeros_like(even.narrow(dim, 0, 1))
    odd_before = torch.cat((zero, odd.narrow(dim, 0, n - 1)), dim)  # point 2m - 1
    even_after = torch.cat((even.narrow(dim, 1, n - 1), zero), dim)  # point 2m + 2
    return 0.75 * (even + odd) + 0.25 * (odd_before + even_after)


def quarter_samples(texture: torch.Tensor) -> torch.Tensor:
    """texture [H, W, C] -> [2H, 2W, C]: B, bilinear sampling at the texels' quarter points."""
    return _upsample_axis(_upsample_axis(texture, 0), 1)


def quarter_samples_adjoint(samples: torch.Tensor) -> torch.Tensor:
    """samples [2H, 2W, C] -> [H, W, C]: B^T, the transpose of `quarter_samples`."""
    return _upsample_adjoint_axis(_upsample_adjoint_axis(samples, 1), 0)


def _quarter_normal_torch(
    values: torch.Tensor, inside: torch.Tensor, weight: float
) -> torch.Tensor:
    masked = inside[..., None].to(values.dtype) * quarter_samples(values)
    return quarter_samples_adjoint(masked) + weight * values


def _upsample_matrix(n: int) -> np.ndarray:
    """[2n, n]: `_upsample_axis` as a matrix."""
    matrix = np.zeros((2 * n, n))
    for m in range(n):
        matrix[2 * m, m] += 0.75
        matrix[2 * m + 1, m] += 0.75
        if m > 0:
            matrix[2 * m, m - 1] += 0.25
        if m < n - 1:
            matrix[2 * m + 1, m + 1] += 0.25
    return matrix


def quarter_matrix(H: int, W: int) -> np.ndarray:
    """[4HW, HW] float64: B over row-major texels and quarter points (small sizes only)."""
    return np.kron(_upsample_matrix(H), _upsample_matrix(W))


def quarter_normal_reference(values: np.ndarray, inside: np.ndarray, weight: float) -> np.ndarray:
    """numpy twin of `quarter_normal` with dense matrices, float64."""
    H, W, C = values.shape
    B = quarter_matrix(H, W)
    m = inside.reshape(-1).astype(np.float64)
    flat = values.reshape(-1, C).astype(np.float64)
    return (B.T @ (m[:, None] * (B @ flat)) + weight * flat).reshape(H, W, C)


if triton is not None:

    @triton.jit
    def _masked_samples_kernel(
        values_ptr,  # [H, W, C] float32
        inside_ptr,  # [2H, 2W] uint8
        samples_ptr,  # out [2H, 2W, C] float32
        H,
        W,
        C: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        point = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = point < 4 * H * W
        qy, qx = point // (2 * W), point % (2 * W)
        # Point 2k reads texels k - 1 (1/4) and k (3/4); point 2k + 1 texels k (3/4), k + 1 (1/4).
        y0 = qy // 2 - 1 + qy % 2
        x0 = qx // 2 - 1 + qx % 2
        wy0 = tl.where(qy % 2 == 0, 0.25, 0.75)
        wx0 = tl.where(qx % 2 == 0, 0.25, 0.75)
        ok_y0, ok_y1 = y0 >= 0, y0 + 1 < H
        ok_x0, ok_x1 = x0 >= 0, x0 + 1 < W
        keep = tl.load(inside_ptr + point, mask=live, other=0) != 0
        for c in tl.static_range(C):
            top = y0 * W * C + c
            bottom = top + W * C
            left, right = x0 * C, (x0 + 1) * C
            v00 = tl.load(values_ptr + top + left, mask=live & keep & ok_y0 & ok_x0, other=0.0)
            v01 = tl.load(values_ptr + top + right, mask=live & keep & ok_y0 & ok_x1, other=0.0)
            v10 = tl.load(values_ptr + bottom + left, mask=live & keep & ok_y1 & ok_x0, other=0.0)
            v11 = tl.load(values_ptr + bottom + right, mask=live & keep & ok_y1 & ok_x1, other=0.0)
            row0 = wx0 * v00 + (1.0 - wx0) * v01
            row1 = wx0 * v10 + (1.0 - wx0) * v11
            sample = wy0 * row0 + (1.0 - wy0) * row1
            tl.store(samples_ptr + point * C + c, tl.where(keep, sample, 0.0), mask=live)

    @triton.jit
    def _gather_kernel(
        samples_ptr,  # [2H, 2W, C] float32
        values_ptr,  # [H, W, C] float32
        out_ptr,  # out [H, W, C] float32
        H,
        W,
        weight,
        C: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        texel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = texel < H * W
        y, x = texel // W, texel % W
        for c in tl.static_range(C):
            total = tl.zeros((BLOCK,), dtype=tl.float32)
            # Texel m is read by points 2m - 1, 2m, 2m + 1, 2m + 2 with 1/4, 3/4, 3/4, 1/4.
            for dy in tl.static_range(4):
                qy = 2 * y - 1 + dy
                wy = 0.25 if dy == 0 or dy == 3 else 0.75
                row = tl.zeros((BLOCK,), dtype=tl.float32)
                for dx in tl.static_range(4):
                    qx = 2 * x - 1 + dx
                    wx = 0.25 if dx == 0 or dx == 3 else 0.75
                    ok = live & (qy >= 0) & (qy < 2 * H) & (qx >= 0) & (qx < 2 * W)
                    s = tl.load(samples_ptr + (qy * 2 * W + qx) * C + c, mask=ok, other=0.0)
                    row += wx * s
                total += wy * row
            own = tl.load(values_ptr + texel * C + c, mask=live, other=0.0)
            tl.store(out_ptr + texel * C + c, total + weight * own, mask=live)


def _quarter_normal_triton(
    values: torch.Tensor,  # [H, W, C] float32, contiguous
    inside: torch.Tensor,  # [2H, 2W] bool, contiguous
    weight: float,
) -> torch.Tensor:
    if triton is None:
        raise RuntimeError("the Triton path needs triton installed")
    H, W, C = values.shape
    samples = torch.empty(2 * H, 2 * W, C, dtype=torch.float32, device=values.device)
    out = torch.empty_like(values)
    _masked_samples_kernel[(triton.cdiv(4 * H * W, SAMPLES_BLOCK),)](
        values, inside.view(torch.uint8), samples, H, W, C=C, BLOCK=SAMPLES_BLOCK
    )
    _gather_kernel[(triton.cdiv(H * W, GATHER_BLOCK),)](
        samples, values, out, H, W, float(weight), C=C, BLOCK=GATHER_BLOCK
    )
    return out
