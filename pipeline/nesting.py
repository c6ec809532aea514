"""Nesting: small pieces dropped into the space the large pieces' boxes leave empty.

Shelf packing (pipeline/packing.py) lays out bounding boxes, so a ragged piece wastes the
empty part of its box, and a tiny piece costs a box that is mostly gutter. Here the large
pieces go on shelves, each on the first with room left (`packing.first_fit_shelves`: a low
box fills the width a tall shelf left, the nested pieces the room above it), and the
texture is seen as a grid of cells `gutter` texels wide: a cell is taken when a large
piece's face, grown by half the gutter, touches it. Each small piece needs a window of whole
cells holding its box and gutter; windows of one size are laid on a lattice of that size, so
they never overlap one another, and the small pieces of that size, in piece order, take the
free lattice windows in row order (the lattice shifted by half a window for the rest).
Largest windows first. Faces of different pieces stay a gutter apart: half of it inside each
small piece's window, half around each large piece's faces.

`nest_pieces` tries scales above the shelf packing's by bisection, NEST_STEPS times, and
keeps the largest that fits every piece. On CUDA, up to RASTER_MAX_PIECES pieces, it lays
every piece by its shape instead (pipeline/raster_layout.py: a piece drops into the notches
and holes of those before it), RASTER_TRIALS scales at once, and bisects only where none of
them fits. Integer tensor work on the pieces' device (cumulative sums and integer
scatter-adds only), so the same input gives the same layout.
"""

from __future__ import annotations

import numpy as np
import torch

from kernels import triton_available
from pipeline.packing import Packing, box_sizes, first_fit_shelves, texel_corners
from pipeline.raster_layout import raster_layout

__all__ = ["nest_faces", "nest_pieces"]

# Pieces whose window (box and gutter, in cells of `gutter` texels) is at most this many cells
# on its longer side are nested; the rest go on shelves.
NEST_CELLS = 8
# Trial scales between the shelf packing's and the area bound.
NEST_STEPS = 4
# Sizes a face taken out of its piece tries, in turn, when free windows are scarce.
MOVED_SHRINK = (1.0, 0.5, 0.25)
SHIFTS_PER_SIDE = 2
# Trial scales of the raster layout, laid at once (one GPU program each: 32 cost about as
# much as one), geometric from the shelf packing's scale to the area bound.
RASTER_TRIALS = 32
# Pieces up to which the raster layout runs: its first fit lays them one after another, 37-62
# us each on the prompts (H200: prompt 0's 1522 pieces 56 ms, prompt 1's 5122 316 ms; the
# kernel 9-25% faster since, and another 14-24% from 630 pieces: perf/RESULTS.md), where
# the shelves and nesting take tens of milliseconds whatever the count. Past about 3000 it
# stopped paying on the prompts (H200: prompts 7 and 12, ~2800 pieces, +0.09 to +0.55 dB for
# +54 to +116 ms of atlas; prompts 1, 17 and 20, 3600-6500, -0.08 to +0.07 dB for +125 to
# +313 ms).
RASTER_MAX_PIECES = 3072
# The raster layout off CUDA (on the first fit's numpy reference): for tests on small meshes
# only, the reference tries every place for every piece.
RASTER_ON_CPU = False


def _taken_cells(texels: torch.Tensor, gutter: int, grid: int) -> torch.Tensor:
    """[grid, grid] bool: cells touched by any face [F, 3, 2] (texels) grown by gutter / 2."""
    half = gutter / 2
    lo = torch.floor((texels.amin(1) - half) / gutter).long().clamp(0, grid - 1)  # [F, 2]
    hi = torch.floor((texels.amax(1) + half) / gutter).long().clamp(0, grid - 1) + 1
    # Each face's cell box as four corner increments of a 2D difference array.
    side = grid + 1
    counts = torch.zeros(side * side, dtype=torch.int64, device=texels.device)
    one = torch.ones(len(lo), dtype=torch.int64, device=texels.device)
    for y, x, sign in ((lo, lo, 1), (lo, hi, -1), (hi, lo, -1), (hi, hi, 1)):
        counts.index_add_(0, y[:, 1] * side + x[:, 0], sign * one)
    return counts.view(side, side).cumsum(0).cumsum(1)[:grid, :grid] > 0


