"""A step repeated many times, replayed from a captured CUDA graph on CUDA.

Small, fixed-shape steps (a conjugate-gradient step of the atlas's relaxation, a sweep of the
inflate generator's Poisson solve) are a few dozen tiny kernels each, run hundreds of times:
launching them from Python costs far more than their GPU work. On CUDA the step is captured
once and replayed: the same kernels on the same tensors, so the same bits as stepping
eagerly (the tests compare both ways).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["Repeated"]

log = logging.getLogger("pipeline.graphs")


class Repeated:
    """step() (in place: it reads and writes the same tensors every time) run `times` times
    per call; captured on the first call on CUDA (unless `capture` is off), eager elsewhere.
    A capture that fails runs nothing: the steps then go eagerly, with a warning naming
    `name`."""

    def __init__(
        self, step: Callable[[], None], device: torch.device, capture: bool, name: str
    ) -> None:
        self.step = step
        self.device = device
        self.name = name
        self.eager = device.type != "cuda" or not capture
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, times: int) -> None:
        if self.eager:
            for _ in range(times):
                self.step()
            return
        current = torch.cuda.current_stream(self.device)
        if self.graph is None:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.stream(side):
                    # Thread-local: the server's other threads may use CUDA meanwhile.
                    graph.capture_begin(capture_error_mode="thread_local")
                    try:
                        self.step()
                    finally:
                        graph.capture_end()
            except RuntimeError as error:  # nothing ran while capturing: step eagerly
                log.warning(
                    "%s: CUDA graph capture failed (%s), stepping eagerly", self.name, error
                )
                self.eager = True
                current.wait_stream(side)
                self(times)
                return
            current.wait_stream(side)
            self.graph = graph
        for _ in range(times):
            self.graph.replay()

    def close(self) -> None:
        """Wait for the replays: the graph's own memory is released with it."""
        if self.graph is not None:
            torch.cuda.current_stream(self.device).synchronize()
            self.graph = None
