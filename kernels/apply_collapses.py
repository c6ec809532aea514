"""apply_collapses: one round's collapses carried out, for pipeline/decimate.py.

`apply_collapses(points, q, moved, faces, low, high, counts, on_open, chosen, ok, target)` ->
the faces after the round. For each chosen edge e = chosen[i] with ok[i]: the end that stays
is the boundary end of an interior edge with exactly one (`on_open`), else the low end; it
moves to target[e], takes the ends' summed quadric and is marked moved (points [V, 3],
q [V, 10], moved [V] change in place); the other end's corners become the kept end's, and the
faces left with two equal corners (the edge's own) drop out, the rest keeping their order.
The chosen edges' ends are neither shared nor adjacent (kernels/independent_edges.py), so no
two collapses touch one vertex and the order of work does not matter.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_apply_triton`): one
  launch over the chosen edges, one over the faces, then one compaction.
- `_apply_torch` (any device, the CPU path): the same in torch indexing (~25 ops).
Both give the same bits (copies and one float64 addition per quadric entry).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin serves every device
    triton = None

__all__ = ["apply_collapses"]

# Edges or faces per Triton program.
BLOCK = 512


def apply_collapses(
    points: torch.Tensor,
    q: torch.Tensor,
    moved: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    on_open: torch.Tensor,
    chosen: torch.Tensor,
    ok: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """points [V, 3] float64, q [V, 10] float64, moved [V] bool (all three contiguous, changed
    in place), faces [F, 3] int64; low, high, counts [E] int64, on_open [V] bool, chosen [S]
    int64 (edge indices), ok [S] bool, target [E, 3] float64 -> faces [F', 3] int64. CUDA
    tensors go to the Triton kernels."""
    V, S = len(points), len(chosen)
    if points.shape != (V, 3) or q.shape != (V, 10) or moved.shape != (V,):
        raise ValueError("points [V, 3], q [V, 10] and moved [V] required")
    if points.dtype != torch.float64 or q.dtype != torch.float64 or target.dtype != torch.float64:
        raise ValueError("points, q and target must be float64")
    if not (points.is_contiguous() and q.is_contiguous() and moved.is_contiguous()):
        raise ValueError("points, q and moved must be contiguous (they change in place)")
    if moved.dtype != torch.bool or on_open.dtype != torch.bool or ok.dtype != torch.bool:
        raise ValueError("moved, on_open and ok must be bool")
    if ok.shape != (S,) or target.shape != (len(low), 3) or faces.ndim != 2:
        raise ValueError("ok [S], target [E, 3] and faces [F, 3] required")
    if triton is not None and points.is_cuda:
        return _apply_triton(
            points, q, moved, faces, low, high, counts, on_open, chosen, ok, target
        )
    return _apply_torch(points, q, moved, faces, low, high, counts, on_open, chosen, ok, target)


def _apply_torch(
    points: torch.Tensor,
    q: torch.Tensor,
    moved: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    on_open: torch.Tensor,
    chosen: torch.Tensor,
    ok: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """As `apply_collapses`, in torch indexing on any device."""
    chosen = chosen[ok]
    lo, hi = low[chosen], high[chosen]
    keep_high = on_open[hi] & ~on_open[lo] & (counts[chosen] == 2)
    keep = torch.where(keep_high, hi, lo)
    gone = torch.where(keep_high, lo, hi)
    points[keep] = target[chosen]
    q[keep] = q[lo] + q[hi]
    moved[keep] = True
    remap = torch.arange(len(points), device=faces.device)
    remap[gone] = keep
    faces = remap[faces]
    return faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    ]


if triton is not None:

    @triton.jit(do_not_specialize=["S"])
    def _apply_kernel(
        points_ptr,
        q_ptr,
        moved_ptr,
        remap_ptr,
        low_ptr,
        high_ptr,
        counts_ptr,
        open_ptr,
        chosen_ptr,
        ok_ptr,
        target_ptr,
        S,
        BLOCK: tl.constexpr,
    ):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        go = (i < S) & (tl.load(ok_ptr + i, mask=i < S, other=0) != 0)
        e = tl.load(chosen_ptr + i, mask=go, other=0)
        lo = tl.load(low_ptr + e, mask=go, other=0)
        hi = tl.load(high_ptr + e, mask=go, other=0)
        open_lo = tl.load(open_ptr + lo, mask=go, other=0) != 0
        open_hi = tl.load(open_ptr + hi, mask=go, other=0) != 0
        interior = tl.load(counts_ptr + e, mask=go, other=0) == 2
        keep_high = open_hi & ~open_lo & interior
        keep = tl.where(keep_high, hi, lo)
        gone = tl.where(keep_high, lo, hi)
        for k in tl.static_range(3):
            value = tl.load(target_ptr + e * 3 + k, mask=go, other=0.0)
            tl.store(points_ptr + keep * 3 + k, value, mask=go)
        for j in tl.static_range(10):
            summed = tl.load(q_ptr + lo * 10 + j, mask=go, other=0.0) + tl.load(
                q_ptr + hi * 10 + j, mask=go, other=0.0
            )
            tl.store(q_ptr + keep * 10 + j, summed, mask=go)
        tl.store(moved_ptr + keep, tl.full((BLOCK,), 1, tl.int8), mask=go)
        tl.store(remap_ptr + gone, keep, mask=go)

    @triton.jit(do_not_specialize=["F"])
    def _faces_kernel(faces_ptr, remap_ptr, out_ptr, alive_ptr, F, BLOCK: tl.constexpr):
        f = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = f < F
        a = tl.load(remap_ptr + tl.load(faces_ptr + f * 3, mask=inside, other=0), mask=inside)
        b = tl.load(remap_ptr + tl.load(faces_ptr + f * 3 + 1, mask=inside, other=0), mask=inside)
        c = tl.load(remap_ptr + tl.load(faces_ptr + f * 3 + 2, mask=inside, other=0), mask=inside)
        tl.store(out_ptr + f * 3, a, mask=inside)
        tl.store(out_ptr + f * 3 + 1, b, mask=inside)
        tl.store(out_ptr + f * 3 + 2, c, mask=inside)
        alive = (a != b) & (b != c) & (c != a)
        tl.store(alive_ptr + f, alive.to(tl.int8), mask=inside)


def _apply_triton(
    points: torch.Tensor,
    q: torch.Tensor,
    moved: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    on_open: torch.Tensor,
    chosen: torch.Tensor,
    ok: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """As `apply_collapses`; on CUDA (on the CPU under TRITON_INTERPRET=1)."""
    V, S, F = len(points), len(chosen), len(faces)
    remap = torch.arange(V, device=faces.device)
    if S:
        _apply_kernel[(triton.cdiv(S, BLOCK),)](
            points,
            q,
            moved.view(torch.int8),
            remap,
            low.contiguous(),
            high.contiguous(),
            counts.contiguous(),
            on_open.contiguous().view(torch.int8),
            chosen.contiguous(),
            ok.contiguous().view(torch.int8),
            target.contiguous(),
            S,
            BLOCK=BLOCK,
        )
    out = torch.empty_like(faces)
    alive = torch.empty(F, dtype=torch.int8, device=faces.device)
    if F:
        _faces_kernel[(triton.cdiv(F, BLOCK),)](
            faces.contiguous(), remap, out, alive, F, BLOCK=BLOCK
        )
    return out[alive.view(torch.bool)]
