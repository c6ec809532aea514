"""dilate benchmark: the Triton jump flood against its torch twin, scipy's exact transform, the
brute-force numpy reference and the base miner's cv2.inpaint (Telea, radius 3).

    python perf/kernels.py --ops dilate [--quick] [--device cpu]

Input: an RGB uint8 texture laid out like an atlas (the tests' `atlas_mask`: rectangles and
blobs on shelves with gutters, ~40 % of the texels empty), random colours in the charts, zero
elsewhere. floor_bytes: the image read, the mask read and the image written, once each.

Rows:
- triton: `dilate(method="triton")` on the device (seed flood, then the fused gather).
- torch: `dilate(method="jump_flood")`, the same jump flood in torch ops, same device.
- edt: `dilate(method="edt")` from device tensors: the mask copied to the host, scipy's exact
  transform there, the indices copied back, the gather on the device (transfers included).
- cv2.inpaint: on the host, numpy in and out (no transfers), the same texture and mask; slow,
  so timed with 1-3 runs.
- numpy: `dilate_reference`, brute force, O(empty x filled): timed only on the small case
  (128^2, or 32^2 quick), named so in the case; never extrapolated to the large ones.
On the CPU the triton row runs only under TRITON_INTERPRET=1, and then on a 32^2 case only;
the torch row only below 2048^2 (minutes a run there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Row, median_ms

from kernels.dilate import dilate, dilate_reference
from tests.kernels.test_dilate import atlas_mask

EMPTY = 0.4  # fraction of empty texels
INPAINT_RADIUS = 3  # the base miner's cv2.inpaint radius
# (side, with the numpy reference, cv2.inpaint runs): the large cases time cv2 on 3 runs and 1.
CASES = [(2048, False, 3), (4096, False, 1), (128, True, 3)]
QUICK_CASES = [(128, False, 3), (32, True, 3)]


def atlas_texture(seed: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """-> image [S, S, 3] uint8 (zero where empty), filled [S, S] bool (~40 % empty)."""
    filled = atlas_mask(seed, side, side, EMPTY)
    colours = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return colours * filled[..., None].astype(np.uint8), filled


def run(device: str, quick: bool) -> list[Row]:
    rows: list[Row] = []
    for side, with_numpy, inpaint_runs in QUICK_CASES if quick else CASES:
        rows += _case(device, side, with_numpy, inpaint_runs)
    return rows


def _case(device: str, side: int, with_numpy: bool, inpaint_runs: int) -> list[Row]:
    on_cuda = torch.device(device).type == "cuda"
    large = side >= 2048
    image, filled = atlas_texture(side, side)
    case = f"{side}² RGB uint8 atlas, {100 * (1 - filled.mean()):.0f} % empty"
    if with_numpy:
        case += " (numpy brute force timed only at this size)"
    floor_bytes = 2 * image.nbytes + filled.nbytes
    image_t, filled_t = torch.from_numpy(image).to(device), torch.from_numpy(filled).to(device)
    on_device = partial(dilate, image_t, filled_t)
    # (impl, fn, where it is timed, warm-up runs, timed runs)
    timed: list[tuple[str, Callable[[], object], str, int, int]] = []
    if on_cuda or (os.environ.get("TRITON_INTERPRET") == "1" and side <= 32):
        timed.append(("triton", partial(on_device, method="triton"), device, *(3, 20)))
    if on_cuda or not large:  # torch's flood takes minutes at 2048^2 on a CPU
        runs = (1, 5) if large else (3, 20)
        timed.append(("torch", partial(on_device, method="jump_flood"), device, *runs))
    runs = (1, 3) if large else (3, 20)
    timed.append(("edt", partial(on_device, method="edt"), device, *runs))
    to_fill = (~filled).astype(np.uint8) * 255  # cv2: nonzero marks the texels to fill
    inpaint = partial(cv2.inpaint, image, to_fill, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    timed.append(("cv2.inpaint", inpaint, "cpu", 0, inpaint_runs))
    if with_numpy:
        timed.append(("numpy", partial(dilate_reference, image, filled), "cpu", 0, 3))
    rows = []
    for impl, fn, where, warmup, repeat in timed:
        if not on_cuda and impl == "triton":  # the interpreter: one run, no warm-up
            warmup, repeat = 0, 1
        ms = median_ms(fn, where, warmup=warmup, repeat=repeat)
        rows.append(Row("dilate", case, impl, ms, floor_bytes, repeat))
    return rows
