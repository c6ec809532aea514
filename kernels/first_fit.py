"""first_fit: lay shapes one after another at the first free place on a grid of cells.

`first_fit(lo, hi, row_start, width, grid)` -> [S, P, 2] int32: the (x, y) cell of each
shape's corner, -1 from the first shape that finds no room on. There are S independent
problems (the atlas's trial scales), each a square grid of `grid` x `grid` cells, empty at
the start, and the same P shapes in the same order, sized per problem. A shape is a stack of
rows, each the run of cells [lo, hi) from the shape's left side (an empty row: lo = hi = 0);
shape p of problem s has rows row_start[s, p] .. row_start[s, p + 1] of lo[s], hi[s] (the
first of them not empty) and `width` columns (at least every hi). Each shape goes to the
first place, lowest y then lowest x, where every row's run lies on free cells inside the
grid, and takes those cells. The place is found by the shape's rows, not its box: a shape
drops into the notches and holes those before it left (bottom-left fill on a raster, as in
Jakobs 1996, "On genetic algorithms for the packing of polygons"; here greedy, on cells).
Integer work only: the same input gives the same places on every path.

Paths:
- `_first_fit_triton` (CUDA; CPU tensors under TRITON_INTERPRET=1): one program per problem
  walks the shapes in turn. The grid is held as free runs (the free cells from each cell
  rightwards in its row) and each row's longest run. A shape's candidate rows are those from
  the lowest row with a free cell where each of its rows finds a run as long as it needs in
  the row it would cover; the next BLOCK_Y of them, lowest first, are tested at every x at
  once (a shape row fits at x when the run at x + lo reaches hi - lo: one coalesced load per
  shape row), until a block holds a place. Taking cells [c0, c1) of a row sets their runs to
  0 and caps each run left of them at its distance to c0 (no scan: the runs stay exact). The
  programs are independent: S problems cost about as much as one.
- `first_fit_reference` (numpy): the same places, every candidate tested at once per shape.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference still imports
    triton = None

__all__ = ["compile_variants", "first_fit", "first_fit_reference"]

# Triton: candidate rows per step of the search, 4 x 512 cells, 8 a lane of 8 warps: the
# fastest of 4, 8, 16 and 32 rows with 4, 8 or 16 warps on prompts 0, 1, 18 and 1M synthetic
# faces (H200, perf/RESULTS.md). Stopping a step's rows once no place is left in it, or
# reading four shape rows at once, was slower. Since the steps take only candidate rows,
# 8 rows a step from MANY_SHAPES shapes (H100, against 4: 8 to 21% less kernel time on 630
# to 1662 shapes; 2% and 7% more on 116 and 536, 8% less on 463).
BLOCK_Y, NUM_WARPS = 4, 8
BLOCK_Y_MANY, MANY_SHAPES = 8, 512


def _check(
    lo: torch.Tensor, hi: torch.Tensor, row_start: torch.Tensor, width: torch.Tensor
) -> None:
    if width.ndim != 2:
        raise ValueError(f"width must be [S, P], got {tuple(width.shape)}")
    S, P = width.shape
    if lo.shape != hi.shape or lo.ndim != 2 or lo.shape[0] != S:
        shapes = f"{tuple(lo.shape)} and {tuple(hi.shape)}"
        raise ValueError(f"lo and hi must be [S, R] with S = {S}, got {shapes}")
    if tuple(row_start.shape) != (S, P + 1):
        shape = tuple(row_start.shape)
        raise ValueError(f"row_start must be [S, P + 1] = {(S, P + 1)}, got {shape}")


def first_fit_reference(
    lo: np.ndarray, hi: np.ndarray, row_start: np.ndarray, width: np.ndarray, grid: int
) -> np.ndarray:
    """The numpy twin of `first_fit` (small grids: every place is tried for every shape)."""
    S, P = width.shape
    placed = np.full((S, P, 2), -1, np.int32)
    for s in range(S):
        taken = np.zeros((grid, grid), bool)
        floor = 0  # the lowest row with a free cell: shapes are placed from there up
        for p in range(P):
            rows = range(int(row_start[s, p]), int(row_start[s, p + 1]))
            h, w = len(rows), int(width[s, p])
            if h > grid or w > grid:
                break
            # fits[y, x]: every row's run free at (x + lo, y + r); cumulative sums per row.
            fits = np.ones((grid - h + 1, grid - w + 1), bool)
            free_before = np.concatenate(
                (np.zeros((grid, 1), np.int64), np.cumsum(~taken, 1)), 1
            )  # [grid, grid + 1] free cells left of each column
            x = np.arange(grid - w + 1)
            for r, row in enumerate(rows):
                a, b = int(lo[s, row]), int(hi[s, row])
                if b <= a:
                    continue
                free = free_before[r : r + grid - h + 1]  # rows y + r for every y
                fits &= free[:, x + b] - free[:, x + a] == b - a
            where = np.flatnonzero(fits[floor:])
            if len(where) == 0:
                break
            y, x0 = divmod(int(where[0]), grid - w + 1)
            y += floor
            for r, row in enumerate(rows):
                taken[y + r, x0 + int(lo[s, row]) : x0 + int(hi[s, row])] = True
            placed[s, p] = (x0, y)
            while floor < grid and taken[floor].all():
                floor += 1
    return placed


if triton is not None:
    # The counts vary per asset: unspecialised, one compile (divisible by 16 or not would be
    # four, each ~0.4 s on the H100 the first time a request met it).
    @triton.jit(do_not_specialize=["pieces", "rows_stride"])
    def _first_fit_kernel(
        run_ptr,  # [S, grid, grid] int32 free runs, grid - x at the start
        widest_ptr,  # [S, grid] int32 each row's longest free run, grid at the start
        lo_ptr,
        hi_ptr,  # [S, R] int32 row runs
        start_ptr,  # [S, P + 1] int32
        width_ptr,  # [S, P] int32
        out_ptr,  # [S, P, 2] int32, -1 at the start
        pieces,
        rows_stride,
        grid,
        BLOCK_X: tl.constexpr,
        BLOCK_Y: tl.constexpr,
    ):
        s = tl.program_id(0).to(tl.int64)
        run = run_ptr + s * grid * grid
        widest = widest_ptr + s * grid
        lo_row = lo_ptr + s * rows_stride
        hi_row = hi_ptr + s * rows_stride
        xs = tl.arange(0, BLOCK_X)  # columns, or rows where a vector runs over rows
        dy = tl.arange(0, BLOCK_Y)
        none = BLOCK_Y * BLOCK_X * grid
        floor = 0
        failed = 0
        for p in range(pieces):
            start = tl.load(start_ptr + s * (pieces + 1) + p)
            end = tl.load(start_ptr + s * (pieces + 1) + p + 1)
            height = end - start
            width = tl.load(width_ptr + s * pieces + p)
            best = none
            if failed == 0:
                # Rows where the shape may sit: each of its rows finds a free run as long in
                # the grid row it would cover. Only blocks from those rows are searched.
                may = (xs >= floor) & (xs + height <= grid) & (xs * 0 + width <= grid)
                for r in range(start, end):
                    need = tl.load(hi_row + r) - tl.load(lo_row + r)
                    longest = tl.load(widest + xs + (r - start), mask=may, other=0)
                    may = may & (longest >= need)
                # Blocks of the next BLOCK_Y of those rows, lowest first (grid past the last).
                rank = tl.cumsum(may.to(tl.int32), 0)  # candidates up to each row
                count = tl.max(rank, 0)
                done = 0
                while (best == none) & (done < count):
                    wanted = may[None, :] & (rank[None, :] == done + 1 + dy[:, None])
                    ys = tl.min(tl.where(wanted, xs[None, :], grid), 1)
                    fits = (ys[:, None] + height <= grid) & (xs[None, :] + width <= grid)
                    for r in range(start, end):
                        a = tl.load(lo_row + r)
                        b = tl.load(hi_row + r)
                        offsets = (ys[:, None] + (r - start)) * grid + xs[None, :] + a
                        free = tl.load(run + offsets, mask=fits, other=0)
                        fits = fits & (free >= b - a)  # an empty row (b = a) always fits
                    code = tl.where(fits, ys[:, None] * BLOCK_X + xs[None, :], none)
                    best = tl.min(tl.min(code, 1), 0)
                    done += BLOCK_Y
            if best < none:
                y = best // BLOCK_X
                x = best % BLOCK_X
                tl.store(out_ptr + (s * pieces + p) * 2, x)
                tl.store(out_ptr + (s * pieces + p) * 2 + 1, y)
                tl.debug_barrier()
                # Update the runs of each row the shape takes cells in: the taken cells
                # [x + a, x + b) have none, a run left of them now stops at x + a, the rest
                # are as they were.
                inside = xs < grid
                for r in range(start, end):
                    a = tl.load(lo_row + r)
                    b = tl.load(hi_row + r)
                    if b > a:
                        row = y + r - start
                        free = tl.load(run + row * grid + xs, mask=inside, other=0)
                        runs = tl.where(
                            xs < x + b, tl.minimum(free, tl.maximum(x + a - xs, 0)), free
                        )
                        tl.store(run + row * grid + xs, runs, mask=inside)
                        tl.store(widest + row, tl.max(runs, 0))
                tl.debug_barrier()
                # The lowest row with a free cell (rows under it are full).
                while (floor < grid) & (tl.load(widest + tl.minimum(floor, grid - 1)) == 0):
                    floor += 1
            else:
                failed = 1


def _first_fit_triton(
    lo: torch.Tensor, hi: torch.Tensor, row_start: torch.Tensor, width: torch.Tensor, grid: int
) -> torch.Tensor:
    S, P = width.shape
    device = width.device
    out = torch.full((S, P, 2), -1, dtype=torch.int32, device=device)
    if S == 0 or P == 0 or grid < 1:
        return out
    columns = torch.arange(grid, dtype=torch.int32, device=device)
    run = (grid - columns).expand(S, grid, grid).contiguous()
    widest = torch.full((S, grid), grid, dtype=torch.int32, device=device)
    lo, hi = lo.to(torch.int32).contiguous(), hi.to(torch.int32).contiguous()
    _first_fit_kernel[(S,)](
        run,
        widest,
        lo,
        hi,
        row_start.to(torch.int32).contiguous(),
        width.to(torch.int32).contiguous(),
        out,
        P,
        lo.shape[1],
        grid,
        BLOCK_X=max(16, triton.next_power_of_2(grid)),
        BLOCK_Y=BLOCK_Y_MANY if P >= MANY_SHAPES else BLOCK_Y,
        num_warps=NUM_WARPS,
    )
    return out


def compile_variants(grid: int, device: torch.device) -> None:
    """Launch the kernel once in each variant it takes on a `grid`-cell texture (fewer and at
    least MANY_SHAPES shapes), on shapes of one cell, so a warm-up compiles what any later
    layout at that grid launches. Nothing to do off CUDA."""
    if triton is None or device.type != "cuda" or grid < 1:
        return
    for shapes in (1, MANY_SHAPES):
        ones = torch.ones((1, shapes), dtype=torch.int32, device=device)
        start = torch.arange(shapes + 1, dtype=torch.int32, device=device)[None]
        _first_fit_triton(torch.zeros_like(ones), ones, start, ones, grid)


def first_fit(
    lo: torch.Tensor, hi: torch.Tensor, row_start: torch.Tensor, width: torch.Tensor, grid: int
) -> torch.Tensor:
    """[S, R] row runs lo, hi, [S, P + 1] row_start, [S, P] width -> [S, P, 2] int32 places
    (x, y), -1 from the first shape without room on. Triton on CUDA, the numpy reference
    elsewhere (small grids only: it tries every place for every shape)."""
    _check(lo, hi, row_start, width)
    if triton is not None and width.device.type == "cuda":
        return _first_fit_triton(lo, hi, row_start, width, grid)
    placed = first_fit_reference(
        lo.cpu().numpy(), hi.cpu().numpy(), row_start.cpu().numpy(), width.cpu().numpy(), grid
    )
    return torch.from_numpy(placed).to(width.device)
