"""independent_edges: the edges one round of parallel collapse may take at once, for
pipeline/decimate.py.

`independent_edges(low, high, rank, candidate, vertex_count, passes)` -> [E] bool: candidate
edges no two of which have ends that are the same or adjacent. In each pass, a candidate is
taken where its rank is the lowest of every candidate's with an end within one ring of either
of its ends (so the lowest within two rings of both); then the candidates with an end within
one ring of a taken edge's ends drop out, and the next pass picks among the rest. rank [E]:
distinct int64 keys, the cheapest lowest. The result depends only on the ranks, never on the
order of work: minima and flags of 1 are the same whatever thread writes first.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_independent_triton`): four
  launches a pass, each over the edges (the rank minima with integer `atomic_min`, the marks
  as stores of 1), the drop fused into the next pass's first launch, and every pass's
  vertex buffers cleared by two fills up front. The torch twin's ~30 launches a pass (scatters,
  gathers, concatenations and casts over a few hundred thousand edges, each a few
  microseconds of work) made this step about a quarter of the decimation's time on prompt 0
  at the inflate's 384 grid on an H100 (perf/RESULTS.md).
- `_independent_torch` (any device, the CPU path): the same rule in torch scatters.
Both give the same edges (integer work only).
"""

from __future__ import annotations

import torch

from kernels.edge_modes import marked

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin serves every device
    triton = None

__all__ = ["independent_edges"]

# Edges per Triton program.
BLOCK = 1024
NONE = torch.iinfo(torch.int64).max  # no candidate near: above every rank


def independent_edges(
    low: torch.Tensor,
    high: torch.Tensor,
    rank: torch.Tensor,
    candidate: torch.Tensor,
    vertex_count: int,
    passes: int,
) -> torch.Tensor:
    """low, high [E] int64 (0 <= ends < vertex_count), rank [E] int64 (distinct), candidate [E]
    bool -> [E] bool: the edges taken. CUDA tensors go to the Triton kernels."""
    E = len(low)
    if low.ndim != 1 or not (high.shape == rank.shape == candidate.shape == (E,)):
        raise ValueError("low, high, rank and candidate must be [E]")
    if low.dtype != torch.int64 or high.dtype != torch.int64 or rank.dtype != torch.int64:
        raise ValueError("low, high and rank must be int64")
    if candidate.dtype != torch.bool:
        raise ValueError(f"candidate must be bool, got {candidate.dtype}")
    if passes < 1 or vertex_count < 0:
        raise ValueError("passes >= 1 and vertex_count >= 0 required")
    if triton is not None and low.is_cuda:
        return _independent_triton(low, high, rank, candidate, vertex_count, passes)
    return _independent_torch(low, high, rank, candidate, vertex_count, passes)


