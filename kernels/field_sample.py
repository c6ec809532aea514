"""field_sample: trilinear sampling of a sparse voxel attribute field, never empty-handed.

`field_sample(coords, attrs, resolution, points)` -> [M, C]. Voxel (i, j, k) has its centre
at -0.5 + (i + 0.5) / R on each axis. Each query blends the 8 voxels around it with trilinear
weights renormalised over the voxels that are present; a query with none of the 8 present
takes the nearest present voxel (by Euclidean distance; ties to the first offset in a fixed
order) among those within SEARCH_RADIUS voxels of its nearest voxel centre on every axis, and
beyond that the nearest present voxel anywhere. So a point on the surface never reads 0 for
lack of neighbours: the base miner's black texels come from exactly that. A voxel listed twice
reads its lowest input row.

Paths, with the same output bit for bit:
- `_field_sample_triton` (CUDA; CPU tensors under TRITON_INTERPRET=1): the voxels go into a GPU
  hash table once per call (`kernels/hash_table.py`); one kernel blends each query's 8
  neighbours, looked up in parallel as a [queries, 8] tile; a second runs the cube search for
  the few queries left without a present neighbour, all (2r + 1)^3 offsets of a query at once;
  the rare rest take the torch brute force. O(N + M) instead of sorting and binary searches.
- `_field_sample_torch` (the CPU path): the voxels' linear keys sorted once per call and
  `torch.searchsorted`, one search per pair of corners along z (z + 1 is the next key when
  present), or a dense grid of rows for small R. Deterministic on every device.
- `field_sample_reference` (numpy, a dict of voxels), beside them.
Both torch and Triton evaluate the same float32 formulas in the same order: products and sums
written out left to right, no fused multiply-adds (the kernels are compiled with
enable_fp_fusion=False), IEEE division.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from kernels.hash_table import KEY_INT, launch_block, new_table

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: field_sample runs `_field_sample_torch`
    triton = None

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
# A query counts as covered when its present neighbours' weights sum above this (float32):
# a corner weight is exactly 0 on a voxel face, so "some neighbour present" is not enough.
MIN_WEIGHT = 1e-12
# Hash slots per voxel (rounded up to a power of two): every query makes 8 lookups, many of
# them misses, so the table is kept at most a quarter full (1M voxels: 4M slots, 16 MiB).
SLOTS_PER_VOXEL = 4
# Lanes per program: voxels inserted, queries blended ([BLEND_BLOCK, 8] lookups) and queries
# searched (see SEARCH_LANES).
BUILD_BLOCK = 256
BLEND_BLOCK = 64  # with 2 warps: 1.06 ms against 1.11 ms at 128 / 4 (H100, 4M queries)
BLEND_WARPS = 2
# Lookups per program in the cube search: queries per program = this / the cube's offsets
# padded to a power of two (27 -> 32, 125 -> 128, 343 -> 512).
SEARCH_LANES = 2048
# Channels per tile; wider attributes loop over blocks of this many.
MAX_CHANNEL_BLOCK = 16
# The Triton path keeps cells in int32 and rounds with the 1.5 * 2^23 trick (exact below 2^22);
# finer grids, and fields of more voxels than int32 rows allow, take the torch path.
TRITON_MAX_RESOLUTION = 2**20
TRITON_MAX_VOXELS = 2**28


Array = torch.Tensor | np.ndarray


def _all_finite(values: Array) -> bool:
    if isinstance(values, torch.Tensor):
        return bool(torch.isfinite(values).all())
    return bool(np.isfinite(values).all())


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
    # Non-finite values would take device-dependent integer conversions in every path.
    if not (_all_finite(attrs) and _all_finite(points)):
        raise ValueError("attrs and points must be finite")


def field_sample(
    coords: torch.Tensor, attrs: torch.Tensor, resolution: int, points: torch.Tensor
) -> torch.Tensor:
    """coords [N, 3] int, attrs [N, C] float, points [M, 3] float -> [M, C] float32.

    CUDA tensors take the Triton kernels, everything else the torch path.
    """
    _check(coords, attrs, resolution, points)
    if not coords.device == attrs.device == points.device:
        raise ValueError("coords, attrs and points must be on one device")
    if points.is_cuda and triton is not None:
        return _field_sample_triton(coords, attrs, resolution, points)
    return _field_sample_torch(coords.long(), attrs.float(), resolution, points.float())


def _cube_offsets(radius: int) -> torch.Tensor:
    """[(2r + 1)^3, 3] integer offsets in [-r, r]^3, in itertools.product order."""
    span = range(-radius, radius + 1)
    return torch.tensor(list(itertools.product(span, repeat=3)), dtype=torch.long)


def _field_sample_torch(
    coords: torch.Tensor, attrs: torch.Tensor, R: int, points: torch.Tensor
) -> torch.Tensor:
    """coords [N, 3] int64, attrs [N, C] float32, points [M, 3] float32 -> [M, C] float32."""
    device = points.device
    M = points.shape[0]
    keys = (coords[:, 0] * R + coords[:, 1]) * R + coords[:, 2]
    keys, order = torch.sort(keys, stable=True)
    # A voxel listed twice reads its lowest input row: the first of its run of sorted keys.
    first = torch.ones(len(keys), dtype=torch.bool, device=device)
    first[1:] = keys[1:] != keys[:-1]
    input_attrs = attrs
    keys, attrs = keys[first], attrs[order[first]]
    last = len(keys) - 1

    dense = None
    if R**3 <= DENSE_LOOKUP_CELLS:
        dense = torch.full((R**3,), -1, dtype=torch.int32, device=device)
        dense[keys] = torch.arange(len(keys), device=device, dtype=torch.int32)

    def find(cells: torch.Tensor) -> torch.Tensor:
        """[..., 3] voxel indices -> [...] row in the sorted field, or -1."""
        valid = ((cells >= 0) & (cells < R)).all(-1)
        key = (cells[..., 0] * R + cells[..., 1]) * R + cells[..., 2]
        if dense is not None:
            row = dense[torch.where(valid, key, 0)].long()
            return torch.where(valid, row, -1)
        row = torch.searchsorted(keys, key).clamp(max=last)
        return torch.where(valid & (keys[row] == key), row, -1)

    # 1. Trilinear over the 8 voxel centres around each point, renormalised over those present.
    q = (points + 0.5) * R - 0.5  # continuous voxel index: centres at integers
    base = torch.floor(q).long()
    frac = q - base
    factors = (1 - frac, frac)  # per axis, the weight of the lower and of the upper neighbour
    axes = base.unbind(1)
    inside = [[(axes[a] + d >= 0) & (axes[a] + d < R) for d in (0, 1)] for a in range(3)]
    key_base = (axes[0] * R + axes[1]) * R + axes[2]
    total = torch.zeros(M, attrs.shape[1], dtype=torch.float32, device=device)
    weight = torch.zeros(M, dtype=torch.float32, device=device)
    for dx, dy in itertools.product((0, 1), repeat=2):
        column = inside[0][dx] & inside[1][dy]
        key = key_base + (dx * R + dy) * R
        if dense is None:  # one search per pair of corners: z + 1 is the next key if present
            row = torch.searchsorted(keys, key).clamp(max=last)
        for dz in (0, 1):
            valid = column & inside[2][dz]
            if dense is None:
                hit = keys[row] == key
                present = valid & hit
            else:
                row = dense[torch.where(valid, key, 0)].long()
                present = valid & (row >= 0)
                row = row.clamp(min=0)
            # Written out left to right (not torch.prod) so every device multiplies in one order.
            w = factors[dx][:, 0] * factors[dy][:, 1] * factors[dz][:, 2]
            w = torch.where(present, w, 0.0)
            total += w[:, None] * attrs[row]
            weight += w
            if dense is None and dz == 0:  # keys[row] >= key: key + 1 is there or just after
                row = (row + hit.long()).clamp(max=last)
            key = key + 1
    result = total / weight.clamp(min=MIN_WEIGHT)[:, None]
    missing = torch.nonzero(weight <= MIN_WEIGHT).flatten()
    if len(missing) == 0:
        return result
    # 2. The nearest present voxel within SEARCH_RADIUS voxels of the nearest voxel centre.
    offsets = _cube_offsets(SEARCH_RADIUS).to(device)  # [K, 3]
    found_any = torch.zeros(len(missing), dtype=torch.bool, device=device)
    for start in range(0, len(missing), SEARCH_CHUNK):
        chunk = missing[start : start + SEARCH_CHUNK]
        cells = torch.round(q[chunk]).long()[:, None, :] + offsets[None]  # [m, K, 3]
        rows = find(cells)
        d = cells.float() - q[chunk][:, None, :]
        dist = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]
        dist = torch.where(rows >= 0, dist, torch.full_like(dist, float("inf")))
        best = torch.argmin(dist, dim=1)  # the first minimum: ties go to the earlier offset
        found = torch.isfinite(dist.gather(1, best[:, None])[:, 0])
        result[chunk[found]] = attrs[rows.gather(1, best[:, None])[:, 0][found]]
        found_any[start : start + len(chunk)] = found
    # 3. Far from everything: the nearest voxel anywhere.
    _nearest_anywhere(coords, input_attrs, R, points, missing[~found_any], result)
    return result


def _nearest_anywhere(
    coords: torch.Tensor,  # [N, 3] int64
    attrs: torch.Tensor,  # [N, C] float32, in input order
    R: int,
    points: torch.Tensor,  # [M, 3] float32
    missing: torch.Tensor,  # [K] int64, ascending: the queries to answer
    result: torch.Tensor,  # [M, C] float32, written at `missing`
) -> None:
    """The nearest voxel centre by brute force, in chunks, in input order so that a tie goes to
    the lowest input row. Shared by both paths (same chunks, so the same distances)."""
    centres = (coords.float() + 0.5) / R - 0.5
    for start in range(0, len(missing), BRUTE_FORCE_CHUNK):
        chunk = missing[start : start + BRUTE_FORCE_CHUNK]
        d = torch.cdist(points[chunk], centres)
        result[chunk] = attrs[torch.argmin(d, dim=1)]


def _field_sample_triton(
    coords: torch.Tensor, attrs: torch.Tensor, R: int, points: torch.Tensor
) -> torch.Tensor:
    """coords [N, 3] int, attrs [N, C] float, points [M, 3] float, all on CUDA (or on the CPU
    under TRITON_INTERPRET=1) -> [M, C] float32, equal to `_field_sample_torch`'s.

    Resolutions above TRITON_MAX_RESOLUTION and more than TRITON_MAX_VOXELS voxels go to the
    torch path.
    """
    N, C, M = coords.shape[0], attrs.shape[1], points.shape[0]
    if R > TRITON_MAX_RESOLUTION or N > TRITON_MAX_VOXELS:
        return _field_sample_torch(coords.long(), attrs.float(), R, points.float())
    device = points.device
    points = points.float().contiguous()
    attrs = attrs.float().contiguous()
    result = torch.empty(M, C, dtype=torch.float32, device=device)
    if M == 0 or C == 0:
        return result
    voxel_coords = coords.to(torch.int32).contiguous()  # [N, 3]: the table's keys
    block_c = min(triton.next_power_of_2(C), MAX_CHANNEL_BLOCK)
    # 1. The table: each voxel's slot ends holding its lowest input row.
    table = new_table(N, SLOTS_PER_VOXEL, device)  # [S] int32
    slot_mask = table.numel() - 1
    build_block = launch_block(BUILD_BLOCK, device)
    _build_kernel[(triton.cdiv(N, build_block),)](
        voxel_coords, table, slot_mask, N, BLOCK=build_block
    )
    # 2. Trilinear blend over the present neighbours; queries without any are marked.
    missing_mask = torch.empty(M, dtype=torch.int8, device=device)
    blend_block = launch_block(BLEND_BLOCK, device)
    _blend_kernel[(triton.cdiv(M, blend_block),)](
        points, voxel_coords, attrs, table, slot_mask, result, missing_mask, M, R,
        C=C, BLOCK_M=blend_block, BLOCK_C=block_c, enable_fp_fusion=False, num_warps=BLEND_WARPS,
    )  # fmt: skip
    missing = torch.nonzero(missing_mask).flatten()  # [K] int64, ascending
    if len(missing) == 0:
        return result
    # 3. The nearest present voxel in the cube of offsets around each of them, growing the
    #    cube one voxel at a time: the cube of radius r settles a query when its best cell lies
    #    nearer than r + 0.5 voxels (every cell further out is at least that far on some axis,
    #    so nothing outside can be nearer or tie); the last radius takes whatever it finds.
    #    Each pass skips the queries an earlier one settled, so `missing` is compacted once
    #    (host syncs stall the GPU: one here, one after the last pass).
    found = torch.zeros(len(missing), dtype=torch.int8, device=device)
    for radius in range(1, SEARCH_RADIUS + 1):
        limit = (radius + 0.5) ** 2 if radius < SEARCH_RADIUS else float("inf")
        offsets = triton.next_power_of_2((2 * radius + 1) ** 3)
        block = launch_block(max(1, SEARCH_LANES // offsets), device)
        _search_kernel[(triton.cdiv(len(missing), block),)](
            points, voxel_coords, attrs, table, slot_mask, missing, result, found,
            len(missing), R, limit, C=C, RADIUS=radius, BLOCK_Q=block, BLOCK_K=offsets,
            BLOCK_C=block_c, enable_fp_fusion=False,
        )  # fmt: skip
    # 4. The rare rest: the same brute force as the torch path, on the same queries.
    remaining = missing[found == 0]
    if len(remaining):
        _nearest_anywhere(coords.long(), attrs, R, points, remaining, result)
    return result


if triton is not None:
    from kernels.hash_table import insert, load_key, lookup

    _KEY_INT = tl.constexpr(KEY_INT)
    _MIN_WEIGHT = tl.constexpr(MIN_WEIGHT)
    # Cells are clamped to [-_MARGIN, R + _MARGIN] before conversion to int32: far enough out
    # that a clamped cell plus any offset (at most SEARCH_RADIUS) is still outside the grid.
    _MARGIN = tl.constexpr(64.0)

    @triton.jit(do_not_specialize=["N"])  # sizes vary per asset: one compile
    def _build_kernel(voxel_coords, table, slot_mask, N, BLOCK: tl.constexpr):
        """voxel_coords [N, 3] int32 -> table [slot_mask + 1] int32 (lowest row per voxel)."""
        row = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = row < N
        k0, k1, k2 = load_key(voxel_coords, row, live, _KEY_INT, 0.0)
        insert(table, slot_mask, voxel_coords, row, k0, k1, k2, live, _KEY_INT, 0.0)

    @triton.jit
    def _continuous_index(points, m, live, R):
        """Queries m of points [M, 3] float32 -> their voxel-index coordinates, as torch's
        (points + 0.5) * R - 0.5, one rounding per operation."""
        p = points + m * 3
        x = tl.load(p, mask=live, other=0.0)
        y = tl.load(p + 1, mask=live, other=0.0)
        z = tl.load(p + 2, mask=live, other=0.0)
        return (x + 0.5) * R - 0.5, (y + 0.5) * R - 0.5, (z + 0.5) * R - 0.5

    @triton.jit
    def _to_cell(value, R):
        """An integral float32 -> int32 cell, clamped to [-_MARGIN, R + _MARGIN]."""
        return tl.minimum(tl.maximum(value, -_MARGIN), R + _MARGIN).to(tl.int32)

    @triton.jit(do_not_specialize=["M"])  # sizes vary per asset: one compile
    def _blend_kernel(
        points, voxel_coords, attrs, table, slot_mask, result, missing, M, R, C: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """points [M, 3] f32, voxel_coords [N, 3] i32, attrs [N, C] f32, table -> result [M, C]
        f32 (the blend; garbage where missing), missing [M] int8 (no present weight)."""
        m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        live = m < M
        qx, qy, qz = _continuous_index(points, m, live, R)
        fx, fy, fz = tl.floor(qx), tl.floor(qy), tl.floor(qz)
        tx, ty, tz = qx - fx, qy - fy, qz - fz  # weight of the upper neighbour per axis
        ux, uy, uz = 1 - tx, 1 - ty, 1 - tz  # and of the lower one
        # The 8 neighbours of every query, corner k = bits (x y z) as in itertools.product.
        corner = tl.arange(0, 8)[None, :]
        upper_x, upper_y, upper_z = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
        cx = _to_cell(fx, R)[:, None] + upper_x
        cy = _to_cell(fy, R)[:, None] + upper_y
        cz = _to_cell(fz, R)[:, None] + upper_z
        inside = (cx >= 0) & (cx < R) & (cy >= 0) & (cy < R) & (cz >= 0) & (cz < R)
        rows = lookup(
            table, slot_mask, voxel_coords, cx, cy, cz, live[:, None] & inside, _KEY_INT, 0.0
        )  # [BLOCK_M, 8] int32, -1 where absent
        # [BLOCK_M, 8] weights, multiplied x * y, then * z, as the torch path does; 0 if absent.
        wx = tl.where(upper_x == 1, tx[:, None], ux[:, None])
        wy = tl.where(upper_y == 1, ty[:, None], uy[:, None])
        wz = tl.where(upper_z == 1, tz[:, None], uz[:, None])
        weights = tl.where(rows >= 0, wx * wy * wz, 0.0)
        # Sums run over the corners in order (no tree reduction): column k is pulled out by a
        # reduction whose other terms are exact zeros (weights are >= +0.0; rows >= -1).
        weight = tl.zeros([BLOCK_M], tl.float32)
        for k in tl.static_range(8):
            weight = weight + tl.sum(tl.where(corner == k, weights, 0.0), axis=1)
        denominator = tl.broadcast_to(tl.maximum(weight, _MIN_WEIGHT)[:, None], [BLOCK_M, BLOCK_C])
        for c0 in tl.static_range(0, C, BLOCK_C):
            channel = c0 + tl.arange(0, BLOCK_C)
            in_c = channel < C
            total = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
            for k in tl.static_range(8):
                row = tl.max(tl.where(corner == k, rows, -1), axis=1)
                w = tl.sum(tl.where(corner == k, weights, 0.0), axis=1)
                value = tl.load(
                    attrs + row.to(tl.int64)[:, None] * C + channel[None, :],
                    mask=(row >= 0)[:, None] & in_c[None, :],
                    other=0.0,
                )
                total = total + w[:, None] * value
            out = result + m[:, None] * C + channel[None, :]
            blended = tl.math.div_rn(total, denominator)
            tl.store(out, blended, mask=live[:, None] & in_c[None, :])
        tl.store(missing + m, (weight <= _MIN_WEIGHT).to(tl.int8), mask=live)

    @triton.jit
    def _round_half_even(q):
        """torch.round of float32: adding and subtracting 1.5 * 2^23 leaves the nearest integer
        (ties to even) for |q| < 2^22; larger values are outside every grid anyway."""
        rounded = (q + 12582912.0) - 12582912.0
        return tl.where(tl.abs(q) < 4194304.0, rounded, q)

    @triton.jit(do_not_specialize=["K"])  # sizes vary per asset: one compile
    def _search_kernel(
        points, voxel_coords, attrs, table, slot_mask, missing, result, found, K, R, limit,
        C: tl.constexpr, RADIUS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """missing [K] int64 query indices -> result rows of those with a present voxel in the
        cube of offsets [-RADIUS, RADIUS]^3 around round(q) at a squared distance below
        `limit`; found [K] int8 set to 1 for those. Queries already found are skipped."""
        j = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        live = j < K
        live = live & (tl.load(found + j, mask=live, other=1) == 0)
        # Programs whose queries an earlier pass settled do nothing (most, after the first).
        if tl.max(live.to(tl.int32)) > 0:
            m = tl.load(missing + j, mask=live, other=0)
            qx, qy, qz = _continuous_index(points, m, live, R)
            # Offset k in itertools.product order over (-RADIUS..RADIUS)^3: x slowest.
            span = 2 * RADIUS + 1
            k = tl.arange(0, BLOCK_K)
            cx = _to_cell(_round_half_even(qx), R)[:, None] + (k // (span * span) - RADIUS)[None, :]
            cy = _to_cell(_round_half_even(qy), R)[:, None] + ((k // span) % span - RADIUS)[None, :]
            cz = _to_cell(_round_half_even(qz), R)[:, None] + (k % span - RADIUS)[None, :]
            inside = (cx >= 0) & (cx < R) & (cy >= 0) & (cy < R) & (cz >= 0) & (cz < R)
            candidate = live[:, None] & (k < span * span * span)[None, :] & inside
            rows = lookup(table, slot_mask, voxel_coords, cx, cy, cz, candidate, _KEY_INT, 0.0)
            dx = cx.to(tl.float32) - qx[:, None]
            dy = cy.to(tl.float32) - qy[:, None]
            dz = cz.to(tl.float32) - qz[:, None]
            dist = tl.where(rows >= 0, dx * dx + dy * dy + dz * dz, float("inf"))
            best = tl.min(dist, axis=1)
            # The first offset at the minimum distance, as torch.argmin picks it.
            first = tl.min(tl.where(dist == best[:, None], k[None, :], BLOCK_K), axis=1)
            row = tl.max(tl.where(k[None, :] == first[:, None], rows, -1), axis=1)
            hit = live & (best < limit)
            for c0 in tl.static_range(0, C, BLOCK_C):
                channel = c0 + tl.arange(0, BLOCK_C)
                mask = hit[:, None] & (channel < C)[None, :]
                value = tl.load(attrs + row.to(tl.int64)[:, None] * C + channel[None, :], mask=mask)
                tl.store(result + m[:, None] * C + channel[None, :], value, mask=mask)
            tl.store(found + j, hit.to(tl.int8), mask=live)


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
