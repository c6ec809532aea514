"""uv_raster: rasterise triangles in UV space into a texel grid, without depth.

`uv_raster(uvs, faces, width, height, conservative)` -> UVRaster: face_ids [H, W] int64
(-1 where empty), barycentrics [H, W, 3] float32, and the faces that overlap another face
(one texel centre strictly inside both: neighbours that merely touch never count). Texel
(x, y) covers [x, x + 1] x [y, y + 1] in texel units (uv * (W, H)); row y = 0 is v = 0, the
top of a glTF image.

- Centre coverage (conservative=False): a texel belongs to a triangle whose closed interior
  contains its centre.
- Conservative coverage (conservative=True): every texel the triangle touches at all, by the
  edge functions pushed out by half the texel's extent along each edge normal (Hasselgren et
  al. 2005, "Conservative rasterization", GPU Gems 2) and limited to the triangle's box.
  Barycentrics of texels whose centre lies outside are clamped into the triangle.
Tie-break, deterministic: a texel whose centre is inside a triangle goes to the lowest such
face id; otherwise to the lowest face id that touches it.

Paths: `_uv_raster_torch` (any device: each face's texel runs per row, from clipping it to
the row, then the edge tests on those texels alone) and `uv_raster_reference` (numpy, one
face at a time over its whole box) beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["UVRaster", "uv_raster", "uv_raster_reference"]

# Candidate (face, texel) pairs evaluated at once by the torch path: bounds its memory
# (about 100 bytes a pair) without costing throughput.
CANDIDATES_PER_CHUNK = 8_000_000
# Texels by which the proposed runs are widened, well above float32 rounding at 4096 texels:
# the runs only propose candidates, the edge tests decide, so slack costs a little, never a
# missed texel.
SPAN_SLACK = 0.01


Array = torch.Tensor | np.ndarray


def _check(uvs: Array, faces: Array, w: int, h: int) -> None:
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"uvs must be [V, 2], got {tuple(uvs.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got {w}x{h}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(uvs)):
        raise ValueError(f"face indices must lie in [0, {len(uvs)})")


@dataclass(frozen=True)
class UVRaster:
    face_ids: torch.Tensor  # [H, W] int64 covering face, -1 where empty
    barycentrics: torch.Tensor  # [H, W, 3] float32, inside the face (clamped at edge texels)
    overlapping: torch.Tensor  # [F] bool: shares an interior texel centre with another face


def uv_raster(
    uvs: torch.Tensor, faces: torch.Tensor, width: int, height: int, conservative: bool = True
) -> UVRaster:
    """uvs: [V, 2] float in [0, 1], faces: [F, 3] int -> the texel grid's faces and weights."""
    _check(uvs, faces, width, height)
    return _uv_raster_torch(uvs.float(), faces.long(), width, height, conservative)


