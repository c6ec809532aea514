"""Shelf packing of chart rectangles into one square texture, at the largest uniform scale.

Each chart's box, at `scale` texels per model unit, rounded up and grown by the gutter, is
turned to lie flat (width >= height), and the boxes are laid left to right on shelves,
tallest first (the "next fit decreasing height" heuristic; Coffman et al. 1980). Neighbouring
charts are at least `gutter` texels apart. The scale is the largest that fits, by bisection.

`cell_corners` is the last resort where the boxes do not fit even with a 1-texel gutter: each
chart gets a square cell of an even grid and is scaled on its own to fit it, so any number
of charts has a place, though charts in cells under two texels share texels.

`first_fit_shelves` lays each box on the first shelf with room left instead ("first fit
decreasing height", same paper): a box lower than the shelf that closed early fills the rest
of that shelf's width rather than waiting for a new one. A loop over the boxes on the host;
the nesting (pipeline/nesting.py) uses it for its few trial scales, where the room above the
lower boxes is filled by nested pieces.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Packing",
    "box_sizes",
    "cell_corners",
    "first_fit_shelves",
    "pack_rectangles",
    "shelves",
    "texel_corners",
]

# Halvings of the scale interval: 16 leave it within 2^-16 of the best, far below a texel.
BISECTION_STEPS = 16


@dataclass(frozen=True)
class Packing:
    scale: float  # texels per model unit
    origins: np.ndarray  # [C, 2] int64 texel (x, y) of each chart's box, gutter excluded
    transposed: np.ndarray  # [C] bool: the chart's (u, v) are swapped to lie flat


def box_sizes(
    extents: np.ndarray, scale: float | np.ndarray, gutter: int
) -> tuple[np.ndarray, np.ndarray]:
    """[C, 2] texel sizes (gutter included), flat side first, and the [C] transposed flags;
    with scales [S, 1, 1], [S, C, 2] and [S, C]."""
    sizes = np.maximum(np.ceil(extents * scale), 1).astype(np.int64) + gutter
    transposed = sizes[..., 1] > sizes[..., 0]
    return np.where(transposed[..., None], sizes[..., ::-1], sizes), transposed


def shelves(sizes: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """[C, 2] box origins, or None when the boxes do not fit."""
    order = np.lexsort((np.arange(len(sizes)), -sizes[:, 0], -sizes[:, 1]))
    widths, heights = sizes[order, 0], sizes[order, 1]
    ends = np.cumsum(widths)  # each box's right end, were all on one shelf
    ends_list = ends.tolist()
    # A shelf holds the boxes whose running width from its first stays within the texture
    # (one bisection of the running widths a shelf); its first box is its tallest.
    starts: list[int] = []
    tops: list[int] = []
    y = start = 0
    while start < len(order):
        stop = bisect.bisect_right(ends_list, (ends_list[start - 1] if start else 0) + width)
        if stop == start:  # a single box wider than the texture
            return None
        if y + int(heights[start]) > height:
            return None
        starts.append(start)
        tops.append(y)
        y += int(heights[start])
        start = stop
    lefts = ends - widths  # from the first box's left, were all on one shelf
    first = np.asarray(starts, np.int64)
    shelf = np.repeat(np.arange(len(first)), np.diff(first, append=len(order)))
    origins = np.zeros((len(sizes), 2), np.int64)
    origins[order, 0] = lefts - lefts[first][shelf]
    origins[order, 1] = np.asarray(tops, np.int64)[shelf]
    return origins


def first_fit_shelves(sizes: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """[C, 2] box origins, each box on the first shelf it fits beside, or None when the
    boxes do not fit."""
    order = np.lexsort((np.arange(len(sizes)), -sizes[:, 0], -sizes[:, 1]))
    origins = np.zeros((len(sizes), 2), np.int64)
    shelf_y: list[int] = []
    shelf_end: list[int] = []  # the first free x on each shelf
    top = 0
    box_widths, box_heights = sizes[:, 0].tolist(), sizes[:, 1].tolist()
    for box in order.tolist():
        w = box_widths[box]
        if w > width:
            return None
        for shelf, end in enumerate(shelf_end):
            if end + w <= width:
                origins[box] = (end, shelf_y[shelf])
                shelf_end[shelf] = end + w
                break
        else:  # tallest first: the new shelf is as tall as this box
            if top + box_heights[box] > height:
                return None
            origins[box] = (0, top)
            shelf_y.append(top)
            shelf_end.append(w)
            top += box_heights[box]
    return origins


def pack_rectangles(extents: np.ndarray, size: int, gutter: int) -> Packing | None:
    """extents: [C, 2] chart sizes in model units -> the placement at the largest scale, or
    None when the boxes do not fit at any scale (each takes at least (gutter + 1)^2 texels)."""
    if len(extents) == 0:
        return Packing(1.0, np.zeros((0, 2), np.int64), np.zeros(0, bool))
    if len(extents) * (gutter + 1) ** 2 > size * size:
        return None
    extents = np.maximum(extents.astype(np.float64), 0.0)
    area = float((extents[:, 0] * extents[:, 1]).sum())
    longest = float(extents.max())
    # No scale beyond filling the texture with chart area, or the longest side with one chart.
    high = min(np.sqrt(size * size / area) if area > 0 else np.inf, size / max(longest, 1e-12))
    low = 0.0
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for step in range(BISECTION_STEPS):
        scale = high if step == 0 else (low + high) / 2
        sizes, transposed = box_sizes(extents, scale, gutter)
        origins = shelves(sizes, size, size)
        if origins is None:
            high = scale
        else:
            low = scale
            best = (scale, origins, transposed)
    if best is None:
        return None
    scale, origins, transposed = best
    # Each box starts with half the gutter, so a chart is that far from the box's edge.
    return Packing(scale, origins + gutter // 2, transposed)


def texel_corners(
    corners: torch.Tensor, owner: torch.Tensor, box_lo: torch.Tensor, packing: Packing
) -> torch.Tensor:
    """corners [F, 3, 2] (model units) of faces of pieces `owner` [F], box_lo [C, 2] each
    piece's box corner -> [F, 3, 2] float64 texels where `packing` lays them."""
    origins = torch.from_numpy(packing.origins).to(corners)
    flip = torch.from_numpy(packing.transposed).to(corners.device)[owner]
    local = (corners - box_lo[owner][:, None, :]) * packing.scale  # from the box corner
    local = torch.where(flip[:, None, None], local.flip(-1), local)
    return local + origins[owner][:, None, :]


def cell_corners(
    corners: torch.Tensor,
    owner: torch.Tensor,
    box_lo: torch.Tensor,
    extents: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """corners [F, 3, 2] (model units) of faces of pieces `owner` [F], box_lo and extents
    [C, 2] each piece's box -> [F, 3, 2] float64 texels, piece c in cell c (row order) of a
    ceil(sqrt(C))^2 grid over the texture, scaled to the cell less a texel (half the cell
    where it is under two) and centred in it."""
    count = len(box_lo)
    across = max(1, math.ceil(math.sqrt(count)))
    cell = size / across
    side = max(cell - 1.0, 0.5 * cell)
    index = torch.arange(count, device=corners.device)
    cell_lo = torch.stack((index % across, index // across), 1).to(torch.float64) * cell
    longest = extents.to(torch.float64).amax(1).clamp_min(1e-12)  # [C]
    scale = side / longest
    margin = (cell - extents.to(torch.float64) * scale[:, None]) / 2  # [C, 2] centring
    lo, factor = box_lo.to(torch.float64)[owner], scale[owner]
    local = (corners.to(torch.float64) - lo[:, None, :]) * factor[:, None, None]
    return local + (cell_lo + margin)[owner][:, None, :]
