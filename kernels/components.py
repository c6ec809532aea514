"""components: connected components of a small graph in one Triton program, no host checks.

`components_one_program(n, a, b)` -> [n] int64: each node's label, the smallest node of its
component, for the undirected edges (a[i], b[i]). The labels are the unique fixed point of the
rule, so any order of work gives the same ones: integer work only, the same bits every run.

One program loops on the device until nothing changes, where the torch hooking
(`pipeline.face_graph.components_hooking`, the twin) checked on the host after every round and
every pointer jump (~300 launches and ~100 synchronisations on a 4000-face atlas, for a few
microseconds of work each; now every two rounds of three jumps, still ~0.9 ms at 4k edges on
the H100 against the program's 0.2). A round:
- hooking: for every edge whose ends' labels differ, the larger label's entry takes the
  smaller (integer `atomic_min`); the labels read may be a round old, which is harmless:
  every label stays a node of its component, at most the node itself;
- jumping: passes over the nodes, each replacing every label by its label's label (pointer
  doubling: the chains halve each pass, and a block's stores serve the blocks after it in
  the same pass), until a pass changes nothing: every label is then a root, a node that is
  its own label. Following each node's links one at a time instead took one step per link
  on a path numbered in order (a numpy count of block steps, 32,768-node path: 32,799 steps,
  against 240 for the passes).
The loop ends after a round with no edge across two labels. Then every edge joins equal
labels and every label is a root, so each component carries one label r, with label[r] = r;
its smallest node m has label[m] <= m within the component, so m = r.

One program serialises the work (a block of edges or nodes at a time): meant for graphs up
to a few tens of thousands of edges, where launches cost more than the work. Loads go past
the streaming multiprocessor's L1 (`.cg`), so they see the other threads' atomics, and
barriers part the phases.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the callers use the torch twin
    triton = None

__all__ = ["components_one_program"]

# Edges or nodes per step of the program's loops; 16 warps hold 4 each per thread.
BLOCK, NUM_WARPS = 2048, 16


def _check(n: int, a: torch.Tensor, b: torch.Tensor) -> None:
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be [m], got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise ValueError(f"a and b must be int64, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError("a and b must be on one device")


def components_one_program(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """n nodes, edges a, b [m] int64 (0 <= a, b < n; CUDA, or the CPU under
    TRITON_INTERPRET=1) -> [n] int64 labels: the smallest node of each one's component."""
    _check(n, a, b)
    label = torch.arange(n, device=a.device)
    if n == 0 or len(a) == 0:
        return label
    if triton is None:
        raise RuntimeError("components_one_program needs Triton")
    _components_kernel[(1,)](
        label, a.contiguous(), b.contiguous(), n, len(a), BLOCK=BLOCK, num_warps=NUM_WARPS
    )
    return label


if triton is not None:

    @triton.jit
    def _label_of(label_ptr, node, inside):
        return tl.load(label_ptr + node, mask=inside, other=0, cache_modifier=".cg")

    @triton.jit(do_not_specialize=["n", "m"])
    def _components_kernel(label_ptr, a_ptr, b_ptr, n, m, BLOCK: tl.constexpr):
        step = tl.arange(0, BLOCK)
        unsettled = 1
        while unsettled > 0:
            across = 0
            for start in range(0, m, BLOCK):  # hooking
                edge = start + step
                inside = edge < m
                la = _label_of(label_ptr, tl.load(a_ptr + edge, mask=inside, other=0), inside)
                lb = _label_of(label_ptr, tl.load(b_ptr + edge, mask=inside, other=0), inside)
                differ = inside & (la != lb)
                tl.atomic_min(label_ptr + tl.maximum(la, lb), tl.minimum(la, lb), mask=differ)
                across += tl.sum(differ.to(tl.int32), axis=0)
            tl.debug_barrier()
            if across > 0:
                jumping = 1
                while jumping > 0:  # passes of pointer doubling until every label is a root
                    jumping = 0
                    for start in range(0, n, BLOCK):
                        node = start + step
                        inside = node < n
                        now = _label_of(label_ptr, node, inside)
                        up = _label_of(label_ptr, now, inside)
                        changed = inside & (up != now)
                        tl.store(label_ptr + node, up, mask=changed)
                        jumping += tl.sum(changed.to(tl.int32), axis=0)
                    tl.debug_barrier()
            unsettled = across
