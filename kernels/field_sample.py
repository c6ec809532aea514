"""field_sample: trilinear sampling of a sparse voxel attribute field, never empty-handed.

`field_sample(coords, attrs, resolution, points)` -> [M, C]. Voxel (i, j, k) has its centre
at -0.5 + (i + 0.5) / R on each axis. Each query blends the 8 voxels around it with trilinear
weights renormalised over the voxels that are present; a query with none of the 8 present
takes the nearest present voxel (by Euclidean distance; ties to the first offset in a fixed
order) among those within SEARCH_RADIUS voxels of its nearest voxel centre on every axis, and
beyond that the nearest present voxel anywhere. So a point on the surface never reads 0 for
lack of neighbours: the base miner's black texels come from exactly that.

Lookups use the voxels' linear keys sorted once per call (`torch.searchsorted`): deterministic
on every device. `field_sample_reference` (numpy, a dict of voxels) is beside it.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["SEARCH_RADIUS", "field_sample", "field_sample_reference"]

# Voxels searched around a query that has no present neighbour before falling back to a
# brute-force nearest: simplified surfaces stray at most a voxel or two from the field.
SEARCH_RADIUS = 3
# Queries searched at once (each holds (2 * SEARCH_RADIUS + 1)^3 candidates).
SEARCH_CHUNK = 4096
# Queries compared at once against every voxel in the brute-force fallback.
BRUTE_FORCE_CHUNK = 1024
# Up to this many cells (R^3), lookups index a dense grid of voxel rows (4 bytes a cell)
# instead of binary-searching the sorted keys: 256^3 costs 64 MB and makes the CPU path
# several times faster; TRELLIS.2's 1024^3 fields always take the sorted keys.
DENSE_LOOKUP_CELLS = 256**3


Array = torch.Tensor | np.ndarray


def _check(coords: Array, attrs: Array, resolution: int, points: Array) -> None:
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must be [N, 3], got {tuple(coords.shape)}")
    if attrs.ndim != 2 or attrs.shape[0] != coords.shape[0]:
        raise ValueError(f"attrs must be [N, C], N = {coords.shape[0]}; got {tuple(attrs.shape)}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [M, 3], got {tuple(points.shape)}")
    if resolution < 1 or coords.shape[0] == 0:
        raise ValueError("the field needs a positive resolution and at least one voxel")
    if coords.min() < 0 or coords.max() >= resolution:
        raise ValueError(
            f"coords must lie in [0, {resolution}), got [{coords.min()}, {coords.max()}]"
        )


def field_sample(
    coords: torch.Tensor, attrs: torch.Tensor, resolution: int, points: torch.Tensor
) -> torch.Tensor:
    """coords [N, 3] int, attrs [N, C] float, points [M, 3] float -> [M, C] float32."""
    _check(coords, attrs, resolution, points)
    return _field_sample_torch(coords.long(), attrs.float(), resolution, points.float())


def _cube_offsets(radius: int) -> torch.Tensor:
    """[(2r + 1)^3, 3] integer offsets in [-r, r]^3, in itertools.product order."""
    span = range(-radius, radius + 1)
    return torch.tensor(list(itertools.product(span, repeat=3)), dtype=torch.long)


def _field_sample_torch(
    coords: torch.Tensor, attrs: torch.Tensor, R: int, points: torch.Tensor
) -> torch.Tensor:
    device = points.device
    M = points.shape[0]
    keys = (coords[:, 0] * R + coords[:, 1]) * R + coords[:, 2]
    keys, order = torch.sort(keys, stable=True)
    input_attrs = attrs
    attrs = attrs[order]

    dense = None
    if R**3 <= DENSE_LOOKUP_CELLS:
        dense = torch.full((R**3,), -1, dtype=torch.int32, device=device)
        # A repeated voxel keeps its first row, as the sorted-key search finds it; writing only
        # the first of each run keeps the scatter free of duplicate indices.
        first = torch.ones(len(keys), dtype=torch.bool, device=device)
        first[1:] = keys[1:] != keys[:-1]
        rows = torch.arange(len(keys), device=device, dtype=torch.int32)
        dense[keys[first]] = rows[first]

    def find(cells: torch.Tensor) -> torch.Tensor:
        """[..., 3] voxel indices -> [...] row in the sorted field, or -1."""
        valid = ((cells >= 0) & (cells < R)).all(-1)
        key = (cells[..., 0] * R + cells[..., 1]) * R + cells[..., 2]
        if dense is not None:
            row = dense[torch.where(valid, key, 0)].long()
            return torch.where(valid, row, -1)
        row = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        return torch.where(valid & (keys[row] == key), row, -1)

    # 1. Trilinear over the 8 voxel centres around each point, renormalised over those present.
    q = (points + 0.5) * R - 0.5  # continuous voxel index: centres at integers
    base = torch.floor(q).long()
    frac = q - base
    total = torch.zeros(M, attrs.shape[1], dtype=torch.float32, device=device)
    weight = torch.zeros(M, dtype=torch.float32, device=device)
    for corner in itertools.product((0, 1), repeat=3):
        offset = torch.tensor(corner, device=device)
        w = torch.prod(torch.where(offset.bool(), frac, 1 - frac), dim=1)
        row = find(base + offset)
        present = row >= 0
        w = torch.where(present, w, torch.zeros_like(w))
        total += w[:, None] * attrs[row.clamp(min=0)]
        weight += w
    result = total / weight.clamp(min=1e-12)[:, None]
    # A corner weight can be exactly 0 on a voxel face: count a point as covered only if some
    # present voxel carries weight.
    missing = torch.nonzero(weight <= 1e-12).flatten()
    if len(missing) == 0:
        return result
    # 2. The nearest present voxel within SEARCH_RADIUS voxels of the nearest voxel centre.
    offsets = _cube_offsets(SEARCH_RADIUS).to(device)  # [K, 3]
    found_any = torch.zeros(len(missing), dtype=torch.bool, device=device)
    for start in range(0, len(missing), SEARCH_CHUNK):
        chunk = missing[start : start + SEARCH_CHUNK]
        cells = torch.round(q[chunk]).long()[:, None, :] + offsets[None]  # [m, K, 3]
        rows = find(cells)
        dist = ((cells.float() - q[chunk][:, None, :]) ** 2).sum(-1)
        dist = torch.where(rows >= 0, dist, torch.full_like(dist, float("inf")))
        best = torch.argmin(dist, dim=1)  # the first minimum: ties go to the earlier offset
        found = torch.isfinite(dist.gather(1, best[:, None])[:, 0])
        result[chunk[found]] = attrs[rows.gather(1, best[:, None])[:, 0][found]]
        found_any[start : start + len(chunk)] = found
    missing = missing[~found_any]
    # 3. Far from everything: the nearest voxel centre, by brute force in chunks, in input
    #    order so that a tie goes to the lowest input row.
    centres = (coords.float() + 0.5) / R - 0.5
    for start in range(0, len(missing), BRUTE_FORCE_CHUNK):
        chunk = missing[start : start + BRUTE_FORCE_CHUNK]
        d = torch.cdist(points[chunk], centres)
        result[chunk] = input_attrs[torch.argmin(d, dim=1)]
    return result


def field_sample_reference(
    coords: np.ndarray, attrs: np.ndarray, resolution: int, points: np.ndarray
) -> np.ndarray:
    """numpy twin of `field_sample`, one point at a time with a dict of voxels."""
    _check(coords, attrs, resolution, points)
    R = resolution
    table: dict[tuple[int, ...], int] = {}
    for i, c in enumerate(coords):
        table.setdefault(tuple(int(v) for v in c), i)
    out = np.zeros((len(points), attrs.shape[1]), np.float32)
    centres = (coords.astype(np.float64) + 0.5) / R - 0.5
    for m, p in enumerate(points.astype(np.float32)):
        q = (p + np.float32(0.5)) * np.float32(R) - np.float32(0.5)
        base = np.floor(q).astype(np.int64)
        frac = q - base
        total, weight = np.zeros(attrs.shape[1]), 0.0
        for corner in itertools.product((0, 1), repeat=3):
            w = float(np.prod(np.where(np.array(corner) == 1, frac, 1 - frac)))
            row = table.get(tuple(int(v) for v in base + np.array(corner)))
            if row is not None:
                total += w * attrs[row]
                weight += w
        if weight > 1e-12:
            out[m] = total / weight
            continue
        best = None
        centre = np.round(q).astype(np.int64)
        span = range(-SEARCH_RADIUS, SEARCH_RADIUS + 1)
        for offset in itertools.product(span, repeat=3):
            cell = centre + np.array(offset)
            row = table.get(tuple(int(v) for v in cell))
            if row is None:
                continue
            d = float(((cell - q) ** 2).sum())
            if best is None or d < best[0]:
                best = (d, row)
        if best is None:
            best = (0.0, int(np.argmin(((centres - p) ** 2).sum(1))))
        out[m] = attrs[best[1]]
    return out
