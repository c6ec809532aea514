"""weld: merge the vertices of a triangle soup that share a position.

`weld(positions, tolerance)` -> (unique positions, remap of every input vertex). With
tolerance 0 positions must match bit for bit (-0.0 and 0.0 count as equal); with tolerance t
they are snapped to a grid of cell t first, so points in the same cell merge. Each group is
represented by its lowest original index, and the unique positions come out in the order of
their representatives: welding an already unique list returns it unchanged.

Paths, all with the same output bit for bit:
- `_weld_triton` (float32 on CUDA; CPU tensors under TRITON_INTERPRET=1): one lane per vertex
  inserts its key into a GPU hash table (`kernels/hash_table.py`), whose slot ends holding the
  group's lowest index whatever order the lanes ran in; a cumulative sum of "is its own
  representative" then numbers the groups in first-seen order. O(V), a few passes over memory.
- `_weld_torch` (every other case, and the CPU path): lexicographic stable sorts, no atomics,
  so deterministic; three sorts of V keys make it several times slower on the GPU.
- `weld_reference` (numpy), beside them.
"""

from __future__ import annotations

import numpy as np
import torch

from kernels.hash_table import KEY_FLOAT_BITS, KEY_FLOAT_CELL, launch_block, new_table

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: weld runs `_weld_torch`
    triton = None

__all__ = ["weld", "weld_reference"]

# Hash slots per vertex (then rounded up to a power of two): at most half the table fills, so
# probes stay short; 10M vertices take a 2^25-slot (128 MiB) table.
SLOTS_PER_VERTEX = 2
# Lanes per program of the insert kernel: every lane of a program loops until its slowest
# lane has found its slot, so small programs waste fewer (no-op) probes.
INSERT_BLOCK = 256
# Lanes per program of the elementwise kernels that follow.
BLOCK = 1024
# Vertex indices are int32 in the table (and in-kernel arithmetic); larger inputs use torch.
TRITON_MAX_VERTICES = 2**30
# |x| / tolerance must stay well inside int64 for the grid keys to be exact integers everywhere.
MAX_CELL_INDEX = 2.0**62


def _check(positions: torch.Tensor | np.ndarray, tolerance: float) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [V, 3], got {tuple(positions.shape)}")
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")


def _keys_torch(positions: torch.Tensor, tolerance: float) -> torch.Tensor:
    if tolerance > 0:
        # Divide by a tensor on the same device: with a Python-number divisor torch's CUDA
        # kernel multiplies by the reciprocal, which can round differently from the true
        # quotient that numpy, torch's CPU kernel and the Triton kernel compute.
        cell = torch.tensor(tolerance, dtype=torch.float64, device=positions.device)
        return torch.floor(positions.double() / cell).long()
    # The positions' own bit patterns; adding 0.0 turns -0.0 into 0.0 first.
    if positions.dtype == torch.float64:
        return (positions + 0.0).view(torch.int64)
    return (positions.float() + 0.0).view(torch.int32).long()


