"""Simplification to a face budget: quadric edge collapse on parallel slabs.

fast-simplification (MIT; Garland and Heckbert 1997, "Surface simplification using quadric
error metrics", in Sven Forstmann's fast variant) runs on one core and keeps its working mesh
in globals, so it is not thread-safe: calls in this process hold a lock (the GPU worker and the
CPU fallback may simplify at once). The mesh is cut into slabs of equal face count across
its longest side; each slab is simplified in a worker process (a spawned pool, made once and
kept) to its share of the budget with its border frozen, so the slabs' shared vertices keep
their exact positions and weld back together. The seams keep their full density along one
line, which costs a few hundred faces. If the pool cannot run, the slabs run here in turn.

The collapses' plane quadrics (n n^T) and their flip test (each face against itself) do not
depend on winding, so inconsistently wound input is fine.
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

__all__ = ["simplify"]

log = logging.getLogger("pipeline.mesh")

# fast-simplification's aggressiveness (0-10); 7 is its default. Measured on inflate outputs:
# 5-10 gave the same surface error and times within 20 %.
AGGRESSIVENESS = 7.0
# Below this many faces a slab is not worth a thread of its own.
FACES_PER_SLAB = 80_000
MAX_SLABS = 16


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
# fast-simplification's globals: one in-process call at a time.
_inline_lock = threading.Lock()


def _slab_count(face_count: int) -> int:
    return max(1, min(MAX_SLABS, os.cpu_count() or 1, face_count // FACES_PER_SLAB))


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


def _compact(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.zeros(len(positions), bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return positions[used], new_index[faces]


def _simplify_piece(
    positions: np.ndarray, faces: np.ndarray, budget: int, keep_border: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One compact piece (every vertex used) -> its simplified points and triangles."""
    import fast_simplification

    with _inline_lock:
        points, triangles = fast_simplification.simplify(
            positions.astype(np.float64),
            faces.astype(np.int32),
            target_count=max(budget, 1),
            agg=AGGRESSIVENESS,
            preserve_border=keep_border,
        )
    return points.astype(np.float32), triangles.astype(np.int64)


def simplify(
    positions: np.ndarray, faces: np.ndarray, face_budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """positions [V, 3] float32, faces [F, 3] -> about `face_budget` faces (unchanged if under).

    The result's vertices are not welded across slabs: call weld on it.
    """
    if len(faces) <= face_budget:
        return positions, faces
    slabs = _slab_count(len(faces))
    if slabs == 1:
        return _simplify_piece(*_compact(positions, faces), face_budget, keep_border=False)
    # 1. Slabs of equal face count across the longest side, by face centroid.
    centroids = positions[faces].mean(axis=1)
    axis = int(np.argmax(positions.max(0) - positions.min(0)))
    order = np.argsort(centroids[:, axis], kind="stable")
    pieces = np.array_split(order, slabs)
    # 2. Each slab to its share of the budget, in parallel, borders frozen.
    jobs = [
        (*_compact(positions, faces[np.sort(piece)]), round(face_budget * len(piece) / len(faces)))
        for piece in pieces
    ]
    try:
        pool = _workers()
        futures = [pool.submit(_simplify_piece, p, f, budget, True) for p, f, budget in jobs]
        results = [future.result() for future in futures]
    except (BrokenProcessPool, OSError, RuntimeError) as error:
        log.warning("simplification workers failed (%s): simplifying here instead", error)
        _forget_pool()
        results = [_simplify_piece(p, f, budget, True) for p, f, budget in jobs]
    # 3. Concatenate; the frozen border vertices repeat exactly, for the caller's weld.
    offsets = np.cumsum([0] + [len(points) for points, _ in results[:-1]])
    merged_positions = np.concatenate([points for points, _ in results])
    shifted = [tris + offset for (_, tris), offset in zip(results, offsets, strict=True)]
    merged_faces = np.concatenate(shifted)
    return merged_positions, merged_faces
