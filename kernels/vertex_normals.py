"""vertex_normals: smooth, area-weighted vertex normals by segment sums.

Each face adds its unnormalised normal (cross product = 2 * area * unit normal) to its three
corners. The sums are float64 segment reductions over the corners sorted by vertex, so they
are deterministic on every device (no floating-point atomics, which is what `index_add_`
uses on CUDA). A vertex no face touches, or whose normals cancel, gets +Z.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["vertex_normals", "vertex_normals_reference"]


def _check(positions: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [V, 3], got {tuple(positions.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(positions)):
        raise ValueError(f"face indices must lie in [0, {len(positions)})")


def vertex_normals(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """positions: [V, 3] float, faces: [F, 3] int -> [V, 3] float32 unit normals."""
    _check(positions, faces)
    if positions.device != faces.device:
        raise ValueError("positions and faces must be on the same device")
    return _vertex_normals_torch(positions, faces.long())


def _vertex_normals_torch(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    V = positions.shape[0]
    p = positions.double()
    corners = p[faces]  # [F, 3, 3]
    face_normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=1)
    vertex_ids = faces.reshape(-1)  # [3F] corner -> vertex
    contributions = face_normals.repeat_interleave(3, dim=0)  # [3F, 3]
    order = torch.sort(vertex_ids, stable=True).indices
    counts = torch.bincount(vertex_ids, minlength=V)
    # One reduction per vertex over its own corners, in face order: no atomics, and a vertex
    # whose normals cancel sums to exactly what they cancel to.
    if len(order) == 0:
        totals = torch.zeros(V, 3, dtype=torch.float64, device=positions.device)
    else:
        totals = torch.segment_reduce(contributions[order], "sum", lengths=counts, axis=0)
    return _normalise(totals).float()


def _normalise(totals: torch.Tensor) -> torch.Tensor:
    length = torch.linalg.vector_norm(totals, dim=1, keepdim=True)
    fallback = torch.tensor([0.0, 0.0, 1.0], dtype=totals.dtype, device=totals.device)
    return torch.where(length > 1e-30, totals / length.clamp(min=1e-30), fallback)


def vertex_normals_reference(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """numpy twin: positions [V, 3], faces [F, 3] -> [V, 3] float32 unit normals."""
    _check(positions, faces)
    p = positions.astype(np.float64)
    corners = p[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    totals = np.zeros((len(p), 3))
    for corner in range(3):
        np.add.at(totals, faces[:, corner], face_normals)
    length = np.linalg.norm(totals, axis=1, keepdims=True)
    unit = np.where(length > 1e-30, totals / np.maximum(length, 1e-30), [0.0, 0.0, 1.0])
    return unit.astype(np.float32)
