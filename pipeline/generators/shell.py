"""Surface nets of a two-sided height field, sparse: the cost follows the surface, not the volume.

The solid is { (x, y, z) : |y - c| < H(x, z) } on a grid of (R + 1)^3 nodes, where H is given
on the (x, z) nodes in node units (negative outside the silhouette) and c = R / 2 is the
mid-plane. Naive surface nets (Gibson 1998, "Constrained elastic surface nets") puts one
vertex in every cell whose 8 corners change sign, at the mean of its edge crossings, and one
quad across every sign-changing grid edge. Because the field is a height field, the active
cells of a column form one interval per side, so they are enumerated directly from H.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Shell", "extract_shell"]


@dataclass
class Shell:
    vertices: torch.Tensor  # [V, 3] float32, node units (x, y, z), one vertex per active cell
    faces: torch.Tensor  # [F, 3] int64, counter-clockwise seen from outside
    cells: torch.Tensor  # [V, 3] int64 (i, j, k) of the cell that holds each vertex


def _active_cells(heights: torch.Tensor, c: int) -> torch.Tensor:
    """[M, 3] int64 (i, j, k) of the upper half's active cells (j >= c)."""
    R = heights.shape[0] - 1
    corners = torch.stack(
        (heights[:-1, :-1], heights[1:, :-1], heights[:-1, 1:], heights[1:, 1:]), dim=0
    )
    h_min = corners.amin(0)  # [R, R] over (i, k)
    h_max = corners.amax(0)
    # In the upper half a cell at layer j spans |y| in [j - c, j + 1 - c]. It is active unless
    # all 8 corners are inside (h_min > j + 1 - c) or all outside (h_max <= j - c).
    # With n = j - c an integer: n >= h_min - 1 and n < h_max. Kept in integer offsets, since
    # h + c rounds in float32 and would drop cells whose height sits just above an integer.
    j_lo = (c + torch.ceil(h_min).long() - 1).clamp(min=c)
    j_hi = (c + torch.ceil(h_max).long() - 1).clamp(max=R - 1)
    counts = (j_hi - j_lo + 1).clamp(min=0).flatten()
    columns = torch.arange(R * R, device=heights.device).repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts
    offsets = torch.arange(len(columns), device=heights.device) - starts.repeat_interleave(counts)
    j = j_lo.flatten()[columns] + offsets
    return torch.stack((columns // R, j, columns % R), dim=1)


def _cell_vertices(heights: torch.Tensor, cells: torch.Tensor, c: int) -> torch.Tensor:
    """Mean of the edge crossings of each upper-half cell: [M, 3] float32 node units."""
    i, j, k = cells.unbind(1)
    y0 = (j - c).to(heights.dtype)  # |y| at the cell's lower and upper node layers
    total = torch.zeros(len(cells), 3, dtype=heights.dtype, device=heights.device)
    count = torch.zeros(len(cells), dtype=heights.dtype, device=heights.device)
    h = {(di, dk): heights[i + di, k + dk] for di in (0, 1) for dk in (0, 1)}

    def add(hit: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> None:
        point = torch.stack((x, y, z), dim=1)
        total.add_(torch.where(hit[:, None], point, torch.zeros_like(point)))
        count.add_(hit.to(count.dtype))

    fi, fj, fk = i.to(heights.dtype), j.to(heights.dtype), k.to(heights.dtype)
    for (di, dk), hc in h.items():  # vertical edges: the crossing is at |y| = H
        hit = (hc > y0) != (hc > y0 + 1)
        add(hit, fi + di, c + hc, fk + dk)
    for dy in (0, 1):  # horizontal edges on the cell's lower and upper layers
        level = y0 + dy
        for dk in (0, 1):  # along x
            f0, f1 = h[(0, dk)] - level, h[(1, dk)] - level
            hit = (f0 > 0) != (f1 > 0)
            t = f0 / torch.where(hit, f0 - f1, torch.ones_like(f0))
            add(hit, fi + t, fj + dy, fk + dk)
        for di in (0, 1):  # along z
            f0, f1 = h[(di, 0)] - level, h[(di, 1)] - level
            hit = (f0 > 0) != (f1 > 0)
            t = f0 / torch.where(hit, f0 - f1, torch.ones_like(f0))
            add(hit, fi + di, fj + dy, fk + t)
    return total / count.clamp(min=1)[:, None]


def _quads(heights: torch.Tensor, cells: torch.Tensor, keys: torch.Tensor, c: int) -> torch.Tensor:
    """[Q, 4] vertex indices of the quads across each cell's three min-corner edges."""
    R = heights.shape[0] - 1
    i, j, k = cells.unbind(1)

    def inside(ii: torch.Tensor, jj: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        return heights[ii, kk] > (jj - c).abs().to(heights.dtype)

    def lookup(ii: torch.Tensor, jj: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(keys, (ii * R + jj) * R + kk)

    here = inside(i, j, k)
    quads = []
    # Each sign-changing edge belongs to 4 cells; listing it from the cell at its min corner
    # counts it once. The ring orders are counter-clockwise about +x, +y, +z respectively.
    for axis, ring in (
        (0, ((0, -1, -1), (0, 0, -1), (0, 0, 0), (0, -1, 0))),
        (1, ((-1, 0, -1), (-1, 0, 0), (0, 0, 0), (0, 0, -1))),
        (2, ((-1, -1, 0), (0, -1, 0), (0, 0, 0), (-1, 0, 0))),
    ):
        step = [0, 0, 0]
        step[axis] = 1
        there = inside(i + step[0], j + step[1], k + step[2])
        crossing = here != there
        if not bool(crossing.any()):
            continue
        ci, cj, ck, out = i[crossing], j[crossing], k[crossing], here[crossing]
        ring_ids = torch.stack(
            [lookup(ci + a, cj + b, ck + d) for a, b, d in ring], dim=1
        )  # [Q, 4]
        # Inside at the lower end means the outward normal points along +axis.
        quads.append(torch.where(out[:, None], ring_ids, ring_ids.flip(1)))
    if not quads:
        return torch.zeros(0, 4, dtype=torch.long, device=heights.device)
    return torch.cat(quads)


def _split_quads(quads: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Two triangles per quad, cut along the shorter diagonal."""
    a, b, c, d = quads.unbind(1)
    ac = (vertices[a] - vertices[c]).square().sum(1)
    bd = (vertices[b] - vertices[d]).square().sum(1)
    use_ac = (ac <= bd)[:, None]
    first = torch.where(use_ac, torch.stack((a, b, c), 1), torch.stack((a, b, d), 1))
    second = torch.where(use_ac, torch.stack((a, c, d), 1), torch.stack((b, c, d), 1))
    return torch.cat((first, second))


def extract_shell(heights: torch.Tensor) -> Shell:
    """heights: [R + 1, R + 1] float32 on the (x, z) nodes, node units; R even.

    Requires H <= 0 on the border nodes and H < R / 2 - 1 everywhere (the solid must not
    touch the grid's faces), which the caller guarantees by clamping.
    """
    R = heights.shape[0] - 1
    if heights.shape != (R + 1, R + 1) or R % 2:
        raise ValueError(f"heights must be [R + 1, R + 1] with R even, got {tuple(heights.shape)}")
    c = R // 2
    upper = _active_cells(heights, c)
    upper_vertices = _cell_vertices(heights, upper, c)
    # The lower half is the mirror image: cell layer j <-> 2c - 1 - j, y <-> 2c - y.
    lower = upper * torch.tensor([1, -1, 1], device=upper.device) + torch.tensor(
        [0, 2 * c - 1, 0], device=upper.device
    )
    lower_vertices = upper_vertices * torch.tensor([1.0, -1.0, 1.0], device=heights.device)
    lower_vertices[:, 1] += 2 * c
    cells = torch.cat((upper, lower))
    vertices = torch.cat((upper_vertices, lower_vertices))
    keys = (cells[:, 0] * R + cells[:, 1]) * R + cells[:, 2]
    keys, order = torch.sort(keys, stable=True)
    cells, vertices = cells[order], vertices[order]
    quads = _quads(heights, cells, keys, c)
    return Shell(vertices, _split_quads(quads, vertices), cells)
