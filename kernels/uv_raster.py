"""uv_raster: rasterise triangles in UV space into a texel grid, without depth.

`uv_raster(uvs, faces, width, height, conservative)` -> UVRaster: face_ids [H, W] int64
(-1 where empty), barycentrics [H, W, 3] float32, and the faces that overlap another face
(one texel centre strictly inside both: neighbours that merely touch never count).
`uv_overlaps(...)` -> the last alone: the same flags, without the maps off CUDA. Texel
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

Paths, all with the same float32 edge functions in the same order:
- `_uv_raster_triton` (CUDA tensors; also CPU ones under TRITON_INTERPRET=1): each face's
  candidate rows are cut into bands of BAND_ROWS, each band's columns those the triangle
  reaches in it (clipped as the torch path clips a row, so a sliver does not test its whole
  box), every band of a face laid out as wide as its widest; those texels are cut into units
  of TILE_TEXELS, and persistent programs take UNITS_PER_STEP units at a time, each finding
  its face by binary search in the running sum of units per face and its band by division,
  so work is balanced whatever the faces' sizes and nothing is chunked.
  Pass 1 takes each texel's winner as an integer `atomic_min` of its rank (centre-inside
  first, then the lowest face id) and counts the faces whose open interior holds its centre;
  pass 2 repeats the tests and the winner alone writes the barycentrics, and faces on a texel
  claimed twice are flagged. Integer atomics only, so the output is the same bits every run.
- `_uv_raster_torch` (any device, and the public path off CUDA): each face's texel runs per
  row, from clipping it to the row (and, conservative, to the face's box), then the edge tests
  on those texels alone, each face's terms computed once and each edge's row term once a run.
  `uv_overlaps` there skips the winners and the maps (0.3-0.6 of a call's time on prompt 1's
  captured calls, a 2-core CPU).
- `uv_raster_reference` (numpy, one face at a time over its whole box).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path serves every device
    triton = None

__all__ = ["UVRaster", "uv_overlaps", "uv_raster", "uv_raster_reference"]

# Candidate (face, texel) pairs evaluated at once by the torch path: bounds its memory
# (about 100 bytes a pair) without costing throughput.
CANDIDATES_PER_CHUNK = 8_000_000
# Texels by which the proposed runs (torch) and candidate boxes (Triton) are widened, well
# above float32 rounding at 4096 texels: they only propose candidates, the edge tests decide,
# so slack costs a little, never a missed texel.
SPAN_SLACK = 0.01
# Triton path. Texels of one face's candidates per work unit: 16 holds most of a small face's
# box (about 4 x 4 conservative at 1M faces into 2048²) in one unit with few idle lanes.
TILE_TEXELS = 16
# Triton path. A face's candidate rows in bands of BAND_ROWS, each band as wide as the face
# reaches in it (the triangle clipped to the band's rows, as the torch path's runs): a sliver
# across the texture tests the texels along it, not its whole box.
BAND_ROWS = 4
# Units per program step: 64 x 16 = 1024 texel lanes, 8 per thread of 4 warps.
UNITS_PER_STEP = 64
# Persistent programs per SM: enough resident warps to hide the gathers of the face search.
PROGRAMS_PER_SM = 8
FACE_BLOCK = 256  # faces per program of the per-face setup
TEXEL_BLOCK = 2048  # texels per program of the final write of face ids
# Under the interpreter (CPU tensors) every program and step costs milliseconds of Python
# whatever its size: fewer, larger ones, and a few programs so the stride is still tested.
INTERPRETER_PROGRAMS = 3
INTERPRETER_UNITS_PER_STEP = 256
INTERPRETER_TEXEL_BLOCK = 1 << 16


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
    """uvs: [V, 2] float in [0, 1], faces: [F, 3] int -> the texel grid's faces and weights.

    CUDA tensors go to the Triton kernels, anything else to the torch path: same results.
    """
    _check(uvs, faces, width, height)
    if uvs.device != faces.device:
        raise ValueError(f"uvs and faces must be on one device, got {uvs.device}, {faces.device}")
    if triton is not None and uvs.is_cuda and _fits_triton(len(faces), width, height):
        if faces.dtype not in (torch.int32, torch.int64):
            faces = faces.long()
        return _uv_raster_triton(
            uvs.float().contiguous(), faces.contiguous(), width, height, conservative
        )
    return _uv_raster_torch(uvs.float(), faces.long(), width, height, conservative)


def uv_overlaps(
    uvs: torch.Tensor, faces: torch.Tensor, width: int, height: int, conservative: bool = True
) -> torch.Tensor:
    """[F] bool: `uv_raster(...).overlapping`, the same flags. Off CUDA the texel maps are not
    built (the atlas's fold checks read nothing else)."""
    _check(uvs, faces, width, height)
    if uvs.device != faces.device:
        raise ValueError(f"uvs and faces must be on one device, got {uvs.device}, {faces.device}")
    if triton is not None and uvs.is_cuda and _fits_triton(len(faces), width, height):
        return uv_raster(uvs, faces, width, height, conservative).overlapping
    uvs, faces = uvs.float(), faces.long()
    claims = _Claims()
    for face_ids, texel, inside, bary in _candidates(uvs, faces, width, height, conservative):
        claims.add(face_ids, texel, inside, bary)
    return claims.shared(len(faces), width * height, uvs.device)


class _Claims:
    """The texel centres strictly inside a face (the open interior), gathered chunk by chunk,
    and the faces on a centre so claimed twice or more."""

    def __init__(self) -> None:
        self.texels: list[torch.Tensor] = []
        self.faces: list[torch.Tensor] = []

    def add(
        self, face_ids: torch.Tensor, texel: torch.Tensor, inside: torch.Tensor, bary: torch.Tensor
    ) -> None:
        strictly = torch.nonzero((bary > 0).all(1) & inside).squeeze(1)
        self.texels.append(texel[strictly])
        self.faces.append(face_ids[strictly])

    def shared(self, F: int, texels: int, device: torch.device) -> torch.Tensor:
        """-> [F] bool."""
        overlapping = torch.zeros(F, dtype=torch.bool, device=device)
        if not self.texels:
            return overlapping
        texel = torch.cat(self.texels)
        counts = torch.bincount(texel, minlength=texels)
        overlapping[torch.cat(self.faces)[counts[texel] > 1]] = True
        return overlapping


# Columns of the per-face terms (`_face_terms`): for each edge (opposite corner a, b, c) its
# start point, direction and conservative slack, then the orientation and a live-area flag.
P0X, P0Y, EX, EY, SLACK = range(5)
SIGN, LIVE = 15, 16


def _face_terms(corners: torch.Tensor) -> torch.Tensor:
    """corners [F, 3, 2] texel units -> [F, 17] float32: what the edge tests read of a face."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    sign = torch.where(area2 < 0, -1.0, 1.0)  # make every triangle counter-clockwise
    columns = []
    for p0, p1 in ((b, c), (c, a), (a, b)):  # edge opposite a, b, c: barycentric numerators
        ex, ey = p1[:, 0] - p0[:, 0], p1[:, 1] - p0[:, 1]
        slack = 0.5 * (ex.abs() + ey.abs())  # half the texel's extent along the edge normal
        columns += [p0[:, 0], p0[:, 1], ex, ey, slack]
    columns += [sign, (area2 != 0).float()]
    return torch.stack(columns, 1)


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
    widened by SPAN_SLACK; they only propose texels, and the edge tests decide.
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


def _box_limits(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A conservative texel t meets the face's box [lo, hi] along one axis when t + 1 >= lo
    and t <= hi (its square [t, t + 1]; exact for integers): -> the first and last such t,
    clamped to [-1, n] (an empty range where the box is NaN)."""
    first = (torch.ceil(lo.double()) - 1).clamp(-1, n).nan_to_num(nan=n).long()
    last = torch.floor(hi.double()).clamp(-1, n).nan_to_num(nan=-1).long()
    return first, last


def _candidates(
    uvs: torch.Tensor, faces: torch.Tensor, W: int, H: int, conservative: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per chunk of faces: (face id, texel index, centre inside, barycentrics) of every texel
    each face covers, in face order. Chunks bound the candidates held at once.

    The float32 edge functions are those of the Triton path, op for op: per texel
    sign * (ex * (cy - p0y) - ey * (cx - p0x)), the first product taken once per row run."""
    device = uvs.device
    F = faces.shape[0]
    scale = torch.tensor([W, H], dtype=torch.float32, device=device)
    corners_all = uvs[faces] * scale  # [F, 3, 2] texel units
    box_lo_all, box_hi_all = corners_all.amin(1), corners_all.amax(1)  # [F, 2]
    terms_all = _face_terms(corners_all)
    # Faces per chunk from their boxes' areas: an upper bound of their candidates.
    box = (box_hi_all - box_lo_all + 3).prod(1)
    cumulative = torch.cumsum(box.double(), 0)
    start = 0
    while start < F:
        limit = (float(cumulative[start - 1]) if start else 0.0) + CANDIDATES_PER_CHUNK
        stop = min(max(start + 1, int(torch.searchsorted(cumulative, limit, right=True))), F)
        face, row, first_x, last_x = _spans(corners_all[start:stop], W, H, conservative)
        if conservative:  # the pushed-out edges overshoot near sharp corners: clip to the box
            x_from, x_to = _box_limits(box_lo_all[start:stop, 0], box_hi_all[start:stop, 0], W)
            y_from, y_to = _box_limits(box_lo_all[start:stop, 1], box_hi_all[start:stop, 1], H)
            first_x = torch.maximum(first_x, x_from[face])
            last_x = torch.minimum(last_x, x_to[face])
            off_box = (row < y_from[face]) | (row > y_to[face])
            last_x = torch.where(off_box, first_x - 1, last_x)
        # Per run: the row's half of each edge function, and the terms its texels read.
        terms = terms_all[start:stop][face]  # [R, 17]
        cy = row.float() + 0.5
        counts = (last_x - first_x + 1).clamp(min=0)
        run = torch.repeat_interleave(counts)  # each texel's run
        # x = first_x + the texel's place in its run, from one per-run offset.
        offset = first_x - (torch.cumsum(counts, 0) - counts)
        x = torch.arange(len(run), device=device) + offset[run]
        cx = x.float() + 0.5
        # 1-D gathers (indexing, which runs on every thread; index_select runs on one).
        sign = terms[:, SIGN][run]
        values, touched = [], None
        for k in range(3):
            e = terms[:, 5 * k : 5 * k + 5]
            across = (e[:, EX] * (cy - e[:, P0Y]))[run]
            ey, p0x = e[:, EY][run], e[:, P0X][run]
            value = sign * (across - ey * (cx - p0x))
            values.append(value)
            if conservative:
                meets = value + e[:, SLACK][run] >= 0
                touched = meets if touched is None else touched & meets
        live = terms[:, LIVE].bool()[run]
        inside = (values[0] >= 0) & (values[1] >= 0) & (values[2] >= 0) & live
        keep = torch.nonzero(touched if conservative else inside).squeeze(1)
        raw = [v[keep].clamp(min=0) for v in values]
        total = (raw[0] + raw[1]) + raw[2]  # this order on every device, as in Triton
        some, divisor = total > 0, total.clamp(min=1e-30)
        bary = torch.stack([torch.where(some, r / divisor, 1 / 3) for r in raw], 1)
        run = run[keep]
        texel = row[run] * W + x[keep]
        yield face[run] + start, texel, inside[keep], bary
        start = stop


def _uv_raster_torch(
    uvs: torch.Tensor, faces: torch.Tensor, W: int, H: int, conservative: bool
) -> UVRaster:
    device = uvs.device
    F = faces.shape[0]
    # Winner per texel as one integer: centre-inside first, then the lowest face id.
    best = torch.full((H * W,), 2 * F, dtype=torch.long, device=device)
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    claims = _Claims()
    for face_ids, texel, inside, bary in _candidates(uvs, faces, W, H, conservative):
        rank = torch.where(inside, 0, F) + face_ids
        best.scatter_reduce_(0, texel, rank, reduce="amin")  # integer min: order-free
        claims.add(face_ids, texel, inside, bary)
        chunks.append((texel, rank, bary))
    face_map = torch.full((H * W,), -1, dtype=torch.long, device=device)
    bary_map = torch.zeros(H * W, 3, dtype=torch.float32, device=device)
    for texel, rank, bary in chunks:
        won = torch.nonzero(best[texel] == rank).squeeze(1)
        at = texel[won]
        face_map[at] = rank[won] % F
        bary_map[at] = bary[won]
    overlapping = claims.shared(F, H * W, device)
    return UVRaster(face_map.view(H, W), bary_map.view(H, W, 3), overlapping)


def _fits_triton(F: int, W: int, H: int) -> bool:
    """int32 ranks (up to 2F) and texel indices (up to W * H) in the Triton path."""
    return 2 * F < 2**31 and W * H < 2**31


if triton is not None:

    @triton.jit
    def _least(a, b, c):
        """The least of three, NaN if any is (as torch's amin)."""
        ab = tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)
        return tl.minimum(ab, c, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def _most(a, b, c):
        """The largest of three, NaN if any is (as torch's amax)."""
        ab = tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)
        return tl.maximum(ab, c, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def _edge_reach(px, py, qx, qy, low, high, x_lo, x_hi):
        """x_lo, x_hi widened to the part of edge p -> q between the lines y = low, high."""
        within = (py >= low) & (py <= high)  # p within the band
        x_lo = tl.where(within, tl.minimum(x_lo, px), x_lo)
        x_hi = tl.where(within, tl.maximum(x_hi, px), x_hi)
        dy = qy - py
        safe = tl.where(dy == 0, 1.0, dy)
        t = (low - py) / safe  # where the edge crosses the band's two lines
        crosses = (dy != 0) & (t >= 0) & (t <= 1)
        x = px + t * (qx - px)
        x_lo = tl.where(crosses, tl.minimum(x_lo, x), x_lo)
        x_hi = tl.where(crosses, tl.maximum(x_hi, x), x_hi)
        t = (high - py) / safe
        crosses = (dy != 0) & (t >= 0) & (t <= 1)
        x = px + t * (qx - px)
        x_lo = tl.where(crosses, tl.minimum(x_lo, x), x_lo)
        x_hi = tl.where(crosses, tl.maximum(x_hi, x), x_hi)
        return x_lo, x_hi

    @triton.jit
    def _band_columns(
        ax, ay, bx, by, cx, cy, row, rows, x_first, x_last,
        CONSERVATIVE: tl.constexpr, SLACK: tl.constexpr,
    ):  # fmt: skip
        """Candidate columns [first, last] (float) of the `rows` texel rows from `row`: the
        triangle clipped to their band (conservative: the rows' squares; centre mode: their
        centre lines), widened by SLACK and kept within [x_first, x_last]; first > last where
        it reaches no column. The torch path's `_spans` over several rows at once."""
        if CONSERVATIVE:
            low, high = row - SLACK, row + rows + SLACK
        else:
            low, high = row + 0.5 - SLACK, row + rows - 0.5 + SLACK
        x_lo = tl.full(ax.shape, float("inf"), tl.float32)
        x_hi = -x_lo
        x_lo, x_hi = _edge_reach(ax, ay, bx, by, low, high, x_lo, x_hi)
        x_lo, x_hi = _edge_reach(bx, by, cx, cy, low, high, x_lo, x_hi)
        x_lo, x_hi = _edge_reach(cx, cy, ax, ay, low, high, x_lo, x_hi)
        if CONSERVATIVE:
            first, last = tl.ceil(x_lo - 1.0 - SLACK), tl.floor(x_hi + SLACK)
        else:
            first, last = tl.ceil(x_lo - 0.5 - SLACK), tl.floor(x_hi - 0.5 + SLACK)
        reached = x_lo <= x_hi  # NaN corners compare false: nothing
        first = tl.where(reached, tl.maximum(first, x_first), x_last + 1.0)
        last = tl.where(reached, tl.minimum(last, x_last), x_first - 1.0)
        return first, last

    @triton.jit(do_not_specialize=["F"])  # sizes vary per asset: one compile
    def _faces_kernel(
        uvs_ptr,  # [V, 2] float32
        faces_ptr,  # [F, 3] int32 or int64
        corners_ptr,  # out [F, 6] float32: corners a, b, c in texel units, (x, y) each
        boxes_ptr,  # out [F, 6] int32: first candidate column, first row, columns, rows, and
        # the bands' width and units (every band of a face is laid out as wide as its widest)
        tiles_ptr,  # out [F] int64: units of TILE texels covering the candidate bands
        overlapping_ptr,  # out [F] uint8: cleared here, set by the write pass
        F,
        W,
        H,
        CONSERVATIVE: tl.constexpr,
        SLACK: tl.constexpr,
        TILE: tl.constexpr,
        BAND: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        face = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)  # [BLOCK]
        live = face < F
        a = tl.load(faces_ptr + face * 3, mask=live, other=0).to(tl.int64)
        b = tl.load(faces_ptr + face * 3 + 1, mask=live, other=0).to(tl.int64)
        c = tl.load(faces_ptr + face * 3 + 2, mask=live, other=0).to(tl.int64)
        ax = tl.load(uvs_ptr + a * 2, mask=live, other=0.0) * W
        ay = tl.load(uvs_ptr + a * 2 + 1, mask=live, other=0.0) * H
        bx = tl.load(uvs_ptr + b * 2, mask=live, other=0.0) * W
        by = tl.load(uvs_ptr + b * 2 + 1, mask=live, other=0.0) * H
        cx = tl.load(uvs_ptr + c * 2, mask=live, other=0.0) * W
        cy = tl.load(uvs_ptr + c * 2 + 1, mask=live, other=0.0) * H
        out = corners_ptr + face * 6
        tl.store(out, ax, mask=live)
        tl.store(out + 1, ay, mask=live)
        tl.store(out + 2, bx, mask=live)
        tl.store(out + 3, by, mask=live)
        tl.store(out + 4, cx, mask=live)
        tl.store(out + 5, cy, mask=live)
        # A NaN corner makes the box NaN, as torch's amin does.
        lo_x = _least(ax, bx, cx)
        hi_x = _most(ax, bx, cx)
        lo_y = _least(ay, by, cy)
        hi_y = _most(ay, by, cy)
        # Candidates, a superset the per-texel tests narrow: conservative, texels whose square
        # meets the box; centre mode, texels whose centre lies in it; both widened by SLACK.
        if CONSERVATIVE:
            x0, x1 = tl.ceil(lo_x - 1.0 - SLACK), tl.floor(hi_x + SLACK)
            y0, y1 = tl.ceil(lo_y - 1.0 - SLACK), tl.floor(hi_y + SLACK)
        else:
            x0, x1 = tl.ceil(lo_x - 0.5 - SLACK), tl.floor(hi_x - 0.5 + SLACK)
            y0, y1 = tl.ceil(lo_y - 0.5 - SLACK), tl.floor(hi_y - 0.5 + SLACK)
        # Comparisons with NaN are false: a face with a NaN corner has no candidates.
        some = live & (x0 <= x1) & (y0 <= y1) & (x1 >= 0) & (y1 >= 0)
        some &= (x0 <= W - 1) & (y0 <= H - 1)
        x0, y0 = tl.maximum(x0, 0.0), tl.maximum(y0, 0.0)
        x1, y1 = tl.minimum(x1, W - 1.0), tl.minimum(y1, H - 1.0)
        columns = tl.where(some, x1 - x0 + 1.0, 0.0).to(tl.int32)
        rows = tl.where(some, y1 - y0 + 1.0, 0.0).to(tl.int32)
        # The widest band: every band of the face is laid out this wide (units stay a
        # running sum a face, so the cover kernel finds a unit's band by division).
        bands = (rows + BAND - 1) // BAND
        widest = tl.zeros([BLOCK], tl.int32)
        most = tl.max(bands, 0)
        band = tl.full([], 0, tl.int32)
        while band < most:  # `while`: the interpreter takes no tensor bounds in a range
            row = y0 + band * BAND
            height = tl.minimum(rows - band * BAND, BAND).to(tl.float32)
            first, last = _band_columns(
                ax, ay, bx, by, cx, cy, row, height, x0, x1, CONSERVATIVE, SLACK
            )
            width = tl.where(band < bands, tl.maximum(last - first + 1.0, 0.0), 0.0)
            widest = tl.maximum(widest, width.to(tl.int32))
            band += 1
        tl.store(boxes_ptr + face * 6, tl.where(some, x0, 0.0).to(tl.int32), mask=live)
        tl.store(boxes_ptr + face * 6 + 1, tl.where(some, y0, 0.0).to(tl.int32), mask=live)
        tl.store(boxes_ptr + face * 6 + 2, columns, mask=live)
        tl.store(boxes_ptr + face * 6 + 3, rows, mask=live)
        tl.store(boxes_ptr + face * 6 + 4, widest, mask=live)
        last_rows = rows - (bands - 1) * BAND
        full = (widest * BAND + TILE - 1) // TILE  # units of a full band
        tl.store(boxes_ptr + face * 6 + 5, tl.maximum(full, 1), mask=live)
        tiles = tl.where(bands > 0, (bands - 1) * full + (widest * last_rows + TILE - 1) // TILE, 0)
        tl.store(tiles_ptr + face, tiles.to(tl.int64), mask=live)
        tl.store(overlapping_ptr + face, tl.zeros([BLOCK], tl.uint8), mask=live)

    @triton.jit
    def _edge(px, py, qx, qy, sign, tx, ty):
        """Edge p -> q against texel centres (tx, ty): (value, slack) as in `_cover`."""
        ex, ey = qx - px, qy - py
        value = sign * (ex * (ty - py) - ey * (tx - px))
        slack = 0.5 * (tl.abs(ex) + tl.abs(ey))
        return value, slack

    @triton.jit
    def _weight(value, total):
        """One barycentric as in `_cover`: clamp(min=0) / clamp(total, min=1e-30), else 1/3."""
        raw = tl.where(value < 0, 0.0, value)  # keeps -0.0, as torch's clamp does
        quotient = tl.div_rn(raw, tl.where(total < 1e-30, 1e-30, total))  # IEEE, like torch
        return tl.where(total > 0, quotient, 1.0 / 3.0)

    @triton.jit(do_not_specialize=["F", "search_steps"])  # sizes vary per asset: one compile
    def _cover_kernel(
        corners_ptr,  # [F, 6] float32 from _faces_kernel
        boxes_ptr,  # [F, 6] int32 from _faces_kernel
        tile_end_ptr,  # [F] int64: running sum of units per face (inclusive)
        best_ptr,  # [H * W] int32: lowest rank per texel, 2F where none
        claims_ptr,  # [H * W] int32: faces whose open interior holds the texel centre
        bary_ptr,  # out [H * W, 3] float32 (write pass)
        overlapping_ptr,  # out [F] uint8 (write pass)
        F,
        W,
        search_steps,  # F.bit_length(): halvings of [0, F] down to one face
        CONSERVATIVE: tl.constexpr,
        WRITE: tl.constexpr,  # False: pass 1 (ranks, claims); True: pass 2 (outputs)
        SLACK: tl.constexpr,
        TILE: tl.constexpr,
        BAND: tl.constexpr,
        UNITS: tl.constexpr,
    ):
        total = tl.load(tile_end_ptr + F - 1)  # units in all: int64 scalar
        lane = tl.arange(0, TILE)[None, :]  # [1, TILE]
        base = tl.program_id(0).to(tl.int64) * UNITS
        stride = tl.num_programs(0).to(tl.int64) * UNITS
        # `while`, not `range`: the interpreter cannot take tensor bounds in a range.
        while base < total:
            unit = base + tl.arange(0, UNITS)  # [UNITS] int64
            live = unit < total
            # Owner: the first face whose running sum exceeds the unit (empty faces add 0).
            lo = tl.zeros([UNITS], tl.int32)
            hi = lo + F
            step = tl.full([], 0, tl.int32)
            while step < search_steps:
                open_ = lo < hi
                mid = (lo + hi) // 2
                end = tl.load(tile_end_ptr + mid, mask=open_ & live, other=0)
                right = open_ & (end <= unit)
                lo = tl.where(right, mid + 1, lo)
                hi = tl.where(open_ & ~right, mid, hi)
                step += 1
            face = lo.to(tl.int64)
            first = tl.load(tile_end_ptr + face - 1, mask=live & (face > 0), other=0)
            # Per-face constants: [UNITS] for the band clip, [UNITS, 1] columns for the tests.
            c = corners_ptr + face * 6
            a_x = tl.load(c, mask=live, other=0.0)
            a_y = tl.load(c + 1, mask=live, other=0.0)
            b_x = tl.load(c + 2, mask=live, other=0.0)
            b_y = tl.load(c + 3, mask=live, other=0.0)
            c_x = tl.load(c + 4, mask=live, other=0.0)
            c_y = tl.load(c + 5, mask=live, other=0.0)
            ax, ay, bx, by = a_x[:, None], a_y[:, None], b_x[:, None], b_y[:, None]
            cx, cy = c_x[:, None], c_y[:, None]
            box = boxes_ptr + face * 6
            x0 = tl.load(box, mask=live, other=0)
            y0 = tl.load(box + 1, mask=live, other=0)
            columns = tl.load(box + 2, mask=live, other=1)
            rows = tl.load(box + 3, mask=live, other=0)
            widest = tl.load(box + 4, mask=live, other=1)
            # This unit's band, and its columns there (as `_faces_kernel` found them).
            # (Units per band are read, not derived here: Triton 3.6's layout pass failed on
            # the division in this loop.)
            full = tl.load(box + 5, mask=live, other=1)  # units of a full band (at least 1)
            k = (unit - first).to(tl.int32)  # [UNITS] the unit within its face
            band = tl.minimum(k // full, (rows + BAND - 1) // BAND - 1)
            height = tl.minimum(rows - band * BAND, BAND)
            band_first, band_last = _band_columns(
                a_x, a_y, b_x, b_y, c_x, c_y,
                (y0 + band * BAND).to(tl.float32), height.to(tl.float32),
                x0.to(tl.float32), (x0 + columns - 1).to(tl.float32), CONSERVATIVE, SLACK,
            )  # fmt: skip
            reached = live & (band_first <= band_last)
            # Texels of this unit: row-major positions in its band, `widest` to a row.
            at = (k - band * full)[:, None] * TILE + lane  # [UNITS, TILE]
            dy = at // tl.maximum(widest, 1)[:, None]
            dx = at - dy * widest[:, None]
            x = tl.where(reached, band_first, 0.0).to(tl.int32)[:, None] + dx
            valid = reached[:, None] & (at < (widest * height)[:, None])
            valid &= x <= tl.where(reached, band_last, 0.0).to(tl.int32)[:, None]
            y = (y0 + band * BAND)[:, None] + dy
            tx = x.to(tl.float32) + 0.5
            ty = y.to(tl.float32) + 0.5
            # `_cover`, op for op.
            area2 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            sign = tl.where(area2 < 0, -1.0, 1.0)
            v0, s0 = _edge(bx, by, cx, cy, sign, tx, ty)
            v1, s1 = _edge(cx, cy, ax, ay, sign, tx, ty)
            v2, s2 = _edge(ax, ay, bx, by, sign, tx, ty)
            inside = (v0 >= 0) & (v1 >= 0) & (v2 >= 0) & (area2 != 0)
            if CONSERVATIVE:
                touched = (v0 + s0 >= 0) & (v1 + s1 >= 0) & (v2 + s2 >= 0)
                # The pushed-out edges overshoot near sharp corners: clip to the box.
                lo_x = tl.minimum(tl.minimum(ax, bx), cx)
                lo_y = tl.minimum(tl.minimum(ay, by), cy)
                hi_x = tl.maximum(tl.maximum(ax, bx), cx)
                hi_y = tl.maximum(tl.maximum(ay, by), cy)
                touched &= (tx + 0.5 >= lo_x) & (ty + 0.5 >= lo_y)
                touched &= (tx - 0.5 <= hi_x) & (ty - 0.5 <= hi_y)
            else:
                touched = inside
            touched &= valid
            r0 = tl.where(v0 < 0, 0.0, v0)
            r1 = tl.where(v1 < 0, 0.0, v1)
            r2 = tl.where(v2 < 0, 0.0, v2)
            total_weight = (r0 + r1) + r2  # torch's sum over 3, in order
            w0 = _weight(v0, total_weight)
            w1 = _weight(v1, total_weight)
            w2 = _weight(v2, total_weight)
            strictly = touched & inside & (w0 > 0) & (w1 > 0) & (w2 > 0)
            rank = tl.where(inside, 0, F) + face.to(tl.int32)[:, None]  # [UNITS, TILE] int32
            texel = y * W + x  # int32: W * H < 2**31
            if WRITE:
                best = tl.load(best_ptr + texel, mask=touched, other=-1)
                won = touched & (best == rank)  # one writer per texel
                out = bary_ptr + texel.to(tl.int64) * 3
                tl.store(out, w0, mask=won)
                tl.store(out + 1, w1, mask=won)
                tl.store(out + 2, w2, mask=won)
                claims = tl.load(claims_ptr + texel, mask=strictly, other=0)
                shared = tl.max((strictly & (claims > 1)).to(tl.int32), axis=1)  # [UNITS]
                # Several units of a face may store the same 1: equal values, no race.
                flag = tl.full([UNITS], 1, tl.uint8)
                tl.store(overlapping_ptr + face, flag, mask=live & (shared > 0))
            else:
                tl.atomic_min(best_ptr + texel, rank, mask=touched, sem="relaxed")
                tl.atomic_add(claims_ptr + texel, 1, mask=strictly, sem="relaxed")
            base += stride

    @triton.jit(do_not_specialize=["F"])  # sizes vary per asset: one compile
    def _finish_kernel(
        best_ptr,  # [H * W] int32
        face_ids_ptr,  # out [H * W] int64
        bary_ptr,  # out [H * W, 3] float32: zeroed where empty (pass 2 wrote the rest)
        F,
        texels,
        BLOCK: tl.constexpr,
    ):
        texel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # int32: texels < 2**31
        live = texel < texels
        best = tl.load(best_ptr + texel, mask=live, other=0)
        empty = best >= 2 * F
        face = tl.where(empty, -1, tl.where(best >= F, best - F, best))
        tl.store(face_ids_ptr + texel, face.to(tl.int64), mask=live)
        out = bary_ptr + texel.to(tl.int64) * 3
        zero = tl.zeros([BLOCK], tl.float32)
        tl.store(out, zero, mask=live & empty)
        tl.store(out + 1, zero, mask=live & empty)
        tl.store(out + 2, zero, mask=live & empty)


def _uv_raster_triton(
    uvs: torch.Tensor,  # [V, 2] float32
    faces: torch.Tensor,  # [F, 3] int32 or int64
    W: int,
    H: int,
    conservative: bool,
    out: UVRaster | None = None,
) -> UVRaster:
    """The Triton path (see the module docstring). Every element of the outputs is written
    by a kernel, so `out`, if given (contiguous, of UVRaster's shapes), may hold anything."""
    if triton is None:
        raise RuntimeError("the Triton path needs triton installed")
    F = faces.shape[0]
    if not _fits_triton(F, W, H):
        raise ValueError(f"{F} faces into {W}x{H} exceed the int32 ranks and texel indices")
    device = uvs.device
    cuda = device.type == "cuda"
    uvs, faces = uvs.float().contiguous(), faces.contiguous()
    if out is None:
        out = UVRaster(
            torch.empty((H, W), dtype=torch.int64, device=device),
            torch.empty((H, W, 3), dtype=torch.float32, device=device),
            torch.empty(F, dtype=torch.bool, device=device),
        )
    overlapping = out.overlapping.view(torch.uint8)  # [F]: Triton stores bytes
    best = torch.full((H * W,), 2 * F, dtype=torch.int32, device=device)
    # Triton launches on the current CUDA device: make it the tensors' one.
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        if F:
            # 1. Per face: corners in texels, candidate box, units; overlap flags cleared.
            corners = torch.empty(F, 6, dtype=torch.float32, device=device)
            boxes = torch.empty(F, 6, dtype=torch.int32, device=device)
            tiles = torch.empty(F, dtype=torch.int64, device=device)
            _faces_kernel[(triton.cdiv(F, FACE_BLOCK),)](
                uvs, faces, corners, boxes, tiles, overlapping, F, W, H,
                CONSERVATIVE=conservative, SLACK=SPAN_SLACK, TILE=TILE_TEXELS, BAND=BAND_ROWS,
                BLOCK=FACE_BLOCK,
                enable_fp_fusion=False,
            )  # fmt: skip
            # 2. Where each face's units start: the work list, with no host sync.
            tile_end = torch.cumsum(tiles, 0)  # [F] int64
            # 3. Pass 1, ranks and claims; 4. pass 2, barycentrics and overlap flags.
            claims = torch.zeros(H * W, dtype=torch.int32, device=device)
            if cuda:
                sms = torch.cuda.get_device_properties(device).multi_processor_count
                programs, units = sms * PROGRAMS_PER_SM, UNITS_PER_STEP
            else:
                programs, units = INTERPRETER_PROGRAMS, INTERPRETER_UNITS_PER_STEP
            for write in (False, True):
                _cover_kernel[(programs,)](
                    corners, boxes, tile_end, best, claims, out.barycentrics, overlapping,
                    F, W, F.bit_length(),
                    CONSERVATIVE=conservative, WRITE=write, SLACK=SPAN_SLACK, TILE=TILE_TEXELS,
                    BAND=BAND_ROWS, UNITS=units,
                    enable_fp_fusion=False,  # no FMA: the same float32 rounding as `_cover`
                )  # fmt: skip
        # 5. Face ids from the ranks; zero weights where empty.
        block = TEXEL_BLOCK if cuda else INTERPRETER_TEXEL_BLOCK
        _finish_kernel[(triton.cdiv(H * W, block),)](
            best, out.face_ids, out.barycentrics, F, H * W, BLOCK=block
        )
    return out


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
