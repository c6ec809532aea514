"""weld: the Triton kernels against the torch path on the same device and the numpy reference.

Case: a 2M-face soup, the faces of a closed 1000 x 1000 torus shuffled and expanded to 6M
per-corner positions (1M unique, each repeated in its 6 faces), welded exactly and to a 1e-4
grid; `quick`: a 60 x 50 torus (18k corners). Floor bytes: the positions read once, the unique
positions and the int64 remap written once. The numpy reference runs on the host, on the same
soup.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Row, median_ms

from kernels.weld import _weld_torch, _weld_triton, triton, weld_reference
from tests.kernels.test_weld import torus_soup

TOLERANCES = (0.0, 1e-4)


def _count(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def triton_runs_on(device: str) -> bool:
    """Natively on CUDA; on the CPU only under the interpreter (a smoke run, not a timing)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def run(device: str, quick: bool) -> list[Row]:
    rows, columns = (60, 50) if quick else (1000, 1000)
    soup = torus_soup(rows, columns, seed=0)  # [V, 3] float32
    positions = torch.from_numpy(soup).to(device)
    V = len(soup)
    repeat = 3 if quick else 20
    numpy_repeat = 3 if quick else 1  # about 15 s a run at full size on a 2-core host
    results = []
    for tolerance in TOLERANCES:
        case = f"{_count(V // 3)} faces ({_count(V)} vertices), tolerance {tolerance:g}"
        unique, _ = _weld_torch(positions, tolerance)
        floor_bytes = positions.numel() * 4 + unique.numel() * 4 + V * 8
        timed = {"torch": lambda t=tolerance: _weld_torch(positions, t)}
        if triton_runs_on(device):
            timed = {"triton": lambda t=tolerance: _weld_triton(positions, t), **timed}
        for impl, fn in timed.items():
            ms = median_ms(fn, device, warmup=1 if quick else 3, repeat=repeat)
            results.append(Row("weld", case, impl, ms, floor_bytes, repeat))
        reference = lambda t=tolerance: weld_reference(soup, t)  # noqa: E731
        ms = median_ms(reference, "cpu", warmup=1 if quick else 0, repeat=numpy_repeat)
        results.append(Row("weld", case, "numpy", ms, floor_bytes, numpy_repeat))
    return results
