"""Simplification to a face budget: quadric edge collapse on parallel slabs.

fast-simplification (MIT; Garland and Heckbert 1997, "Surface simplification using quadric
error metrics", in Sven Forstmann's fast variant) runs on one core and keeps its working mesh
in globals, so it is not thread-safe: calls in this process hold a lock (the GPU worker and the
CPU fallback may simplify at once). The mesh is cut into slabs of equal face count across
its longest side; each slab is simplified in a worker process (a spawned pool, made once and
kept) with its border frozen, so the slabs' shared vertices keep their exact positions and
weld back together. The faces along a frozen cut keep the input's density: on a 16-core host
and a 1024-grid mesh (5.2M faces) they were 85% of an 80k budget and the rest of the surface
starved (25% at the 384 grid). Where they would take more than STRIP_SHARE of the budget,
each slab gets its share plus its strip, the slabs are welded, and a second pass cuts slabs
through the middle of the first ones: the strips lie inside its slabs and come down to the
budget's density, and its own cuts run through faces already near it. If the pool cannot
run, the slabs run here in turn.

The collapses' plane quadrics (n n^T) and their flip test (each face against itself) do not
depend on winding, so inconsistently wound input is fine.
"""

from __future__ import annotations

import atexit
import itertools
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
# A second pass (see the module docstring) runs when the faces along the first pass's cuts
# are more than this share of the budget. Measured (80k budget, perf/RESULTS.md): inflate at
# its default 384 grid 0.02-0.40 at the slab counts a 16-core host takes (a second pass
# there gained at most 0.15 dB for +124 to +132 ms median of mesh stage on an H100 host);
# at the 1024 grid (TRELLIS.2's) above 1, where it gained 2.3 to 7.7 dB.
STRIP_SHARE = 0.5


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


def _run(jobs: list[tuple[np.ndarray, np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each (positions, faces, budget) slab simplified with its border frozen, in the pool
    (or here in turn when the pool cannot run)."""
    try:
        pool = _workers()
        futures = [pool.submit(_simplify_piece, p, f, budget, True) for p, f, budget in jobs]
        return [future.result() for future in futures]
    except (BrokenProcessPool, OSError, RuntimeError) as error:
        log.warning("simplification workers failed (%s): simplifying here instead", error)
        _forget_pool()
        return [_simplify_piece(p, f, budget, True) for p, f, budget in jobs]


def _cut_faces(positions: np.ndarray, chosen: list[np.ndarray]) -> list[int]:
    """Per slab (its faces), how many of its faces touch a vertex of another slab: the strip
    along its cuts that a frozen border keeps at the input's density."""
    slabs_of_vertex = np.zeros(len(positions), np.int64)
    for slab_faces in chosen:
        used = np.zeros(len(positions), bool)
        used[slab_faces.reshape(-1)] = True
        slabs_of_vertex += used
    cut = slabs_of_vertex > 1
    return [int(cut[slab_faces].any(1).sum()) for slab_faces in chosen]


def _slab_pass(
    positions: np.ndarray, chosen: list[np.ndarray], budgets: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each slab (its faces) to its budget, border frozen -> the slabs concatenated, border
    vertices repeated exactly (not welded)."""
    jobs = [
        (*_compact(positions, slab_faces), budget)
        for slab_faces, budget in zip(chosen, budgets, strict=True)
    ]
    results = _run(jobs)
    offsets = np.cumsum([0] + [len(points) for points, _ in results[:-1]])
    merged_positions = np.concatenate([points for points, _ in results])
    shifted = [tris + offset for (_, tris), offset in zip(results, offsets, strict=True)]
    return merged_positions, np.concatenate(shifted)


def _shares(pieces: list[np.ndarray], faces: int, budget: int) -> list[int]:
    return [round(budget * len(piece) / faces) for piece in pieces]


def _centroids_along(positions: np.ndarray, faces: np.ndarray, axis: int) -> np.ndarray:
    """[F] the faces' centroids' coordinate on `axis`."""
    return positions[faces][:, :, axis].mean(axis=1)


def _welded(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slabs' repeated border vertices made one (kernels.weld, bit-exact)."""
    import torch  # here, not at the top: the spawned workers import this module

    from kernels.weld import weld

    unique, remap = weld(torch.from_numpy(positions))
    return unique.numpy(), remap.numpy()[faces]


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
    # 1. Slabs of equal face count across the longest side, borders frozen.
    axis = int(np.argmax(positions.max(0) - positions.min(0)))
    along = _centroids_along(positions, faces, axis)
    order = np.argsort(along, kind="stable")
    pieces = np.array_split(order, slabs)
    chosen = [faces[np.sort(piece)] for piece in pieces]
    shares = _shares(pieces, len(faces), face_budget)
    strips = _cut_faces(positions, chosen)
    if sum(strips) <= STRIP_SHARE * face_budget:
        return _slab_pass(positions, chosen, shares)
    # 2. The strips would take the interior's budget: each slab gets its share plus its
    #    strip, then slabs again, cut through the middle of each first slab (where the faces
    #    are at about the budget's density), each to its share: the strips come down to it.
    ends = [along[order[0]], *(along[piece[0]] for piece in pieces[1:]), along[order[-1]]]
    budgets = [share + strip for share, strip in zip(shares, strips, strict=True)]
    positions, faces = _welded(*_slab_pass(positions, chosen, budgets))
    middles = [(low + high) / 2 for low, high in itertools.pairwise(ends)]
    slab = np.searchsorted(middles, _centroids_along(positions, faces, axis), side="right")
    pieces = [piece for k in range(slabs + 1) if len(piece := np.nonzero(slab == k)[0])]
    chosen = [faces[piece] for piece in pieces]  # np.nonzero's indices are sorted
    return _slab_pass(positions, chosen, _shares(pieces, len(faces), face_budget))
