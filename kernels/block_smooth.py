"""relax_blocks: the free texels of every 8 x 8 block relaxed towards the block's harmonic fill.

`relax_blocks(values, keep, rounds, omega)`: values [C, H, W] float32 (H and W multiples of
BLOCK), keep [H, W] bool -> a new [C, H, W]: the kept texels as they are, every other one
after `rounds` rounds of red-black successive over-relaxation (factor `omega`) towards the
mean of its 4-way neighbours inside its own block (none across a block's edge). Red texels
((row + column) even) move first in each round, from their black neighbours' values, then
black ones from the new red ones. pipeline/texture_fill.py uses it to make the fill of JPEG's
blocks as smooth as their sampled texels allow.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_relax_triton`): one
  program per 16 x 16 tile (four blocks), every round in registers. A texel's neighbour sum is
  two products with the tile's path matrix (1 between texels next to each other in one block,
  block-diagonal: no coupling across blocks), `tl.dot` at IEEE float32: each output sums two
  nonzero products of 1 and a texel, exactly. No atomics: the same bits every run.
- `_relax_torch` (any device, the CPU path): only the blocks holding a free texel, each
  split into its red and black texels; a colour's neighbour sums one matrix product of the
  other colour with the 0/1 adjacency, its step one in-place lerp.
- `relax_blocks_reference` (numpy, float64, texel by texel): for small images.
The paths agree to float32 rounding (Triton may fuse a multiply and an add).
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path serves every device
    triton = None

__all__ = ["BLOCK", "relax_blocks", "relax_blocks_reference"]

BLOCK = 8  # JPEG's block side
TILE = 16  # a Triton program's tile: tl.dot takes sides of 16 or more


def _check(values: torch.Tensor, keep: torch.Tensor) -> None:
    if values.ndim != 3 or values.dtype != torch.float32:
        raise ValueError(
            f"values must be float32 [C, H, W], got {values.dtype} {tuple(values.shape)}"
        )
    _, H, W = values.shape
    if H % BLOCK or W % BLOCK:
        raise ValueError(f"H and W must be multiples of {BLOCK}, got {H} x {W}")
    if tuple(keep.shape) != (H, W) or keep.dtype != torch.bool:
        raise ValueError(f"keep must be bool [{H}, {W}], got {keep.dtype} {tuple(keep.shape)}")
    if keep.device != values.device:
        raise ValueError(f"values and keep must be on one device: {values.device}, {keep.device}")


def relax_blocks(
    values: torch.Tensor, keep: torch.Tensor, rounds: int, omega: float
) -> torch.Tensor:
    """See the module docstring. Triton for CUDA tensors, torch elsewhere."""
    _check(values, keep)
    if values.is_cuda and triton is not None:
        return _relax_triton(values, keep, rounds, omega)
    return _relax_torch(values, keep, rounds, omega)


def _red_black() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(red [32], black [32]: the texel indices row * BLOCK + column of a block's two colours,
    adjacency [32, 32] float32: 1 where black texel j is a 4-way neighbour of red texel i)."""
    rows, cols = np.divmod(np.arange(BLOCK * BLOCK), BLOCK)
    red = np.flatnonzero((rows + cols) % 2 == 0)
    black = np.flatnonzero((rows + cols) % 2 == 1)
    steps = np.abs(rows[black][:, None] - rows[red][None]) + np.abs(
        cols[black][:, None] - cols[red][None]
    )
    adjacency = torch.from_numpy((steps == 1).astype(np.float32))
    return torch.from_numpy(red), torch.from_numpy(black), adjacency


def _relax_torch(
    values: torch.Tensor, keep: torch.Tensor, rounds: int, omega: float
) -> torch.Tensor:
    """Only the blocks holding a free texel, each as its red and its black texels apart
    ([M, C, 32] each): a colour's neighbour sums are one product of the other colour with the
    0/1 adjacency (each output two to four nonzero products of 1 and a texel, exact), and its
    step one in-place lerp whose weight is omega on free texels, 0 on kept ones."""
    C, H, W = values.shape
    side, rows, cols = BLOCK, H // BLOCK, W // BLOCK
    kept = keep.view(rows, side, cols, side)
    block_row, block_col = torch.nonzero(~kept.all(3).all(1)).unbind(1)  # blocks with a free texel
    out = values.clone()
    grid = out.view(C, rows, side, cols, side)
    moving = grid[:, block_row, :, block_col].reshape(-1, C, side * side)  # [M, C, 64]
    free = ~kept[block_row, :, block_col].reshape(-1, 1, side * side)  # [M, 1, 64]
    red, black, adjacency = (t.to(values.device) for t in _red_black())
    colours = [moving[..., red].contiguous(), moving[..., black].contiguous()]  # [M, C, 32]
    weights = [omega * free[..., index].to(values.dtype) for index in (red, black)]
    products = (adjacency, adjacency.T.contiguous())  # black -> red sums, red -> black
    counts = (adjacency.sum(0), adjacency.sum(1))  # 2, 3 or 4 neighbours
    mean = torch.empty_like(colours[0])
    for _ in range(rounds):
        for turn in (0, 1):
            torch.matmul(colours[1 - turn], products[turn], out=mean)
            colours[turn].lerp_(mean.div_(counts[turn]), weights[turn])
    moving[..., red], moving[..., black] = colours
    grid[:, block_row, :, block_col] = moving.reshape(-1, C, side, side)
    return out