def _shifts(width: int, height: int, every_shift: bool) -> list[tuple[int, int]]:
    """Lattice offsets (cells) tried in turn for width x height windows."""
    if every_shift:  # at most SHIFTS_PER_SIDE^2 of them for large windows
        step_x, step_y = -(-width // SHIFTS_PER_SIDE), -(-height // SHIFTS_PER_SIDE)
        return [(x, y) for y in range(0, height, step_y) for x in range(0, width, step_x)]
    return [(0, 0)] + ([(width // 2, height // 2)] if width > 1 or height > 1 else [])


def _drop_windows(
    taken: torch.Tensor, count: int, width: int, height: int, every_shift: bool
) -> np.ndarray:
    """Place `count` members, in order, in free width x height-cell windows of `taken`
    (updated in place) on the lattice and then the half-shifted lattice (or every shift of
    it, one after another) -> [count, 2] (x, y) cells, -1 where no window was free. Each
    free window takes the member of its rank among the free ones; a handful of kernels per
    lattice, one transfer after the first lattice (which usually places them all: the other
    lattices are then skipped, as they would take nothing) and one after the rest (each host
    sync and small launch counts here: the packing's trials drop hundreds of groups)."""
    grid = len(taken)
    where = np.full((count, 2), -1, np.int64)
    if width > grid or height > grid or count == 0:
        return where
    remaining = torch.full((), count, dtype=torch.int64, device=taken.device)
    takes, lattices = [], []
    flags = np.zeros(0, bool)
    for ox, oy in _shifts(width, height, every_shift):
        rows, columns = (grid - oy) // height, (grid - ox) // width
        if rows == 0 or columns == 0:
            continue
        region = taken[oy : oy + rows * height, ox : ox + columns * width]
        windows = region.view(rows, height, columns, width)
        free = ~windows.any(dim=(1, 3)).reshape(-1)  # in row order
        take = free & (torch.cumsum(free, 0) <= remaining)
        windows |= take.view(rows, 1, columns, 1)
        takes.append(take)
        lattices.append((ox, oy, columns))
        if len(takes) == 1:
            flags = take.cpu().numpy()
            placed = int(flags.sum())
            if placed == count:
                break
            remaining = remaining - placed
        else:
            remaining = remaining - take.sum()
    if not takes:
        return where
    if len(takes) > 1:
        flags = np.concatenate((flags, torch.cat(takes[1:]).cpu().numpy()))
    start = done = 0
    for (ox, oy, columns), take in zip(lattices, takes, strict=True):
        index = np.flatnonzero(flags[start : start + len(take)])
        start += len(take)
        where[done : done + len(index), 0] = ox + index % columns * width
        where[done : done + len(index), 1] = oy + index // columns * height
        done += len(index)
    return where


def _drop_all(
    taken: torch.Tensor,
    members: np.ndarray,
    cells: np.ndarray,
    every_shift: bool,
    all_or_none: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """`members` with windows `cells` [M, 2] into `taken`: largest windows first, then wider,
    then member order -> (placed members, their (x, y) cells); with `all_or_none` it stops at
    the first window size that does not all fit."""
    order = np.lexsort((members, -cells[:, 1], -cells[:, 0], -cells.prod(1)))
    members, cells = members[order], cells[order]
    key = cells[:, 0] * (int(cells.max(initial=0)) + 1) + cells[:, 1]
    placed, where = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)]
    for group in np.split(np.arange(len(members)), np.flatnonzero(np.diff(key)) + 1):
        if len(group) == 0:
            continue
        width, height = (int(v) for v in cells[group[0]])
        at = _drop_windows(taken, len(group), width, height, every_shift)
        done = at[:, 0] >= 0
        placed.append(members[group][done])
        where.append(at[done])
        if all_or_none and not done.all():
            break
    return np.concatenate(placed), np.concatenate(where)


def _try_scale(
    corners: torch.Tensor,
    piece: torch.Tensor,
    box_lo: torch.Tensor,
    extents: np.ndarray,
    scale: float,
    size: int,
    gutter: int,
) -> Packing | None:
    sizes, transposed = box_sizes(extents, scale, gutter)
    cells = -(-sizes // gutter)  # [C, 2] window cells (flat side first)
    small = cells.max(1) <= NEST_CELLS
    if not small.any():
        return None  # nothing to nest: the shelf packing is the layout
    origins = np.zeros((len(extents), 2), np.int64)
    large = np.nonzero(~small)[0]
    if len(large):
        found = first_fit_shelves(sizes[large], size, size)
        if found is None:
            return None
        origins[large] = found + gutter // 2
    packing = Packing(scale, origins, transposed)
    is_large = torch.from_numpy(~small).to(piece.device)
    faces = torch.nonzero(is_large[piece]).squeeze(1)
    texels = texel_corners(corners[faces], piece[faces], box_lo, packing)
    taken = _taken_cells(texels, gutter, size // gutter)
    members = np.nonzero(small)[0]
    placed, where = _drop_all(taken, members, cells[members], every_shift=False, all_or_none=True)
    if len(placed) < len(members):
        return None
    origins[placed] = where * gutter + gutter // 2
    return packing


def nest_pieces(
    corners: torch.Tensor,
    piece: torch.Tensor,
    box_lo: torch.Tensor,
    extents: np.ndarray,
    baseline: Packing,
    size: int,
    gutter: int,
    outline: torch.Tensor | None = None,
) -> Packing:
    """corners [F, 3, 2] (model units), piece [F], box_lo [C, 2] each piece's box corner,
    extents [C, 2] its size; baseline: the shelf packing; outline [F] bool, optional: the
    faces on their piece's outline, which alone shape the raster layout's pieces (it reads
    every face without) -> the layout at the largest scale found, the baseline where
    nesting finds none larger. On CUDA, up to RASTER_MAX_PIECES
    pieces, every piece is laid by its shape instead (pipeline/raster_layout.py), at
    RASTER_TRIALS scales from the baseline's to the area bound; the nesting's bisection runs
    only where none of them fits."""
    area = float((extents[:, 0] * extents[:, 1]).sum())
    if area <= 0 or gutter < 1:
        return baseline
    low, high = baseline.scale, float(np.sqrt(size * size / area))
    if _raster_here(corners) and high > low and len(extents) <= RASTER_MAX_PIECES:
        scales = low * (high / low) ** (np.arange(1, RASTER_TRIALS + 1) / RASTER_TRIALS)
        found = raster_layout(corners, piece, box_lo, extents, scales, size, gutter, outline)
        if found is not None:
            return found
    best = baseline
    for _ in range(NEST_STEPS):
        if high <= low * (1 + 1e-4):
            break
        scale = (low + high) / 2
        found = _try_scale(corners, piece, box_lo, extents, scale, size, gutter)
        if found is None:
            high = scale
        else:
            low, best = scale, found
    return best


def _raster_here(corners: torch.Tensor) -> bool:
    """Whether the raster layout runs: on CUDA with Triton, elsewhere where RASTER_ON_CPU."""
    return (corners.device.type == "cuda" and triton_available()) or RASTER_ON_CPU


def nest_faces(
    texels: torch.Tensor, moving: torch.Tensor, size: int, gutter: int
) -> torch.Tensor | None:
    """texels [F, 3, 2]: a layout; moving [F] bool: faces that become pieces of their own ->
    the layout with each of them moved, unturned, into a free window of the cells the other
    faces leave, or None where there is no room for all. A face that finds no window at its
    size tries again at half and a quarter of it (MOVED_SHRINK): these are the few faces a
    fold took out. Every other face keeps its texels, so it samples the texture as before."""
    grid = size // gutter
    if gutter < 1 or grid < 1:
        return None
    taken = _taken_cells(texels[~moving], gutter, grid)
    members = torch.nonzero(moving).squeeze(1)
    lo = texels[members].amin(1)  # [M, 2]
    extent = (texels[members].amax(1) - lo).cpu().numpy()
    origins = np.zeros((len(members), 2), np.int64)
    factor = np.ones(len(members))
    waiting = np.arange(len(members))
    for shrink in MOVED_SHRINK:
        sizes = np.maximum(np.ceil(extent[waiting] * shrink), 1).astype(np.int64) + gutter
        cells = -(-sizes // gutter)  # [M, 2] window cells
        placed, where = _drop_all(taken, waiting, cells, every_shift=True, all_or_none=False)
        origins[placed] = where * gutter + gutter // 2
        factor[placed] = shrink
        waiting = np.setdiff1d(waiting, placed)
        if len(waiting) == 0:
            break
    if len(waiting):
        return None
    moved = texels.clone()
    scale = torch.from_numpy(factor).to(texels)[:, None, None]
    start = torch.from_numpy(origins).to(texels)[:, None, :]
    moved[members] = (texels[members] - lo[:, None, :]) * scale + start
    return moved
