"""hash_table: an open-addressing GPU hash table of entry indices, shared by the Triton kernels.

The table is a power-of-two array of int32 slots, each EMPTY (-1) or holding the index of an
entry (a vertex of `weld`, a voxel row of `field_sample`). An entry's key is three integers read
from row `index` of an [N, 3] source array, by one of three rules (`KEY_*`): a slot stores no
key of its own, so comparing with a slot means re-reading its entry's key. That keeps one
32-bit word per slot, claimable by a single `tl.atomic_cas`, even for 96-bit keys.

Insertion (linear probing, Knuth TAOCP vol. 3, 6.4): each lane CASes its slot from EMPTY to its
own index; if the slot is taken by an entry with an equal key the lane joins that group and
lowers the slot to min(slot, index) with `tl.atomic_min`. Keys never leave a slot once set, so
each group owns exactly one slot, and once the kernel ends that slot holds the group's lowest
index whatever order the lanes ran in: the result is deterministic though the slot positions
are not. Lookups run after the build kernel has finished, with plain loads.

These are @triton.jit helpers inlined into the callers' kernels; shapes are whatever the
caller's tile is (1-D lanes, or 2-D such as [queries, neighbours]).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch paths never touch this module's kernels
    triton = None

__all__ = ["EMPTY", "KEY_FLOAT_BITS", "KEY_FLOAT_CELL", "KEY_INT", "launch_block", "new_table"]

EMPTY = -1  # a free slot; entry indices are >= 0
# Key rules: how row `index` of the [N, 3] source becomes three integers.
KEY_INT = 0  # integers as stored (voxel coordinates)
KEY_FLOAT_BITS = 1  # float32 bit patterns, -0.0 read as 0.0 (exact welding)
KEY_FLOAT_CELL = 2  # floor(float64(x) / cell) as int64 (welding to a grid of cell `cell`)
# The interpreter (TRITON_INTERPRET=1) runs each program in Python at a cost per operation,
# whatever the block size: off the GPU the kernels launch with blocks this many times larger,
# the same code in a fraction of the programs.
INTERPRETER_BLOCK_SCALE = 8


def launch_block(block: int, device: torch.device | str) -> int:
    """Lanes per program on `device` for a kernel whose block is tuned to `block` on the GPU."""
    return block if torch.device(device).type == "cuda" else block * INTERPRETER_BLOCK_SCALE


def new_table(entries: int, slots_per_entry: int, device: torch.device | str) -> torch.Tensor:
    """An empty table: [S] int32 of EMPTY, S = next power of two >= slots_per_entry * entries.

    At most 1 / slots_per_entry of the slots fill, which bounds the probe lengths (linear
    probing averages about (1 + 1 / (1 - load)^2) / 2 probes for a miss), and leaves empty
    slots, where a lookup of an absent key stops.
    """
    if slots_per_entry < 2:
        raise ValueError("lookups need empty slots: slots_per_entry must be >= 2")
    slots = 1 << max(slots_per_entry * entries - 1, 1).bit_length()
    if slots > 2**31:
        raise ValueError(f"{entries} entries need more than 2^31 hash slots")
    return torch.full((slots,), EMPTY, dtype=torch.int32, device=device)


if triton is not None:
    _EMPTY = tl.constexpr(EMPTY)
    # A CAS compare value no slot ever holds: lanes that are done CAS their own slot with it,
    # which changes nothing (tl.atomic_cas has no mask) and spreads those no-op atomics over
    # the table instead of piling them onto one dummy address.
    _NEVER = tl.constexpr(-2)

    @triton.jit
    def _fmix32(h):
        """MurmurHash3's finaliser, a bijection of uint32: every input bit reaches every output
        bit."""
        h ^= h >> 16
        h *= 0x85EBCA6B
        h ^= h >> 13
        h *= 0xC2B2AE35
        h ^= h >> 16
        return h

    @triton.jit
    def hash3(k0, k1, k2, slot_mask):
        """Three integer tensors (int32 or int64, one shape) -> int32 slot in [0, slot_mask].

        Each component is folded to 32 bits (low word + high word * an odd constant, so that
        k and ~k stay apart) and chained through the bijective finaliser, so keys that differ
        anywhere land on unrelated slots: regular voxel grids and float bit patterns alike.
        """
        k0 = k0.to(tl.int64)
        k1 = k1.to(tl.int64)
        k2 = k2.to(tl.int64)
        h = _fmix32(k2.to(tl.uint32) + (k2 >> 32).to(tl.uint32) * 0x9E3779B1)
        h = _fmix32(h ^ (k1.to(tl.uint32) + (k1 >> 32).to(tl.uint32) * 0x9E3779B1))
        h = _fmix32(h ^ (k0.to(tl.uint32) + (k0 >> 32).to(tl.uint32) * 0x9E3779B1))
        return h.to(tl.int32, bitcast=True) & slot_mask

    @triton.jit
    def load_key(src, index, mask, RULE: tl.constexpr, cell):
        """Row `index` of src ([N, 3], contiguous) as three integers by RULE (KEY_*).

        cell: float64 scalar, used by KEY_FLOAT_CELL only. Masked-off lanes get the rule applied
        to 0, which callers never compare.
        """
        row = src + index.to(tl.int64) * 3
        x = tl.load(row, mask=mask, other=0)
        y = tl.load(row + 1, mask=mask, other=0)
        z = tl.load(row + 2, mask=mask, other=0)
        if RULE == 1:
            # The bit patterns; a zero of either sign (bits 0x80000000 or 0) reads as +0.0,
            # tested on the integers so no float flush or compare semantics can interfere.
            x = x.to(tl.int32, bitcast=True)
            y = y.to(tl.int32, bitcast=True)
            z = z.to(tl.int32, bitcast=True)
            x = tl.where((x & 0x7FFFFFFF) == 0, 0, x)
            y = tl.where((y & 0x7FFFFFFF) == 0, 0, y)
            z = tl.where((z & 0x7FFFFFFF) == 0, 0, z)
        elif RULE == 2:
            # A float64 division is correctly rounded (PTX div.rn.f64), as numpy's and torch's.
            x = tl.floor(x.to(tl.float64) / cell).to(tl.int64)
            y = tl.floor(y.to(tl.float64) / cell).to(tl.int64)
            z = tl.floor(z.to(tl.float64) / cell).to(tl.int64)
        return x, y, z

    @triton.jit
    def insert(table, slot_mask, src, index, k0, k1, k2, active, RULE: tl.constexpr, cell):
        """Insert entries `index` (int32) with keys (k0, k1, k2) where `active`.

        table: [slot_mask + 1] int32; src, RULE, cell: how any entry's key is read back
        (`load_key`). Returns the int32 slot of each active lane's group (its final value,
        the group's lowest index, is known once the kernel has ended).
        """
        slot = hash3(k0, k1, k2, slot_mask)
        pending = active
        while tl.max(pending.to(tl.int32)) > 0:
            expected = tl.where(pending, _EMPTY, _NEVER)
            holder = tl.atomic_cas(table + slot, expected, index, sem="relaxed")
            claimed = pending & (holder == _EMPTY)
            occupied = pending & (holder != _EMPTY)
            h0, h1, h2 = load_key(src, holder, occupied, RULE, cell)
            same = occupied & (h0 == k0) & (h1 == k1) & (h2 == k2)
            tl.atomic_min(table + slot, index, mask=same & (index < holder), sem="relaxed")
            pending = pending & ~(claimed | same)
            slot = tl.where(pending, (slot + 1) & slot_mask, slot)
        return slot

    @triton.jit
    def lookup(table, slot_mask, src, k0, k1, k2, active, RULE: tl.constexpr, cell):
        """The entry index stored for key (k0, k1, k2) where `active`, else EMPTY (int32).

        Read-only: call it from a kernel launched after the build kernel.
        """
        slot = hash3(k0, k1, k2, slot_mask)
        found = tl.full(slot.shape, _EMPTY, tl.int32)
        pending = active
        while tl.max(pending.to(tl.int32)) > 0:
            holder = tl.load(table + slot, mask=pending, other=_EMPTY)
            occupied = pending & (holder != _EMPTY)
            h0, h1, h2 = load_key(src, holder, occupied, RULE, cell)
            hit = occupied & (h0 == k0) & (h1 == k1) & (h2 == k2)
            found = tl.where(hit, holder, found)
            pending = occupied & ~hit
            slot = (slot + 1) & slot_mask
        return found
