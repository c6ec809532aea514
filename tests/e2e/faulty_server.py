"""`python -m tests.e2e.faulty_server [server flags]`: the real server, whose main generation
number FAULT_AT_CALL (the warm-up's is 1) first breaks the process's CUDA context for good,
as a faulty kernel would: a store far out of bounds, an illegal memory access, sticky. On a
CPU, where there is no context to break, the fault is simulated: that generation raises and
`Pipeline.device_fault` reports the fault from then on, in this process image.

FAULT_DELAY_S (default 0) delays the fault within that call: a server with a deadline has
abandoned the job by then, and the call ends without anything awaiting it.

FAULT_ONCE_FILE names a file written when the fault is made; while it exists no fault is made,
so the server restarted after the fault (the same command line, executed again) runs clean.
FAIL_LOAD_AFTER_FAULT=1: in a process image started after the fault (FAULT_ONCE_FILE exists),
the first pipeline load fails, as it would on a device broken for good (the second, the
server's inflate on the CPU, loads).

For tests/e2e/test_device_fault_e2e.py only.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from pipeline.run import Generation, Pipeline, StagedImage
from server.__main__ import main

SIMULATED = "CUDA error: an illegal memory access was encountered (simulated on the CPU)"
FAILED_LOAD = "CUDA error: uncorrectable ECC error encountered (simulated)"
_simulated: list[str] = []  # the simulated fault, once made


@triton.jit
def _store_far(pointer, offset):
    tl.store(pointer + offset, 1.0)


def _faulting(generate: Callable[..., Generation]) -> Callable[..., Generation]:
    calls = itertools.count(1)

    def wrapped(
        self: Pipeline, staged: StagedImage, seed: int, abandoned: threading.Event | None = None
    ) -> Generation:
        flag = os.environ["FAULT_ONCE_FILE"]
        if next(calls) == int(os.environ["FAULT_AT_CALL"]) and not os.path.exists(flag):
            time.sleep(float(os.environ.get("FAULT_DELAY_S", "0")))
            open(flag, "w").close()
            if self.device.type == "cuda":
                _store_far[(1,)](torch.zeros(1, device=self.device), 1 << 40)
            else:
                _simulated.append(SIMULATED)
                raise RuntimeError(SIMULATED)
        return generate(self, staged, seed, abandoned)

    return wrapped


def _failing_first_load(load: Callable[[Pipeline], None]) -> Callable[[Pipeline], None]:
    loads = itertools.count(1)

    def wrapped(self: Pipeline) -> None:
        broken = os.environ.get("FAIL_LOAD_AFTER_FAULT") == "1"
        if next(loads) == 1 and broken and os.path.exists(os.environ["FAULT_ONCE_FILE"]):
            raise RuntimeError(FAILED_LOAD)
        load(self)

    return wrapped


def _reporting(device_fault: Callable[[Pipeline], str | None]) -> Callable[[Pipeline], str | None]:
    def wrapped(self: Pipeline) -> str | None:
        return _simulated[0] if _simulated else device_fault(self)

    return wrapped


if __name__ == "__main__":
    Pipeline.generate = _faulting(Pipeline.generate)  # type: ignore[method-assign]
    Pipeline.device_fault = _reporting(Pipeline.device_fault)  # type: ignore[method-assign]
    Pipeline.load = _failing_first_load(Pipeline.load)  # type: ignore[method-assign]
    main()
