"""Simplification to a face budget: on CUDA, rounds of parallel quadric edge collapse on the
GPU (pipeline/decimate.py); elsewhere, or with method "slabs", quadric edge collapse on
parallel slabs in the host's worker processes (below). Measured at both grids the inflate
generator runs (perf/RESULTS.md, H100 host, eight meshes of 0.39M-4.6M faces): the GPU
rounds took 35-72% less time than the slabs and left the surface nearer the input (the
slabs' frozen cuts cost them more than the rounds' loss of greedy order). Where the rounds
stop short of the budget (lone triangles, non-manifold edges), the slabs finish from there.

The slabs: the mesh is cut into slabs of equal face count across its longest side, on the
mesh's device (torch: the faces ranked by centroid, each slab's vertices compacted); each
slab is simplified in a worker process (pipeline/simplify_workers.py) with its border
frozen, so the slabs' shared vertices keep their exact positions and weld back together. The
faces along a frozen cut keep the input's density: on a 16-core host and a 1024-grid mesh
(5.2M faces) they were 85% of an 80k budget and the rest of the surface starved (25% at the
384 grid). Where they would take more than STRIP_SHARE of the budget, each slab gets its
share plus its strip, the slabs are welded, and a second pass cuts slabs through the middle
of the first ones: the strips lie inside its slabs and come down to the budget's density,
and its own cuts run through faces already near it. The collapses' plane quadrics (n n^T)
and their flip test (each face against itself) do not depend on winding, so inconsistently
wound input is fine.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from pipeline.decimate import decimate
from pipeline.simplify_workers import MAX_SLABS, run_slabs, simplify_piece
from pipeline.winding import compact

__all__ = ["simplify"]

# Below this many faces a slab is not worth a thread of its own.
FACES_PER_SLAB = 80_000
# A second pass (see the module docstring) runs when the faces along the first pass's cuts
# are more than this share of the budget. Measured (80k budget, perf/RESULTS.md): inflate at
# its default 384 grid 0.02-0.40 at the slab counts a 16-core host takes (a second pass
# there gained at most 0.15 dB for +124 to +132 ms median of mesh stage on an H100 host);
# at the 1024 grid (TRELLIS.2's) above 1, where it gained 2.3 to 7.7 dB.
STRIP_SHARE = 0.5


def _slab_count(face_count: int) -> int:
    return max(1, min(MAX_SLABS, os.cpu_count() or 1, face_count // FACES_PER_SLAB))


def _slab_pass(
    positions: Tensor, faces: Tensor, slab: Tensor, budgets: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each slab k (the faces with slab == k, in their order) to budgets[k], border frozen ->
    the slabs concatenated on the host, border vertices repeated exactly (not welded)."""
    jobs = [(*_compact(positions, faces[slab == k]), budget) for k, budget in enumerate(budgets)]
    results = run_slabs(jobs)
    offsets = np.cumsum([0] + [len(points) for points, _ in results[:-1]])
    merged_positions = np.concatenate([points for points, _ in results])
    shifted = [
        tris.astype(np.int64) + offset for (_, tris), offset in zip(results, offsets, strict=True)
    ]
    return merged_positions, np.concatenate(shifted)