if triton is not None:

    @triton.jit
    def _relax_kernel(
        values_ptr,
        keep_ptr,
        out_ptr,
        H,
        W,
        C: tl.constexpr,
        ROUNDS: tl.constexpr,
        OMEGA: tl.constexpr,
        SIDE: tl.constexpr,
        TILE_SIDE: tl.constexpr,
    ):
        i = tl.arange(0, TILE_SIDE)
        rows = tl.program_id(0) * TILE_SIDE + i[:, None]
        cols = tl.program_id(1) * TILE_SIDE + i[None, :]
        inside = (rows < H) & (cols < W)
        offsets = rows * W + cols
        free = (tl.load(keep_ptr + offsets, mask=inside, other=1) == 0) & inside
        a, b = i[:, None], i[None, :]
        apart = a - b
        path = tl.where(((a // SIDE) == (b // SIDE)) & ((apart == 1) | (apart == -1)), 1.0, 0.0)
        ones = tl.full((TILE_SIDE, TILE_SIDE), 1.0, tl.float32)
        counts = tl.dot(path, ones, input_precision="ieee") + tl.dot(
            ones, path, input_precision="ieee"
        )
        red = ((rows + cols) % 2) == 0
        red_turn = free & red
        black_turn = free & (~red)
        for channel in tl.static_range(C):
            x = tl.load(values_ptr + channel * H * W + offsets, mask=inside, other=0.0)
            for _ in range(ROUNDS):
                sums = tl.dot(path, x, input_precision="ieee") + tl.dot(
                    x, path, input_precision="ieee"
                )
                x = tl.where(red_turn, x + OMEGA * (sums / counts - x), x)
                sums = tl.dot(path, x, input_precision="ieee") + tl.dot(
                    x, path, input_precision="ieee"
                )
                x = tl.where(black_turn, x + OMEGA * (sums / counts - x), x)
            tl.store(out_ptr + channel * H * W + offsets, x, mask=inside)


def _relax_triton(
    values: torch.Tensor, keep: torch.Tensor, rounds: int, omega: float
) -> torch.Tensor:
    C, H, W = values.shape
    values, keep = values.contiguous(), keep.contiguous()
    out = torch.empty_like(values)
    if values.numel() == 0:
        return out
    grid = (triton.cdiv(H, TILE), triton.cdiv(W, TILE))
    # A partial tile's missing texels are masked out: loads give 0 and "kept", and a tile's
    # blocks never couple, so the present blocks relax as in a whole tile.
    _relax_kernel[grid](
        values, keep.view(torch.uint8), out, H, W, C, rounds, float(omega), BLOCK, TILE
    )
    return out


def relax_blocks_reference(
    values: np.ndarray, keep: np.ndarray, rounds: int, omega: float
) -> np.ndarray:
    """numpy twin in float64, texel by texel: values [C, H, W], keep [H, W] -> [C, H, W]."""
    x = values.astype(np.float64).copy()
    _, H, W = x.shape
    for top in range(0, H, BLOCK):
        for left in range(0, W, BLOCK):
            for _ in range(rounds):
                for colour in (0, 1):
                    for r in range(top, top + BLOCK):
                        for c in range(left, left + BLOCK):
                            if keep[r, c] or (r + c) % 2 != colour:
                                continue
                            around = ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                            near = [
                                (a, b)
                                for a, b in around
                                if top <= a < top + BLOCK and left <= b < left + BLOCK
                            ]
                            mean = sum(x[:, a, b] for a, b in near) / len(near)
                            x[:, r, c] += omega * (mean - x[:, r, c])
    return x