def _cover(
    corners: torch.Tensor, centres: torch.Tensor, conservative: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """corners [N, 3, 2], centres [N, 2] -> (touched [N], centre_inside [N], bary [N, 3])."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    sign = torch.where(area2 < 0, -1.0, 1.0)  # make every triangle counter-clockwise
    edges = []
    for p0, p1 in ((b, c), (c, a), (a, b)):  # edge opposite a, b, c: barycentric numerators
        ex, ey = p1[:, 0] - p0[:, 0], p1[:, 1] - p0[:, 1]
        value = sign * (ex * (centres[:, 1] - p0[:, 1]) - ey * (centres[:, 0] - p0[:, 0]))
        slack = 0.5 * (ex.abs() + ey.abs())  # half the texel's extent along the edge normal
        edges.append((value, slack))
    inside = (edges[0][0] >= 0) & (edges[1][0] >= 0) & (edges[2][0] >= 0) & (area2 != 0)
    if conservative:
        touched = (
            (edges[0][0] + edges[0][1] >= 0)
            & (edges[1][0] + edges[1][1] >= 0)
            & (edges[2][0] + edges[2][1] >= 0)
        )
    else:
        touched = inside
    raw = torch.stack([e[0] for e in edges], dim=1).clamp(min=0)
    total = raw.sum(1, keepdim=True)
    bary = torch.where(total > 0, raw / total.clamp(min=1e-30), torch.full_like(raw, 1 / 3))
    return touched, inside, bary


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For counts [N]: (owner [sum], position within its owner's run [sum])."""
    owner = torch.arange(len(counts), device=counts.device).repeat_interleave(counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(owner), device=counts.device) - first.repeat_interleave(counts)
    return owner, local


def _spans(
    corners: torch.Tensor, W: int, H: int, conservative: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(face, row, first x, last x) of each face's texel run on each row it reaches.

    Runs come from clipping the triangle to the row's band (conservative) or line (centre),
    widened by SPAN_SLACK; they only propose texels, and `_cover` decides.
    """
    eps = SPAN_SLACK
    y_min, y_max = corners[:, :, 1].amin(1), corners[:, :, 1].amax(1)
    if conservative:  # rows whose band [y, y + 1] meets the triangle
        first_row, last_row = torch.ceil(y_min - 1 - eps), torch.floor(y_max + eps)
    else:  # rows whose centre line y + 0.5 meets it
        first_row, last_row = torch.ceil(y_min - 0.5 - eps), torch.floor(y_max - 0.5 + eps)
    first_row = first_row.clamp(0, H - 1).long()
    last_row = last_row.clamp(-1, H - 1).long()
    face, step = _expand((last_row - first_row + 1).clamp(min=0))
    row = first_row[face] + step
    c = corners[face]  # [P, 3, 2]
    low = row.float() + (-eps if conservative else 0.5 - eps)
    high = row.float() + (1 + eps if conservative else 0.5 + eps)
    inf = torch.full_like(low, float("inf"))
    x_lo, x_hi = inf.clone(), -inf
    for k in range(3):
        p, q = c[:, k], c[:, (k + 1) % 3]
        inside = (p[:, 1] >= low) & (p[:, 1] <= high)  # a corner within the band
        x_lo = torch.where(inside, torch.minimum(x_lo, p[:, 0]), x_lo)
        x_hi = torch.where(inside, torch.maximum(x_hi, p[:, 0]), x_hi)
        dy = q[:, 1] - p[:, 1]
        safe_dy = torch.where(dy == 0, torch.ones_like(dy), dy)
        for line in (low, high):  # where the edge crosses the band's two lines
            t = (line - p[:, 1]) / safe_dy
            crosses = (dy != 0) & (t >= 0) & (t <= 1)
            x = p[:, 0] + t * (q[:, 0] - p[:, 0])
            x_lo = torch.where(crosses, torch.minimum(x_lo, x), x_lo)
            x_hi = torch.where(crosses, torch.maximum(x_hi, x), x_hi)
    offset = 1.0 if conservative else 0.5
    first_x = torch.ceil(x_lo - offset - eps).clamp(0, W - 1)
    last_x = torch.floor(x_hi + (0.0 if conservative else -0.5) + eps).clamp(-1, W - 1)
    empty = ~torch.isfinite(x_lo)
    last_x = torch.where(empty, first_x - 1, last_x)
    return face, row, first_x.long(), last_x.long()


def _candidates(
    uvs: torch.Tensor, faces: torch.Tensor, W: int, H: int, conservative: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per chunk of faces: (face id, texel index, centre inside, barycentrics) of every texel
    each face covers, in face order. Chunks bound the candidates held at once."""
    device = uvs.device
    F = faces.shape[0]
    scale = torch.tensor([W, H], dtype=torch.float32, device=device)
    corners_all = uvs[faces] * scale  # [F, 3, 2] texel units
    box_lo_all, box_hi_all = corners_all.amin(1), corners_all.amax(1)  # [F, 2]
    # Faces per chunk from their boxes' areas: an upper bound of their candidates.
    box = (box_hi_all - box_lo_all + 3).prod(1)
    cumulative = torch.cumsum(box.double(), 0)
    start = 0
    while start < F:
        limit = (float(cumulative[start - 1]) if start else 0.0) + CANDIDATES_PER_CHUNK
        stop = min(max(start + 1, int(torch.searchsorted(cumulative, limit, right=True))), F)
        face, row, first_x, last_x = _spans(corners_all[start:stop], W, H, conservative)
        run, step = _expand((last_x - first_x + 1).clamp(min=0))
        face_ids = face[run] + start
        x = first_x[run] + step
        y = row[run]
        centres = torch.stack((x, y), 1).float() + 0.5
        corners = corners_all[face_ids]
        touched, inside, bary = _cover(corners, centres, conservative)
        if conservative:  # the pushed-out edges overshoot near sharp corners: clip to the box
            box_lo, box_hi = box_lo_all[face_ids], box_hi_all[face_ids]
            touched &= ((centres + 0.5 >= box_lo) & (centres - 0.5 <= box_hi)).all(1)
        yield face_ids[touched], (y * W + x)[touched], inside[touched], bary[touched]
        start = stop


def _uv_raster_torch(
    uvs: torch.Tensor, faces: torch.Tensor, W: int, H: int, conservative: bool
) -> UVRaster:
    device = uvs.device
    F = faces.shape[0]
    # Winner per texel as one integer: centre-inside first, then the lowest face id.
    best = torch.full((H * W,), 2 * F, dtype=torch.long, device=device)
    claims = torch.zeros(H * W, dtype=torch.long, device=device)
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for face_ids, texel, inside, bary in _candidates(uvs, faces, W, H, conservative):
        rank = torch.where(inside, 0, F) + face_ids
        best.scatter_reduce_(0, texel, rank, reduce="amin")  # integer min: order-free
        strictly = (bary > 0).all(1) & inside  # centre off every edge: the open interior
        claims += torch.bincount(texel[strictly], minlength=H * W)
        chunks.append((texel, rank, bary, strictly))
    face_map = torch.full((H * W,), -1, dtype=torch.long, device=device)
    bary_map = torch.zeros(H * W, 3, dtype=torch.float32, device=device)
    overlapping = torch.zeros(F, dtype=torch.bool, device=device)
    for texel, rank, bary, strictly in chunks:
        won = best[texel] == rank
        face_map[texel[won]] = rank[won] % F
        bary_map[texel[won]] = bary[won]
        shared = strictly & (claims[texel] > 1)
        overlapping[rank[shared] % F] = True
    return UVRaster(face_map.view(H, W), bary_map.view(H, W, 3), overlapping)


def _cover_reference(
    corners: np.ndarray, centres: np.ndarray, conservative: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One triangle's corners [3, 2] against texel centres [N, 2], in float32 like the kernel."""
    a, b, c = corners[0], corners[1], corners[2]
    area2 = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    sign = np.float32(-1.0 if area2 < 0 else 1.0)
    values, slacks = [], []
    for p0, p1 in ((b, c), (c, a), (a, b)):
        ex, ey = p1[0] - p0[0], p1[1] - p0[1]
        values.append(sign * (ex * (centres[:, 1] - p0[1]) - ey * (centres[:, 0] - p0[0])))
        slacks.append(np.float32(0.5) * (abs(ex) + abs(ey)))
    inside = (values[0] >= 0) & (values[1] >= 0) & (values[2] >= 0) & (area2 != 0)
    touched = inside
    if conservative:
        touched = (values[0] + slacks[0] >= 0) & (values[1] + slacks[1] >= 0)
        touched &= values[2] + slacks[2] >= 0
    raw = np.maximum(np.stack(values, 1), 0)
    total = raw.sum(1, keepdims=True)
    bary = np.where(total > 0, raw / np.maximum(total, 1e-30), np.float32(1 / 3))
    return touched, inside, bary.astype(np.float32)


def uv_raster_reference(
    uvs: np.ndarray, faces: np.ndarray, width: int, height: int, conservative: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy twin of `uv_raster`, one face at a time: (face_ids, barycentrics, overlapping)."""
    _check(uvs, faces, width, height)
    W, H = width, height
    F = len(faces)
    best = np.full((H, W), 2 * F, np.int64)
    bary_map = np.zeros((H, W, 3), np.float32)
    claimants: dict[tuple[int, int], list[int]] = {}
    corners_all = uvs[faces].astype(np.float32) * np.array([W, H], np.float32)
    for f in range(F):
        corners = corners_all[f]
        pad = 0.5 if conservative else 0.0
        x0 = max(int(np.floor(corners[:, 0].min() - pad)), 0)
        y0 = max(int(np.floor(corners[:, 1].min() - pad)), 0)
        x1 = min(int(np.ceil(corners[:, 0].max() + pad)) - 1, W - 1)
        y1 = min(int(np.ceil(corners[:, 1].max() + pad)) - 1, H - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        centres = np.stack((xs.ravel(), ys.ravel()), 1).astype(np.float32) + 0.5
        touched, inside, bary = _cover_reference(corners, centres, conservative)
        if conservative:
            lo, hi = corners.min(0), corners.max(0)
            touched &= ((centres + 0.5 >= lo) & (centres - 0.5 <= hi)).all(1)
        for t in np.nonzero(touched)[0]:
            x, y = int(centres[t, 0]), int(centres[t, 1])
            rank = (0 if inside[t] else F) + f
            if rank < best[y, x]:
                best[y, x] = rank
                bary_map[y, x] = bary[t]
            if inside[t] and (bary[t] > 0).all():
                claimants.setdefault((y, x), []).append(f)
    face_map = np.where(best < 2 * F, best % max(F, 1), -1)
    overlapping = np.zeros(F, bool)
    for owners in claimants.values():
        if len(owners) > 1:
            overlapping[owners] = True
    return face_map, bary_map, overlapping
