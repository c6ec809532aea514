"""pipeline/simplify.py: quadric simplification to a budget, in parallel slabs that weld back."""

from __future__ import annotations

import itertools
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from kernels.weld import weld
from pipeline import simplify as simplify_module
from pipeline import simplify_workers
from pipeline.simplify import simplify

# A simplified sphere of 2000+ faces stays this close to the unit sphere (radius units).
RADIAL_TOLERANCE = 0.02
# The budget is met within this many faces (the seams between slabs keep their density).
BUDGET_SLACK = 0.1


def sphere(subdivisions: int = 5) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)


def welded(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, remap = weld(torch.from_numpy(positions))
    return unique.numpy(), remap.numpy()[faces]


def edge_uses(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]])), 1)
    return np.unique(edges, axis=0, return_counts=True)[1]


@pytest.fixture
def slabs(monkeypatch: pytest.MonkeyPatch) -> int:
    """Force the slab path on a 20k-face sphere: 4 slabs of 5k faces."""
    monkeypatch.setattr(simplify_module, "FACES_PER_SLAB", 5000)
    monkeypatch.setattr(simplify_module.os, "cpu_count", lambda: 4)
    return 4


def test_under_budget_is_returned_unchanged() -> None:
    positions, faces = sphere(2)
    out_positions, out_faces = simplify(positions, faces, 10_000)
    assert out_positions is positions and out_faces is faces


def test_one_piece_meets_the_budget_and_keeps_the_shape() -> None:
    positions, faces = sphere(5)  # 20480 faces
    out_positions, out_faces = simplify(positions, faces, 2000)
    assert out_positions.dtype == np.float32 and out_faces.dtype == np.int64
    assert abs(len(out_faces) - 2000) <= BUDGET_SLACK * 2000
    radius = np.linalg.norm(out_positions, axis=1)
    assert np.abs(radius - 1).max() < RADIAL_TOLERANCE
    assert (edge_uses(out_faces) == 2).all()  # still closed


# At 8000 the strips along the cuts are 0.27 of the budget (one pass), at 4000 0.55 (two).
@pytest.mark.parametrize("budget", [8000, 4000])
def test_slabs_weld_back_into_one_closed_surface(slabs: int, budget: int) -> None:
    positions, faces = sphere(5)
    out_positions, out_faces = welded(*simplify(positions, faces, budget))
    assert abs(len(out_faces) - budget) <= BUDGET_SLACK * budget
    uses = edge_uses(out_faces)
    assert (uses == 2).all(), f"open or non-manifold edges after the weld: {np.bincount(uses)}"
    assert np.abs(np.linalg.norm(out_positions, axis=1) - 1).max() < RADIAL_TOLERANCE
    # One piece: Euler characteristic of a sphere.
    edges = len(uses)
    assert len(out_positions) - edges + len(out_faces) == 2


def test_faces_along_the_slab_cuts_are_no_denser_than_the_rest(slabs: int) -> None:
    """A frozen cut keeps the input's density along it; the second pass, cut elsewhere, brings
    those strips down to the budget's, so they do not take the rest of the surface's share."""
    positions, faces = sphere(6)  # 81920 faces: the strips are dense against a 2000 budget
    out_positions, out_faces = simplify(positions, faces, 2000)
    assert abs(len(out_faces) - 2000) <= BUDGET_SLACK * 2000
    _, inverse, counts = np.unique(out_positions, axis=0, return_inverse=True, return_counts=True)
    along_cut = (counts[inverse.reshape(-1)] > 1)[out_faces].any(1)  # a vertex in two slabs
    assert along_cut.any()
    corners = out_positions[out_faces]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    assert area[along_cut].mean() > 0.7 * area.mean()


