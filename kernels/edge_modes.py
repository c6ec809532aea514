"""edge_modes: which edges one round of parallel collapse may take and where each goes, for
pipeline/decimate.py.

`edge_modes(low, high, counts, refused, vertex_count)` -> (mode [E] int64, on_open [V] bool).
An edge's ends are on an open boundary where any edge of theirs has one face, locked where any
has more than two (non-manifold). An edge is refused (mode 3) where an end is locked, where it
is interior (two faces) with both ends on the boundary, where it has more than two faces, or
where its key low * V + high is in `refused` (sorted, unique: edges a round refused before);
else an interior edge with exactly one end on the boundary goes to that end (1: low, 2: high)
and the rest to their quadrics' best point (0). The modes are edge_collapse's MODES.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_edge_modes_triton`): two
  launches over the edges, the ends' flags as integer `atomic_or` bits, the refused keys
  found by a binary search in registers, where the torch twin has ~45 ops (scatters,
  gathers, a search and a dozen boolean ops), each a launch on the GPU.
- `_edge_modes_torch` (any device, the CPU path): the same rule in torch ops.
Both give the same modes (integer work only).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin serves every device
    triton = None

__all__ = ["edge_modes", "marked"]

# Edges per Triton program.
BLOCK = 1024
# The ends' flag bits.
OPEN, LOCKED = 1, 2
# edge_collapse.MODES, as the kernel's constants.
OPTIMAL, TO_LOW, TO_HIGH, REFUSED = 0, 1, 2, 3


def edge_modes(
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    refused: torch.Tensor,
    vertex_count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """low, high [E] int64 (0 <= low < high < vertex_count), counts [E] int64 (faces per edge),
    refused [R] int64 (sorted, unique keys low * vertex_count + high) -> mode [E] int64,
    on_open [vertex_count] bool. CUDA tensors go to the Triton kernels."""
    E = len(low)
    if low.ndim != 1 or not (high.shape == counts.shape == (E,)) or refused.ndim != 1:
        raise ValueError("low, high and counts must be [E], refused [R]")
    if any(t.dtype != torch.int64 for t in (low, high, counts, refused)):
        raise ValueError("low, high, counts and refused must be int64")
    if vertex_count < 0:
        raise ValueError(f"vertex_count must be at least 0, got {vertex_count}")
    if triton is not None and low.is_cuda:
        return _edge_modes_triton(low, high, counts, refused, vertex_count)
    return _edge_modes_torch(low, high, counts, refused, vertex_count)


def marked(ends: torch.Tensor, flags: torch.Tensor, V: int) -> torch.Tensor:
    """[V] whether any i with flags[i] has ends[i] == v (an integer scatter: no host sync,
    where a boolean index would wait for its count); the twins' vertex marks."""
    out = torch.zeros(V, dtype=torch.int32, device=ends.device)
    return out.scatter_reduce_(0, ends, flags.int(), "amax").bool()


