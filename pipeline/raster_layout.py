"""Raster layout: every piece laid by its shape, not its box, at many trial scales at once.

The shelves (pipeline/packing.py) lay each piece's bounding box, so a ragged piece wastes the
empty parts of its box: on the shared prompts the large pieces' faces cover only half to two
thirds of their boxes, and the lattice nesting (pipeline/nesting.py) fills little of that.
Here each piece is a stack of rows of cells `gutter` texels square (in each row, the cells
from the first to the last its faces touch, each face's box grown by half the gutter; cells
grow past the gutter where the texture is more than MAX_GRID gutters wide), and
the pieces, largest box first, each take the first free place on the texture's cell grid
(kernels/first_fit.py): a piece drops into the notches and holes those before it left.
Faces of different pieces stay a gutter apart, as in the nesting: half of it around each
face of either.

`raster_layout` tries the given scales at once (one GPU program each) and keeps the largest
where every piece found a place. The cells come from float64 texel boxes, as the nesting's,
then integer work only, so the same input gives the same layout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kernels.first_fit import first_fit
from pipeline.packing import Packing, box_sizes

__all__ = ["grid_cells", "raster_layout"]

# Face-scale pairs handled at once: bounds the memory of the row runs (about 100 bytes a pair).
PAIRS_PER_CHUNK = 8_000_000
# Cells across the texture at most: the first fit's time grows with the grid (H200, prompt 0:
# 1.99 s of atlas at 2048 cells, a 1-texel gutter; 0.37 s at 1024; 0.13 s at 512), so a
# narrow gutter gets cells wider than itself (the gutter still holds: cells only widen it).
MAX_GRID = 512


def _rows(
    face_lo: torch.Tensor,
    face_hi: torch.Tensor,
    owner: torch.Tensor,
    count: int,
    scales: torch.Tensor,
    gutter: int,
    cell: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """face_lo, face_hi [S, F, 2]: each face's box in texels from its piece's origin at each
    scale; owner [F]: its piece's rank (0..count-1, the laying order); the cells `cell`
    texels square, each box grown by half the gutter -> row runs lo, hi
    [S, R] (cells from the piece's first cell), row_start [S, count + 1], width [S, count] and
    each piece's first cell [S, count, 2] (from its origin's cell)."""
    S, F = len(scales), len(owner)
    device = owner.device
    half = gutter / 2
    cell_lo = torch.floor((face_lo - half) / cell).long()  # [S, F, 2]
    cell_hi = torch.floor((face_hi + half) / cell).long() + 1
    slot = (torch.arange(S, device=device)[:, None] * count + owner).reshape(-1)  # [S * F]
    index = slot[:, None].expand(-1, 2)
    first = torch.full((S * count, 2), np.iinfo(np.int64).max, dtype=torch.int64, device=device)
    first = first.scatter_reduce(0, index, cell_lo.reshape(-1, 2), "amin")
    cell_lo = cell_lo.reshape(-1, 2) - first[slot]
    cell_hi = cell_hi.reshape(-1, 2) - first[slot]
    extent = torch.zeros((S * count, 2), dtype=torch.int64, device=device)
    extent = extent.scatter_reduce(0, index, cell_hi, "amax")  # (width, height)
    heights = extent[:, 1].reshape(S, count)
    row_start = torch.zeros((S, count + 1), dtype=torch.int64, device=device)
    row_start[:, 1:] = torch.cumsum(heights, 1)
    rows = int(row_start[:, -1].max())
    # Every (face, row) pair: each face covers rows cell_lo.y .. cell_hi.y - 1 of its piece.
    span = cell_hi[:, 1] - cell_lo[:, 1]
    pair = torch.repeat_interleave(torch.arange(S * F, device=device), span)
    step = torch.arange(len(pair), device=device) - (torch.cumsum(span, 0) - span)[pair]
    scale_of = pair // F
    row = scale_of * rows + row_start.reshape(-1)[scale_of * (count + 1) + owner[pair % F]]
    row = row + cell_lo[pair, 1] + step
    lo = torch.full((S * rows,), np.iinfo(np.int64).max, dtype=torch.int64, device=device)
    lo = lo.scatter_reduce(0, row, cell_lo[pair, 0], "amin")
    hi = torch.zeros(S * rows, dtype=torch.int64, device=device)
    hi = hi.scatter_reduce(0, row, cell_hi[pair, 0], "amax")
    lo = torch.where(hi > 0, lo, 0)  # a row no face touches: empty
    return (
        lo.reshape(S, rows),
        hi.reshape(S, rows),
        row_start,
        extent[:, 0].reshape(S, count),
        first.reshape(S, count, 2),
    )


def grid_cells(size: int, gutter: int) -> tuple[int, int]:
    """The cell side (texels) and cells across a `size`-texel texture with this gutter."""
    cell = max(gutter, -(-size // MAX_GRID))
    return cell, size // cell


def raster_layout(
    corners: torch.Tensor,
    piece: torch.Tensor,
    box_lo: torch.Tensor,
    extents: np.ndarray,
    scales: np.ndarray,
    size: int,
    gutter: int,
    outline: torch.Tensor | None = None,
) -> Packing | None:
    """corners [F, 3, 2] (model units), piece [F], box_lo [C, 2] each piece's box corner,
    extents [C, 2] its size; scales: trial scales, ascending; outline [F] bool, optional: the
    faces on their piece's outline (an edge no other face of the piece shares), whose boxes
    alone give each row's first and last cell: the rest lie between them -> the layout at
    the largest scale where every piece found a place, None where there is none."""
    C = len(extents)
    if C == 0 or len(scales) == 0 or gutter < 1:
        return None
    cell, grid = grid_cells(size, gutter)
    device = piece.device
    # Largest box first (scale-free: the extents' product), ties by piece.
    order = np.lexsort((np.arange(C), -(extents[:, 0] * extents[:, 1])))
    rank = torch.empty(C, dtype=torch.int64, device=device)
    rank[torch.from_numpy(order).to(device)] = torch.arange(C, device=device)
    if outline is not None:  # a piece with no outline face (none seen) keeps every face
        seen = torch.zeros(C, dtype=torch.bool, device=device)
        seen[piece[outline]] = True
        kept = torch.nonzero(outline | ~seen[piece]).squeeze(1)
        corners, piece = corners[kept], piece[kept]
    owner = rank[piece]
    local = corners - box_lo[piece][:, None, :]  # [F, 3, 2] from the box corner, unscaled
    local_lo, local_hi = local.amin(1), local.amax(1)  # [F, 2]
    flips = box_sizes(extents, scales[:, None, None], gutter)[1]  # [S, C]
    flipped = torch.from_numpy(flips).to(device)[:, piece]  # [S, F]
    origin = gutter // 2
    chunk = max(1, PAIRS_PER_CHUNK // max(len(piece), 1))
    runs = []
    for begin in range(0, len(scales), chunk):
        scale = torch.tensor(scales[begin : begin + chunk], dtype=local.dtype, device=device)
        turn = flipped[begin : begin + chunk, :, None]
        box = [
            torch.where(turn, v.flip(-1), v) * scale[:, None, None] + origin
            for v in (local_lo, local_hi)
        ]
        runs.append(_rows(box[0], box[1], owner, C, scale, gutter, cell))
    rows = max(run[0].shape[1] for run in runs)
    lo, hi = (
        torch.cat([nn.functional.pad(run[k], (0, rows - run[k].shape[1])) for run in runs])
        for k in (0, 1)
    )
    row_start, width, first = (torch.cat([run[k] for run in runs]) for k in (2, 3, 4))
    # One launch for every trial scale: its programs run side by side.
    where = first_fit(lo, hi, row_start, width, grid).cpu().numpy().astype(np.int64)
    cells = first.cpu().numpy()  # [S, C, 2] in laying order
    fits = np.flatnonzero((where >= 0).all(axis=(1, 2)))
    if len(fits) == 0:
        return None
    s = int(fits[-1])
    origins = np.zeros((C, 2), np.int64)
    origins[order] = (where[s] - cells[s]) * cell + origin
    return Packing(float(scales[s]), origins, flips[s])
