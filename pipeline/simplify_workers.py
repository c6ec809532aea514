"""Simplification's worker side: fast-simplification on one piece, and the pool of spawned
worker processes that run the slabs (pipeline/simplify.py cuts them).

fast-simplification (MIT; Garland and Heckbert 1997, "Surface simplification using quadric
error metrics", in Sven Forstmann's fast variant) runs on one core and keeps its working mesh
in globals, so it is not thread-safe: calls in this process hold a lock (the GPU worker and the
CPU fallback may simplify at once). The pool is spawned once and kept (spawn: no CUDA state is
inherited); its workers import this module, numpy and fast-simplification, never torch, so
they start in a fraction of the time. If the pool cannot run, the slabs run here in turn.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

__all__ = ["MAX_SLABS", "run_slabs", "simplify_piece", "stop_workers"]

log = logging.getLogger("pipeline.mesh")

# fast-simplification's aggressiveness (0-10); 7 is its default. Measured on inflate outputs:
# 5-10 gave the same surface error and times within 20 %.
AGGRESSIVENESS = 7.0
# Worker processes at most (and slabs at most).
MAX_SLABS = 16

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
# fast-simplification's globals: one in-process call at a time.
_inline_lock = threading.Lock()


def _workers() -> ProcessPoolExecutor:
    """The shared pool of spawned workers (spawn: no CUDA state is inherited)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            size = max(1, min(MAX_SLABS, os.cpu_count() or 1))
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(max_workers=size, mp_context=context)
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        return _pool


def _forget_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def stop_workers() -> None:
    """Stop the worker processes, waiting for them. For a process about to execute itself
    again (the server after a device fault): no atexit handler runs then, and the workers
    would live on as orphans. A later slab starts a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def simplify_piece(
    positions: np.ndarray, faces: np.ndarray, budget: int, keep_border: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One compact piece (every vertex used) -> its simplified points (float32) and
    triangles (int32: half the bytes through the pool's pipes; the caller widens them)."""
    import fast_simplification

    with _inline_lock:
        points, triangles = fast_simplification.simplify(
            positions.astype(np.float64),
            faces.astype(np.int32),
            target_count=max(budget, 1),
            agg=AGGRESSIVENESS,
            preserve_border=keep_border,
        )
    return points.astype(np.float32), triangles.astype(np.int32)


def run_slabs(
    jobs: list[tuple[np.ndarray, np.ndarray, int]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each (positions, faces, budget) slab simplified with its border frozen, in the pool
    (or here in turn when the pool cannot run)."""
    try:
        pool = _workers()
        futures = [pool.submit(simplify_piece, p, f, budget, True) for p, f, budget in jobs]
        return [future.result() for future in futures]
    except (BrokenProcessPool, OSError, RuntimeError) as error:
        log.warning("simplification workers failed (%s): simplifying here instead", error)
        _forget_pool()
        return [simplify_piece(p, f, budget, True) for p, f, budget in jobs]