def _among(keys: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """[n] whether each key is in sorted_set (ascending, unique)."""
    if len(sorted_set) == 0:
        return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    at = torch.searchsorted(sorted_set, keys).clamp_max(len(sorted_set) - 1)
    return sorted_set[at] == keys


def _edge_modes_torch(
    low: torch.Tensor, high: torch.Tensor, counts: torch.Tensor, refused: torch.Tensor, V: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `edge_modes`, in torch ops on any device."""
    ends = torch.cat((low, high))
    on_open = marked(ends, torch.cat((counts == 1, counts == 1)), V)
    locked = marked(ends, torch.cat((counts > 2, counts > 2)), V)
    open_low, open_high = on_open[low], on_open[high]
    allowed = (
        ~(locked[low] | locked[high])
        & ((counts == 1) | ((counts == 2) & ~(open_low & open_high)))
        & ~_among(low * V + high, refused)
    )
    interior = counts == 2
    mode = torch.where(
        ~allowed,
        REFUSED,
        torch.where(
            interior & open_low,
            TO_LOW,
            torch.where(interior & open_high, TO_HIGH, OPTIMAL),
        ),
    )
    return mode, on_open


if triton is not None:

    @triton.jit
    def find_sorted(sorted_ptr, key, count, steps, active):
        """Whether each non-negative key is among sorted_ptr[0:count] (ascending), where
        active: `steps` (count.bit_length()) halvings of [0, count) to the first entry not
        below it. kernels/collapse_checks.py searches the edge keys with it too."""
        first = tl.zeros_like(key)
        last = first + count
        for _ in range(steps):
            middle = (first + last) // 2
            searching = active & (first < last)
            below = tl.load(sorted_ptr + middle, mask=searching, other=0) < key
            first = tl.where(searching & below, middle + 1, first)
            last = tl.where(searching & ~below, middle, last)
        return tl.load(sorted_ptr + first, mask=active & (first < count), other=-1) == key

    @triton.jit(do_not_specialize=["E"])
    def _flags_kernel(low_ptr, high_ptr, counts_ptr, flags_ptr, E, BLOCK: tl.constexpr):
        """Each end's bits: OPEN from an edge of one face, LOCKED from one of more than two."""
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < E
        count = tl.load(counts_ptr + e, mask=inside, other=2)
        bits = tl.where(count == 1, 1, 0) | tl.where(count > 2, 2, 0)
        some = inside & (bits != 0)
        tl.atomic_or(flags_ptr + tl.load(low_ptr + e, mask=inside, other=0), bits, mask=some)
        tl.atomic_or(flags_ptr + tl.load(high_ptr + e, mask=inside, other=0), bits, mask=some)

    @triton.jit(do_not_specialize=["E", "V", "R", "steps"])
    def _modes_kernel(
        low_ptr,
        high_ptr,
        counts_ptr,
        refused_ptr,
        flags_ptr,
        mode_ptr,
        E,
        V,
        R,
        steps,
        BLOCK: tl.constexpr,
    ):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < E
        lo = tl.load(low_ptr + e, mask=inside, other=0)
        hi = tl.load(high_ptr + e, mask=inside, other=0)
        count = tl.load(counts_ptr + e, mask=inside, other=0)
        flags_lo = tl.load(flags_ptr + lo, mask=inside, other=0)
        flags_hi = tl.load(flags_ptr + hi, mask=inside, other=0)
        open_lo, open_hi = (flags_lo & 1) != 0, (flags_hi & 1) != 0
        locked = ((flags_lo | flags_hi) & 2) != 0
        interior = count == 2
        allowed = ~locked & ((count == 1) | (interior & ~(open_lo & open_hi)))
        allowed = allowed & ~find_sorted(refused_ptr, lo * V + hi, R, steps, inside)
        mode = tl.where(interior & open_lo, 1, tl.where(interior & open_hi, 2, 0))
        tl.store(mode_ptr + e, tl.where(allowed, mode, 3).to(tl.int64), mask=inside)


def _edge_modes_triton(
    low: torch.Tensor, high: torch.Tensor, counts: torch.Tensor, refused: torch.Tensor, V: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `edge_modes`; on CUDA (on the CPU under TRITON_INTERPRET=1)."""
    E, R = len(low), len(refused)
    flags = torch.zeros(V, dtype=torch.int32, device=low.device)
    mode = torch.empty(E, dtype=torch.int64, device=low.device)
    if E:
        low, high, counts = low.contiguous(), high.contiguous(), counts.contiguous()
        grid = (triton.cdiv(E, BLOCK),)
        _flags_kernel[grid](low, high, counts, flags, E, BLOCK=BLOCK)
        _modes_kernel[grid](
            low,
            high,
            counts,
            refused.contiguous(),
            flags,
            mode,
            E,
            V,
            R,
            R.bit_length(),
            BLOCK=BLOCK,
        )
    return mode, (flags & OPEN) != 0