def test_slabs_are_deterministic_and_match_the_serial_fallback(
    slabs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    positions, faces = sphere(5)
    first = simplify(positions, faces, 4000)
    second = simplify(positions, faces, 4000)

    def broken() -> None:
        raise BrokenProcessPool("no workers in this test")

    monkeypatch.setattr(simplify_workers, "_workers", broken)
    fallback = simplify(positions, faces, 4000)
    for a, b in ((first, second), (first, fallback)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def _reference_slabs(
    positions: np.ndarray, faces: np.ndarray, budget: int, slabs: int
) -> tuple[np.ndarray, np.ndarray]:
    """The slab cutting as it was written in numpy before it moved to torch (both passes),
    simplifying through the same workers."""

    def compact(p: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used = np.zeros(len(p), bool)
        used[f.reshape(-1)] = True
        return p[used], (np.cumsum(used) - 1)[f]

    def slab_pass(p: np.ndarray, chosen: list, budgets: list) -> tuple[np.ndarray, np.ndarray]:
        jobs = [(*compact(p, c), b) for c, b in zip(chosen, budgets, strict=True)]
        results = simplify_workers.run_slabs(jobs)
        offsets = np.cumsum([0] + [len(points) for points, _ in results[:-1]])
        shifted = [t + o for (_, t), o in zip(results, offsets, strict=True)]
        return np.concatenate([points for points, _ in results]), np.concatenate(shifted)

    def centroids(p: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
        return p[f][:, :, axis].mean(axis=1)

    axis = int(np.argmax(positions.max(0) - positions.min(0)))
    along = centroids(positions, faces, axis)
    order = np.argsort(along, kind="stable")
    pieces = np.array_split(order, slabs)
    chosen = [faces[np.sort(piece)] for piece in pieces]
    shares = [round(budget * len(piece) / len(faces)) for piece in pieces]
    slabs_of_vertex = np.zeros(len(positions), np.int64)
    for slab_faces in chosen:
        used = np.zeros(len(positions), bool)
        used[slab_faces.reshape(-1)] = True
        slabs_of_vertex += used
    cut = slabs_of_vertex > 1
    strips = [int(cut[slab_faces].any(1).sum()) for slab_faces in chosen]
    if sum(strips) <= simplify_module.STRIP_SHARE * budget:
        return slab_pass(positions, chosen, shares)
    ends = [along[order[0]], *(along[piece[0]] for piece in pieces[1:]), along[order[-1]]]
    budgets = [share + strip for share, strip in zip(shares, strips, strict=True)]
    p, f = welded(*slab_pass(positions, chosen, budgets))
    middles = [(low + high) / 2 for low, high in itertools.pairwise(ends)]
    slab = np.searchsorted(middles, centroids(p, f, axis), side="right")
    pieces = [piece for k in range(slabs + 1) if len(piece := np.nonzero(slab == k)[0])]
    shares = [round(budget * len(piece) / len(f)) for piece in pieces]
    return slab_pass(p, [f[piece] for piece in pieces], shares)


@pytest.mark.parametrize("budget", [8000, 4000])  # one pass, two passes
def test_the_slabs_cut_in_torch_equal_the_numpy_cutting(slabs: int, budget: int) -> None:
    positions, faces = sphere(5)
    rng = np.random.default_rng(budget)
    # The faces shuffled (a slab's faces not in ranked order), three dropped (slabs of unequal
    # counts, as numpy's array_split makes them).
    faces = faces[rng.permutation(len(faces))[:-3]]
    got = simplify(torch.from_numpy(positions), torch.from_numpy(faces), budget)
    want = _reference_slabs(positions, faces, budget, slabs)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_inconsistent_winding_does_not_matter() -> None:
    positions, faces = sphere(5)
    flipped = faces.copy()
    flipped[::3] = flipped[::3, ::-1]
    _, out_plain = simplify(positions, faces, 2000)
    _, out_flipped = simplify(positions, flipped, 2000)
    assert abs(len(out_plain) - len(out_flipped)) <= BUDGET_SLACK * 2000


# In a spawned child (as the slab workers are), importing the pipeline must not import torch:
# the pool starts in a fraction of the time and each worker holds numpy alone.
CHILD_IMPORTS = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
check = "__import__('pipeline.simplify_workers') and 'torch' in __import__('sys').modules"
with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
    in_child = pool.submit(eval, check).result()
import pipeline.simplify
print(in_child, "torch" in sys.modules)
"""


def test_slab_workers_start_without_torch() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CHILD_IMPORTS], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]  # torch in this process only (its warm-up)


def test_stop_workers_ends_the_worker_processes_and_a_later_slab_starts_anew() -> None:
    """The server stops them before it executes itself again after a device fault (no atexit
    handler runs then): none may outlive it."""
    positions, faces = sphere(4)
    job = (positions.astype(np.float32), faces.astype(np.int32), len(faces) // 2)
    first = simplify_workers.run_slabs([job])
    workers = list(simplify_workers._workers()._processes.values())
    assert workers and all(worker.is_alive() for worker in workers)
    simplify_workers.stop_workers()
    assert not any(worker.is_alive() for worker in workers)
    assert simplify_workers._pool is None
    simplify_workers.stop_workers()  # nothing to stop: no error
    again = simplify_workers.run_slabs([job])
    np.testing.assert_array_equal(first[0][0], again[0][0])
    np.testing.assert_array_equal(first[0][1], again[0][1])