def _compact(positions: Tensor, faces: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`winding.compact`'s vertices and faces on the host, the faces int32 (half the bytes
    through the pool's pipes, and what fast-simplification takes)."""
    used, renumbered = compact(positions, faces, torch.int32)
    return used.cpu().numpy(), renumbered.cpu().numpy()


def _cut_faces(positions: Tensor, faces: Tensor, slab: Tensor, slabs: int) -> list[int]:
    """Per slab, how many of its faces touch a vertex of another slab: the strip along its
    cuts that a frozen border keeps at the input's density."""
    used = torch.zeros(len(positions) * slabs, dtype=torch.bool, device=faces.device)
    used[(faces * slabs + slab[:, None]).reshape(-1)] = True
    cut = used.reshape(-1, slabs).sum(1) > 1
    return torch.bincount(slab[cut[faces].any(1)], minlength=slabs).tolist()


def _centroids_along(positions: Tensor, faces: Tensor, axis: int) -> Tensor:
    """[F] the faces' centroids' coordinate on `axis` (float32 as numpy's mean of the three)."""
    c = positions[:, axis]
    return (c[faces[:, 0]] + c[faces[:, 1]] + c[faces[:, 2]]) / 3


def _on_host(array: np.ndarray | Tensor) -> np.ndarray:
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else array


def _shares(sizes: list[int], faces: int, budget: int) -> list[int]:
    return [round(budget * size / faces) for size in sizes]


def _welded(
    positions: np.ndarray, faces: np.ndarray, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The slabs' repeated border vertices made one (kernels.weld, bit-exact), on `device`."""
    from kernels.weld import weld

    unique, remap = weld(torch.from_numpy(positions).to(device))
    return unique, remap[torch.from_numpy(faces).to(device)]


def simplify(
    positions: np.ndarray | Tensor,
    faces: np.ndarray | Tensor,
    face_budget: int,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """positions [V, 3] float32, faces [F, 3] int64 (numpy, or torch on any device: the
    GPU rounds or the slabs' cutting run there) -> about `face_budget` faces on the host
    (unchanged if under). method: "auto" (the GPU rounds for CUDA tensors, else the slabs) or
    "slabs".

    The result's vertices are not welded across slabs: call weld on it.
    """
    if len(faces) <= face_budget:
        return _on_host(positions), _on_host(faces)
    positions, faces = torch.as_tensor(positions), torch.as_tensor(faces)
    if method == "auto" and faces.is_cuda:
        positions, faces = decimate(positions, faces, face_budget)
        if len(faces) <= face_budget:
            return _on_host(positions), _on_host(faces)
    slabs = _slab_count(len(faces))
    if slabs == 1:
        points, triangles = simplify_piece(*_compact(positions, faces), face_budget, False)
        return points, triangles.astype(np.int64)
    # 1. Slabs of equal face count across the longest side, borders frozen: the faces ranked
    #    by their centroids (stably), split as numpy's array_split would.
    axis = int(torch.argmax(positions.amax(0) - positions.amin(0)))
    along = _centroids_along(positions, faces, axis)
    order = torch.argsort(along, stable=True)
    small, larger = divmod(len(faces), slabs)
    sizes = [small + 1] * larger + [small] * (slabs - larger)
    starts = np.cumsum([0, *sizes[:-1]])
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    bounds = torch.as_tensor(starts[1:], device=order.device)
    slab = torch.searchsorted(bounds, rank, right=True)
    shares = _shares(sizes, len(faces), face_budget)
    strips = _cut_faces(positions, faces, slab, slabs)
    if sum(strips) <= STRIP_SHARE * face_budget:
        return _slab_pass(positions, faces, slab, shares)
    # 2. The strips would take the interior's budget: each slab gets its share plus its
    #    strip, then slabs again, cut through the middle of each first slab (where the faces
    #    are at about the budget's density), each to its share: the strips come down to it.
    firsts = order[torch.as_tensor(np.append(starts, len(faces) - 1), device=order.device)]
    ends = along[firsts]  # each slab's first centroid, and the last slab's last
    budgets = [share + strip for share, strip in zip(shares, strips, strict=True)]
    positions, faces = _welded(*_slab_pass(positions, faces, slab, budgets), positions.device)
    middles = (ends[:-1] + ends[1:]) / 2
    slab = torch.searchsorted(middles, _centroids_along(positions, faces, axis), right=True)
    counts = torch.bincount(slab, minlength=slabs + 1)
    present = torch.nonzero(counts).squeeze(1)
    slab = torch.searchsorted(present, slab)  # renumbered over the slabs that have faces
    sizes = counts[present].tolist()
    return _slab_pass(positions, faces, slab, _shares(sizes, len(faces), face_budget))
