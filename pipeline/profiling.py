"""Step timings inside the stages, for `perf/profile.py`; a no-op unless a recorder is open.

Stages call `mark("mesh.weld")` where a step ends. Outside `recording(...)` that costs one
context-variable read and changes nothing. Inside it, each mark closes the step that began at
the previous mark (or where the recording began):
  - on CUDA a timing event is recorded on the current stream, so a step is the time the stream
    took from one mark to the next. Host work in between counts too, since the stream reaches
    an event only once the host has queued it: this is the step's share of the wall clock,
    without a synchronisation at each mark;
  - elsewhere the host clock (`time.perf_counter`).
A recorder belongs to the context that opened it (one thread): the server's worker threads
never see one, so served requests are never timed this way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

import torch

__all__ = ["StepRecorder", "mark", "recording"]


class StepRecorder:
    """Marks in order: (step name, CUDA event or perf_counter seconds)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._origin = self._stamp()
        self._marks: list[tuple[str, torch.cuda.Event | float]] = []

    def mark(self, step: str) -> None:
        self._marks.append((step, self._stamp()))

    def steps_ms(self) -> list[tuple[str, float]]:
        """(step, milliseconds) in the order the marks came; waits for the stream on CUDA."""
        if self.cuda and self._marks:
            self._marks[-1][1].synchronize()
        steps, previous = [], self._origin
        for step, stamp in self._marks:
            if self.cuda:
                steps.append((step, previous.elapsed_time(stamp)))
            else:
                steps.append((step, (stamp - previous) * 1e3))
            previous = stamp
        return steps

    def _stamp(self) -> torch.cuda.Event | float:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()  # on the current stream of the current device
            return event
        return time.perf_counter()


_ACTIVE: ContextVar[StepRecorder | None] = ContextVar("pipeline_step_recorder", default=None)


def mark(step: str) -> None:
    """End the step `step` here, when a recorder is open in this context; else nothing."""
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.mark(step)


@contextlib.contextmanager
def recording(device: torch.device | str) -> Iterator[StepRecorder]:
    """Open a recorder for this context; steps start counting now."""
    recorder = StepRecorder(torch.device(device))
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
