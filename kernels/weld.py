"""weld: merge the vertices of a triangle soup that share a position.

`weld(positions, tolerance)` -> (unique positions, remap of every input vertex). With
tolerance 0 positions must match bit for bit (-0.0 and 0.0 count as equal); with tolerance t
they are snapped to a grid of cell t first, so points in the same cell merge. Each group is
represented by its lowest original index, and the unique positions come out in the order of
their representatives: welding an already unique list returns it unchanged.

Paths: `_weld_torch` (any device: lexicographic stable sorts, no atomics, so deterministic)
and `weld_reference` (numpy) beside it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["weld", "weld_reference"]


def _check(positions: torch.Tensor | np.ndarray, tolerance: float) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [V, 3], got {tuple(positions.shape)}")
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")


def _keys_torch(positions: torch.Tensor, tolerance: float) -> torch.Tensor:
    if tolerance > 0:
        return torch.floor(positions.double() / tolerance).long()
    # The positions' own bit patterns; adding 0.0 turns -0.0 into 0.0 first.
    if positions.dtype == torch.float64:
        return (positions + 0.0).view(torch.int64)
    return (positions.float() + 0.0).view(torch.int32).long()


def weld(positions: torch.Tensor, tolerance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [V, 3] float -> (unique: [U, 3] same dtype, remap: [V] int64 into unique)."""
    _check(positions, tolerance)
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions must be finite")
    return _weld_torch(positions, tolerance)


def _weld_torch(positions: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    V = positions.shape[0]
    device = positions.device
    if V == 0:
        return positions.clone(), torch.zeros(0, dtype=torch.long, device=device)
    keys = _keys_torch(positions, tolerance)
    # 1. Lexicographic order by (x, y, z): stable sorts from the last key to the first, so
    #    inside a group the original order (lowest index first) survives.
    order = torch.arange(V, device=device)
    for column in (2, 1, 0):
        order = order[torch.sort(keys[order, column], stable=True).indices]
    sorted_keys = keys[order]
    # 2. A group starts where the key changes.
    starts = torch.ones(V, dtype=torch.bool, device=device)
    starts[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(dim=1)
    group_of_sorted = torch.cumsum(starts.long(), 0) - 1
    representatives = order[starts]  # lowest original index of each group, in key order
    # 3. Number the groups by their representative so the output keeps first-seen order.
    by_first = torch.sort(representatives, stable=True)
    new_id = torch.empty_like(by_first.indices)
    new_id[by_first.indices] = torch.arange(len(representatives), device=device)
    remap = torch.empty(V, dtype=torch.long, device=device)
    remap[order] = new_id[group_of_sorted]
    return positions[by_first.values], remap


def weld_reference(positions: np.ndarray, tolerance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of `weld`: positions [V, 3] -> (unique [U, 3], remap [V] int64)."""
    _check(positions, tolerance)
    if len(positions) == 0:
        return positions.copy(), np.zeros(0, np.int64)
    if tolerance > 0:
        keys = np.floor(positions.astype(np.float64) / tolerance).astype(np.int64)
    elif positions.dtype == np.float64:
        keys = (positions + 0.0).view(np.int64)
    else:
        keys = (positions.astype(np.float32) + np.float32(0.0)).view(np.int32)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return positions[np.sort(first)], rank[inverse.reshape(-1)]
