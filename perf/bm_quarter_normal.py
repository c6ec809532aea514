"""quarter_normal benchmark: the bake fit's operator (B^T M B + weight I, one a conjugate-gradient
step) on a texture: the Triton kernel pair at the module's blocks, the same pair with the gather
at 1024 texels a program (the block before 2026-11-24, where its unrolled loads spilled) and
the torch twin.

    python perf/kernels.py --ops quarter_normal [--quick] [--device cpu]

Input: a random float32 texture [S, S, 3] and ~70 % of its quarter points inside (seeded).
floor_bytes: the texture and the inside mask read, the samples [2S, 2S, 3] written and read,
the output written, once each. Every row's output is checked against the module's Triton path
before it is timed: the triton rows bit for bit, the torch twin to float32 rounding (it sums in
another order); a mismatch raises. On the CPU the triton rows run only under TRITON_INTERPRET=1,
on the smallest case only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Row, median_ms

import kernels.quarter_normal as module
from kernels.quarter_normal import _quarter_normal_torch, _quarter_normal_triton

CASES = [2048, 4096]
QUICK_CASES = [64]
INSIDE = 0.7  # share of the quarter points on the surface
WEIGHT = 0.1  # pipeline.texture_fit.ANCHOR_WEIGHT
OLD_GATHER_BLOCK = 1024


def _with_gather_block(block: int, values: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The Triton pair with the gather kernel's block set to `block` for this call."""
    kept = module.GATHER_BLOCK
    module.GATHER_BLOCK = block
    try:
        return _quarter_normal_triton(values, inside, WEIGHT)
    finally:
        module.GATHER_BLOCK = kept


def run(device: str, quick: bool) -> list[Row]:
    rows: list[Row] = []
    cases = QUICK_CASES if quick else CASES
    for side in cases:
        rows += _case(device, side, smallest=side == min(cases))
    return rows


def _case(device: str, side: int, smallest: bool) -> list[Row]:
    on_cuda = torch.device(device).type == "cuda"
    generator = torch.Generator(device=device).manual_seed(side)
    values = torch.rand(side, side, 3, device=device, generator=generator)
    inside = torch.rand(2 * side, 2 * side, device=device, generator=generator) < INSIDE
    case = f"{side}² RGB float32, {100 * INSIDE:.0f} % of quarter points inside"
    floor_bytes = 2 * values.nbytes + inside.numel() + 2 * 4 * values.nbytes
    # (impl, fn, warm-up runs, timed runs, exact)
    timed: list[tuple[str, Callable[[], torch.Tensor], int, int, bool]] = []
    if on_cuda or (os.environ.get("TRITON_INTERPRET") == "1" and smallest):
        runs = (3, 50) if on_cuda else (0, 1)
        now = partial(_quarter_normal_triton, values, inside, WEIGHT)
        timed.append(("triton", now, *runs, True))
        old = partial(_with_gather_block, OLD_GATHER_BLOCK, values, inside)
        timed.append((f"triton, gather block {OLD_GATHER_BLOCK}", old, *runs, True))
    runs = (3, 50) if on_cuda else (1, 3)
    timed.append(("torch", partial(_quarter_normal_torch, values, inside, WEIGHT), *runs, False))
    expected = timed[0][1]() if timed[0][0] == "triton" else None
    rows = []
    for impl, fn, warmup, repeat, exact in timed:
        if expected is not None:
            got = fn()
            same = torch.equal(got, expected) if exact else torch.allclose(got, expected, 1e-5)
            if not same:
                raise AssertionError(f"quarter_normal {impl} differs from the module's Triton path")
        ms = median_ms(fn, device, warmup=warmup, repeat=repeat)
        rows.append(Row("quarter_normal", case, impl, ms, floor_bytes, repeat))
    return rows
