"""A throwaway call of torch's CPU vector maths on every worker thread, before real work.

torch's CPU build computes elementwise maths (sqrt, cos, sin, exp, ...) through MKL's vector
maths library, in blocks of at least 2048 values handed to its worker threads. On the CI
machine (2 cores, torch 2.13.0) a worker thread's first such call sometimes came back with
every value of its block off, by up to ~3e-11 relative for sqrt and ~5e-9 for cos, and every
later call right: in 21 of 250 fresh processes under load (perf/RESULTS.md; later runs saw it
in 1 of 150 processes without this warm-up and in none of 150 with it). CPU layouts then
differed between processes. `warm_up_worker_threads` makes that first call on throwaway
values, on each worker thread of the calling thread's pool (each thread that runs torch CPU
work has a pool of its own): the pipeline calls it when imported in a main process (its
child processes run no torch maths), the server in each of its worker threads.
"""

from __future__ import annotations

import torch

__all__ = ["warm_up_worker_threads"]

# torch hands the vector maths at least this many values per worker thread.
BLOCK = 2048


def warm_up_worker_threads() -> None:
    """One vector-maths call per worker thread of the calling thread, results discarded."""
    values = torch.linspace(0.5, 2.0, 2 * BLOCK * max(torch.get_num_threads(), 1))
    for dtype in (torch.float64, torch.float32):
        torch.sqrt(values.to(dtype))