def _rank_min(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.full((size,), NONE, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, index, values, "amin")


def _independent_torch(
    low: torch.Tensor,
    high: torch.Tensor,
    rank: torch.Tensor,
    candidate: torch.Tensor,
    V: int,
    passes: int,
) -> torch.Tensor:
    """As `independent_edges`, in torch scatters on any device."""
    ends = torch.cat((low, high))
    taken = torch.zeros_like(candidate)
    for _ in range(passes):
        ranks = torch.where(candidate, rank, NONE)
        near = _rank_min(ends, torch.cat((ranks, ranks)), V)
        ring = near.clone().scatter_reduce_(0, ends, torch.cat((near[high], near[low])), "amin")
        pick = candidate & (ring[low] == rank) & (ring[high] == rank)
        taken |= pick
        # Their ends' closed neighbourhoods are claimed.
        at_end = marked(ends, torch.cat((pick, pick)), V)
        claimed = at_end | marked(ends, torch.cat((at_end[high], at_end[low])), V)
        candidate = candidate & ~(claimed[low] | claimed[high])
    return taken


if triton is not None:

    @triton.jit
    def _ends(low_ptr, high_ptr, E, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < E
        lo = tl.load(low_ptr + e, mask=inside, other=0)
        return e, inside, lo, tl.load(high_ptr + e, mask=inside, other=0)

    @triton.jit(do_not_specialize=["E"])
    def _near_kernel(
        low_ptr,
        high_ptr,
        rank_ptr,
        cand_ptr,
        claimed_ptr,
        near_ptr,
        E,
        DROP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Each candidate's rank into both its ends' minima; with DROP, first the candidates
        with an end the last pass claimed drop out."""
        e, inside, lo, hi = _ends(low_ptr, high_ptr, E, BLOCK)
        cand = inside & (tl.load(cand_ptr + e, mask=inside, other=0) != 0)
        if DROP:
            gone = tl.load(claimed_ptr + lo, mask=cand, other=0) | tl.load(
                claimed_ptr + hi, mask=cand, other=0
            )
            cand = cand & (gone == 0)
            tl.store(cand_ptr + e, cand.to(tl.int8), mask=inside)
        rank = tl.load(rank_ptr + e, mask=cand, other=0)
        tl.atomic_min(near_ptr + lo, rank, mask=cand)
        tl.atomic_min(near_ptr + hi, rank, mask=cand)

    @triton.jit(do_not_specialize=["E"])
    def _ring_kernel(
        low_ptr, high_ptr, near_ptr, ring_ptr, E, NONE: tl.constexpr, BLOCK: tl.constexpr
    ):
        """Each end's ring minimum: the lower of both ends' minima, over every edge."""
        _e, inside, lo, hi = _ends(low_ptr, high_ptr, E, BLOCK)
        both = tl.minimum(
            tl.load(near_ptr + lo, mask=inside, other=NONE),
            tl.load(near_ptr + hi, mask=inside, other=NONE),
        )
        some = inside & (both != NONE)
        tl.atomic_min(ring_ptr + lo, both, mask=some)
        tl.atomic_min(ring_ptr + hi, both, mask=some)

    @triton.jit(do_not_specialize=["E"])
    def _pick_kernel(
        low_ptr,
        high_ptr,
        rank_ptr,
        cand_ptr,
        ring_ptr,
        taken_ptr,
        at_end_ptr,
        E,
        BLOCK: tl.constexpr,
    ):
        """The candidates lowest in both their ends' rings are taken; their ends marked."""
        e, inside, lo, hi = _ends(low_ptr, high_ptr, E, BLOCK)
        cand = inside & (tl.load(cand_ptr + e, mask=inside, other=0) != 0)
        rank = tl.load(rank_ptr + e, mask=cand, other=0)
        ring_lo = tl.load(ring_ptr + lo, mask=cand, other=0)
        pick = cand & (ring_lo == rank) & (tl.load(ring_ptr + hi, mask=cand, other=0) == rank)
        one = tl.full((BLOCK,), 1, tl.int8)
        tl.store(taken_ptr + e, one, mask=pick)
        tl.store(at_end_ptr + lo, one, mask=pick)
        tl.store(at_end_ptr + hi, one, mask=pick)

    @triton.jit(do_not_specialize=["E"])
    def _claim_kernel(low_ptr, high_ptr, at_end_ptr, claimed_ptr, E, BLOCK: tl.constexpr):
        """Both ends of every edge touching a taken edge's end are claimed (so the ends
        themselves too, through the taken edge)."""
        _e, inside, lo, hi = _ends(low_ptr, high_ptr, E, BLOCK)
        hit = tl.load(at_end_ptr + lo, mask=inside, other=0) | tl.load(
            at_end_ptr + hi, mask=inside, other=0
        )
        near = inside & (hit != 0)
        one = tl.full((BLOCK,), 1, tl.int8)
        tl.store(claimed_ptr + lo, one, mask=near)
        tl.store(claimed_ptr + hi, one, mask=near)


def _independent_triton(
    low: torch.Tensor,
    high: torch.Tensor,
    rank: torch.Tensor,
    candidate: torch.Tensor,
    V: int,
    passes: int,
) -> torch.Tensor:
    """As `independent_edges`; on CUDA (on the CPU under TRITON_INTERPRET=1)."""
    E = len(low)
    device = low.device
    taken = torch.zeros(E, dtype=torch.int8, device=device)
    if E == 0:
        return taken.view(torch.bool)
    low, high, rank = low.contiguous(), high.contiguous(), rank.contiguous()
    cand = candidate.to(torch.int8)
    # Per pass: the ends' minima and ring minima; the taken edges' ends and what they claim.
    # Rows of a multiple of 16 entries: every row starts 16-byte aligned whatever V is, so
    # Triton compiles one variant of each kernel (it specialises on pointer alignment).
    row = -(-V // 16) * 16
    minima = torch.full((passes, 2, row), NONE, dtype=torch.int64, device=device)
    marks = torch.zeros((passes, 2, row), dtype=torch.int8, device=device)
    grid = (triton.cdiv(E, BLOCK),)
    for p in range(passes):
        near, ring = minima[p]
        at_end, claimed = marks[p]
        last_claimed = marks[p - 1, 1] if p else claimed
        _near_kernel[grid](low, high, rank, cand, last_claimed, near, E, DROP=p > 0, BLOCK=BLOCK)
        _ring_kernel[grid](low, high, near, ring, E, NONE=NONE, BLOCK=BLOCK)
        _pick_kernel[grid](low, high, rank, cand, ring, taken, at_end, E, BLOCK=BLOCK)
        if p + 1 < passes:  # the last pass's claims would drop no one that matters
            _claim_kernel[grid](low, high, at_end, claimed, E, BLOCK=BLOCK)
    return taken.view(torch.bool)