def weld(positions: torch.Tensor, tolerance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [V, 3] float -> (unique: [U, 3] same dtype, remap: [V] int64 into unique).

    float32 CUDA tensors take the Triton kernels, everything else the torch path.
    """
    _check(positions, tolerance)
    if len(positions):
        extent = float(positions.abs().max())
        if not np.isfinite(extent):
            raise ValueError("positions must be finite")
        if tolerance > 0 and extent / tolerance >= MAX_CELL_INDEX:
            raise ValueError(f"tolerance {tolerance} is too small for positions up to {extent}")
    if positions.is_cuda and triton is not None and positions.dtype == torch.float32:
        return _weld_triton(positions, tolerance)
    return _weld_torch(positions, tolerance)


def _weld_torch(positions: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [V, 3] float, any dtype and device -> as `weld`, by stable sorts of the keys."""
    V = positions.shape[0]
    device = positions.device
    if V == 0:
        return positions.clone(), torch.zeros(0, dtype=torch.long, device=device)
    keys = _keys_torch(positions, tolerance)
    # 1. Lexicographic order by (x, y, z): stable sorts from the last key to the first, so
    #    inside a group the original order (lowest index first) survives.
    order = torch.arange(V, device=device)
    for column in (2, 1, 0):
        order = order[torch.sort(keys[order, column], stable=True).indices]
    sorted_keys = keys[order]
    # 2. A group starts where the key changes.
    starts = torch.ones(V, dtype=torch.bool, device=device)
    starts[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(dim=1)
    group_of_sorted = torch.cumsum(starts.long(), 0) - 1
    representatives = order[starts]  # lowest original index of each group, in key order
    # 3. Number the groups by their representative so the output keeps first-seen order.
    by_first = torch.sort(representatives, stable=True)
    new_id = torch.empty_like(by_first.indices)
    new_id[by_first.indices] = torch.arange(len(representatives), device=device)
    remap = torch.empty(V, dtype=torch.long, device=device)
    remap[order] = new_id[group_of_sorted]
    return positions[by_first.values], remap


def _weld_triton(positions: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [V, 3] float32 on CUDA, or on the CPU under TRITON_INTERPRET=1 -> as `weld`.

    Other dtypes (float64 keys are 64-bit patterns) and more than TRITON_MAX_VERTICES vertices
    go to `_weld_torch`.
    """
    V = positions.shape[0]
    device = positions.device
    if positions.dtype != torch.float32 or V > TRITON_MAX_VERTICES:
        return _weld_torch(positions, tolerance)
    if V == 0:
        return positions.clone(), torch.zeros(0, dtype=torch.long, device=device)
    positions = positions.contiguous()
    rule = KEY_FLOAT_CELL if tolerance > 0 else KEY_FLOAT_BITS
    cell = torch.tensor([tolerance], dtype=torch.float64, device=device)  # loaded as float64
    # 1. Each vertex finds its group's slot; the slot ends holding the group's lowest index.
    table = new_table(V, SLOTS_PER_VERTEX, device)  # [S] int32
    slot_of = torch.empty(V, dtype=torch.int32, device=device)
    insert_block = launch_block(INSERT_BLOCK, device)
    _weld_insert_kernel[(triton.cdiv(V, insert_block),)](
        positions,
        table,
        table.numel() - 1,
        cell,
        slot_of,
        V,
        RULE=rule,
        BLOCK=insert_block,
        enable_fp_fusion=False,
    )
    # 2. Each vertex's representative, and whether it is one.
    block = launch_block(BLOCK, device)
    grid = (triton.cdiv(V, block),)
    representative = torch.empty(V, dtype=torch.int32, device=device)
    is_representative = torch.empty(V, dtype=torch.int32, device=device)
    _weld_representative_kernel[grid](
        table, slot_of, representative, is_representative, V, BLOCK=block
    )
    # 3. Representative i becomes output row counts[i] - 1: outputs in first-seen order.
    counts = torch.cumsum(is_representative, 0, dtype=torch.int32)
    unique = torch.empty(int(counts[-1]), 3, dtype=positions.dtype, device=device)
    remap = torch.empty(V, dtype=torch.int64, device=device)
    # 4. The remap, and each representative's position copied to its row.
    _weld_write_kernel[grid](positions, representative, counts, unique, remap, V, BLOCK=block)
    return unique, remap


if triton is not None:
    from kernels.hash_table import insert, load_key

    @triton.jit(do_not_specialize=["V"])  # sizes vary per asset: one compile
    def _weld_insert_kernel(
        positions, table, slot_mask, cell_ptr, slot_of, V, RULE: tl.constexpr, BLOCK: tl.constexpr
    ):
        """positions [V, 3] float32, table [slot_mask + 1] int32 -> slot_of [V] int32."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = i < V
        cell = tl.load(cell_ptr)  # float64, read by KEY_FLOAT_CELL
        k0, k1, k2 = load_key(positions, i, live, RULE, cell)
        slot = insert(table, slot_mask, positions, i, k0, k1, k2, live, RULE, cell)
        tl.store(slot_of + i, slot, mask=live)

    @triton.jit(do_not_specialize=["V"])  # sizes vary per asset: one compile
    def _weld_representative_kernel(
        table, slot_of, representative, is_representative, V, BLOCK: tl.constexpr
    ):
        """slot_of [V] int32 -> representative [V] int32, is_representative [V] int32 0/1."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = i < V
        rep = tl.load(table + tl.load(slot_of + i, mask=live, other=0), mask=live, other=0)
        tl.store(representative + i, rep, mask=live)
        tl.store(is_representative + i, (rep == i).to(tl.int32), mask=live)

    @triton.jit(do_not_specialize=["V"])  # sizes vary per asset: one compile
    def _weld_write_kernel(
        positions, representative, counts, unique, remap, V, BLOCK: tl.constexpr
    ):
        """counts [V] int32 (inclusive cumsum of is_representative) -> remap [V] int64,
        unique [U, 3] float32."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = i < V
        rep = tl.load(representative + i, mask=live, other=0)
        tl.store(remap + i, (tl.load(counts + rep, mask=live, other=1) - 1).to(tl.int64), mask=live)
        own = live & (rep == i)
        source = positions + i.to(tl.int64) * 3
        target = unique + (tl.load(counts + i, mask=own, other=1) - 1).to(tl.int64) * 3
        for axis in tl.static_range(3):
            tl.store(target + axis, tl.load(source + axis, mask=own), mask=own)


def weld_reference(positions: np.ndarray, tolerance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of `weld`: positions [V, 3] -> (unique [U, 3], remap [V] int64)."""
    _check(positions, tolerance)
    if len(positions) == 0:
        return positions.copy(), np.zeros(0, np.int64)
    if tolerance > 0:
        keys = np.floor(positions.astype(np.float64) / tolerance).astype(np.int64)
    elif positions.dtype == np.float64:
        keys = (positions + 0.0).view(np.int64)
    else:
        keys = (positions.astype(np.float32) + np.float32(0.0)).view(np.int32)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return positions[np.sort(first)], rank[inverse.reshape(-1)]
