"""Timing helpers shared by the kernel benchmarks (`perf/bm_<op>.py`, run by `perf/kernels.py`).

Every benchmark row names the op, the case, the implementation, its median milliseconds, and
the bytes that must move at the least (read the inputs once, write the outputs once): from
those, effective GB/s and the ratio to the floor, the time a copy of that many bytes takes at
the copy bandwidth measured on the same device in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Row", "copy_bandwidth", "median_ms", "sync"]


@dataclass
class Row:
    op: str  # weld, uv_raster, field_sample, dilate, quarter_normal
    case: str  # e.g. "2M faces (6M vertices)"
    impl: str  # triton, torch, numpy, cv2.inpaint, ...
    ms: float  # median milliseconds
    floor_bytes: int  # bytes that must move at the least
    runs: int  # timed runs behind the median

    def gbps(self) -> float:
        return self.floor_bytes / (self.ms * 1e-3) / 1e9 if self.ms > 0 else float("inf")


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_ms(
    fn: Callable[[], object], device: str | torch.device, warmup: int = 3, repeat: int = 20
) -> float:
    """Median wall milliseconds of fn() over `repeat` runs after `warmup`, synchronised.

    On CUDA each run is bracketed by events on the current stream (so host launch overhead
    counts, as it does in the pipeline); elsewhere by the host clock.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    cuda = torch.device(device).type == "cuda"
    for _ in range(repeat):
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str | torch.device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second)."""
    source = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    ms = median_ms(lambda: target.copy_(source), device, warmup=3, repeat=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9
