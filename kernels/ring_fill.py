"""fill_ring: the texels just outside the coverage set from their nearest covered neighbours.

`fill_ring(image, covered, ring, charts)`: image [H, W, C], covered [H, W] bool, ring [H, W]
bool (uncovered texels, in the bake those with a covered texel among their 8 neighbours) -> a
copy with each ring texel set from its nearest covered neighbours: the four edge neighbours
(distance 1) if any is covered, else the four diagonal ones (sqrt 2); the nearest covered
texels are always among them, as any other is at least 2 texels away. Where several are
nearest: with `charts` = (face_ids [H, W] of the covered texels, chart [F] of each face), the
mean of those in the chart of the first of them in RING_TAPS order, summed in that order (face
ids of covered texels in 0..F-1; a negative one reads as face 0, no index leaves the chart
table); without, the first alone. A ring texel with no covered neighbour keeps its value, as
does every texel outside the ring. pipeline/texture_fill.py fills the ring bilinear sampling
reads this way, so a sample at a chart's edge reads that chart's colours only.

Paths, chosen by device:
- Triton (float32 CUDA images; CPU ones under TRITON_INTERPRET=1 through `_ring_triton`): one
  lane per texel of a tile, one launch. Each ring texel reads its 8 neighbours' coverage, face
  and chart; the mean is the same float32 sum in RING_TAPS order and one IEEE division.
- `_ring_torch` (any device, the CPU path): the ring texels' taps as flat indices; the
  charts gathered for the tied texels only.
- `fill_ring_reference` (numpy, texel by texel): for small images.
The three give the same bits: integer choices, then the same additions (in the image's dtype)
in one order and a correctly rounded division. No atomics.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path serves every device
    triton = None

__all__ = ["RING_TAPS", "fill_ring", "fill_ring_reference"]

# A ring texel's candidate sources, nearest first: the four edge neighbours (distance 1),
# then the four diagonal ones (sqrt 2), as (dy, dx).
RING_TAPS = ((-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))
# Triton tile: 8 rows x 128 columns, 4 warps, as kernels/dilate.py's flood (untimed against
# alternatives).
BLOCK_Y, BLOCK_X, NUM_WARPS = 8, 128, 4

Charts = tuple[torch.Tensor, torch.Tensor]


def _check(
    image: torch.Tensor, covered: torch.Tensor, ring: torch.Tensor, charts: Charts | None
) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got {tuple(image.shape)}")
    shape = tuple(image.shape[:2])
    named = [("covered", covered), ("ring", ring)]
    if charts is not None:
        named.append(("face_ids", charts[0]))
    for name, tensor in named:
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be [H, W] = {shape}, got {tuple(tensor.shape)}")
    tensors = [tensor for _, tensor in named] + ([] if charts is None else [charts[1]])
    if any(tensor.device != image.device for tensor in tensors):
        raise ValueError("image, masks and charts must be on one device")


def fill_ring(
    image: torch.Tensor, covered: torch.Tensor, ring: torch.Tensor, charts: Charts | None = None
) -> torch.Tensor:
    """See the module docstring: a contiguous [H, W, C] copy with the ring set. Triton for
    float32 CUDA images, torch for every other."""
    _check(image, covered, ring, charts)
    if image.is_cuda and triton is not None and image.dtype in _TRITON_DTYPES:
        return _ring_triton(image, covered, ring, charts)
    return _ring_torch(image, covered, ring, charts)


def _ring_torch(
    image: torch.Tensor, covered: torch.Tensor, ring: torch.Tensor, charts: Charts | None
) -> torch.Tensor:
    H, W, C = image.shape
    y, x = torch.nonzero(ring & ~covered, as_tuple=True)
    flat_covered = covered.reshape(-1)
    taps = []  # per tap: the neighbour's flat index and whether it is a covered texel
    for dy, dx in RING_TAPS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
        neighbour = ny.clamp(0, H - 1) * W + nx.clamp(0, W - 1)
        taps.append((neighbour, inside & flat_covered[neighbour]))
    source = torch.full_like(y, -1)
    for neighbour, ok in reversed(taps):  # an earlier tap overwrites a later one
        source = torch.where(ok, neighbour, source)
    found = source >= 0
    if not bool(found.all()):  # ring texels with no covered neighbour keep their value
        y, x, source = y[found], x[found], source[found]
        taps = [(neighbour[found], ok[found]) for neighbour, ok in taps]
    flat = image.reshape(H * W, C)
    out = flat.clone()  # any strides in, a contiguous image out
    out[y * W + x] = flat[source]
    if charts is None:
        return out.view(H, W, C)
    # Ties (more than one covered texel at the nearest distance) take their chart's mean.
    edge = taps[0][1] | taps[1][1] | taps[2][1] | taps[3][1]  # the nearest are edge taps
    near = [ok & (edge if k < 4 else ~edge) for k, (_, ok) in enumerate(taps)]
    tied = torch.nonzero(torch.stack(near).sum(0) > 1).squeeze(1)
    face_ids, chart_of_face = charts
    flat_faces = face_ids.reshape(-1)
    own = chart_of_face[flat_faces[source[tied]].clamp(min=0)]
    total = torch.zeros(len(tied), C, dtype=image.dtype, device=image.device)
    count = torch.zeros(len(tied), dtype=image.dtype, device=image.device)
    for (neighbour, _), close in zip(taps, near, strict=True):
        at = neighbour[tied]
        use = close[tied] & (chart_of_face[flat_faces[at].clamp(min=0)] == own)
        total += torch.where(use[:, None], flat[at], 0)
        count += use.to(image.dtype)
    out[y[tied] * W + x[tied]] = total / count[:, None]
    return out.view(H, W, C)


def fill_ring_reference(
    image: np.ndarray,
    covered: np.ndarray,
    ring: np.ndarray,
    charts: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """numpy twin, texel by texel (the module docstring's rule, in the image's dtype)."""
    H, W, _ = image.shape
    out = image.copy()
    for y, x in np.argwhere(ring & ~covered):
        taps = [(y + dy, x + dx) for dy, dx in RING_TAPS]
        ok = [0 <= ty < H and 0 <= tx < W and bool(covered[ty, tx]) for ty, tx in taps]
        near = [p for p, o in zip(taps[:4], ok[:4], strict=True) if o] or [
            p for p, o in zip(taps[4:], ok[4:], strict=True) if o
        ]
        if not near:
            continue
        if charts is None or len(near) == 1:
            out[y, x] = image[near[0]]
            continue
        face_ids, chart_of_face = charts
        own = chart_of_face[max(face_ids[near[0]], 0)]
        total = np.zeros_like(image[y, x])
        count = 0
        for p in near:
            if chart_of_face[max(face_ids[p], 0)] == own:
                total = total + image[p]  # in the image's dtype, tap by tap
                count += 1
        out[y, x] = total / image.dtype.type(count)
    return out


# float32 only (the bake's): sums of bfloats would differ by the rounding of torch's CPU path,
# which adds in float32 and then rounds, and Triton's correctly rounded division is float32's.
_TRITON_DTYPES = {torch.float32}

if triton is not None:

    @triton.jit
    def _tap(covered_ptr, ys, xs, H, W, active, DY: tl.constexpr, DX: tl.constexpr):
        """The neighbour (ys + DY, xs + DX): (whether it is a covered texel, its flat index)."""
        ty = ys + DY
        tx = xs + DX
        ok = active & (ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)
        index = ty * W + tx
        hit = tl.load(covered_ptr + index, mask=ok, other=0) != 0
        return ok & hit, index

    @triton.jit
    def _vote(total, count, use, image_ptr, index, c, C: tl.constexpr):
        """Add the tap's channel c where `use` (a zero elsewhere, as the torch path adds)."""
        value = tl.load(image_ptr + index.to(tl.int64) * C + c, mask=use, other=0.0)
        return total + tl.where(use, value, 0.0).to(total.dtype), count + use.to(tl.int32)

    @triton.jit
    def _same_chart(face_ptr, chart_ptr, index, near, own):
        face = tl.maximum(tl.load(face_ptr + index, mask=near, other=0), 0)
        return near & (tl.load(chart_ptr + face, mask=near, other=-1) == own)

    @triton.jit
    def _ring_fill_kernel(
        image_ptr,  # [H, W, C] contiguous
        covered_ptr,  # [H, W] uint8
        ring_ptr,  # [H, W] uint8
        face_ptr,  # [H, W] int64 face ids (HAS_CHARTS), else unused
        chart_ptr,  # [F] int64 chart of each face (HAS_CHARTS), else unused
        out_ptr,  # [H, W, C] contiguous, the image's dtype
        H,
        W,
        C: tl.constexpr,
        HAS_CHARTS: tl.constexpr,
        BLOCK_Y: tl.constexpr,
        BLOCK_X: tl.constexpr,
    ):
        """One lane per texel of a BLOCK_Y x BLOCK_X tile."""
        ys = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)[:, None]  # [BY, 1]
        xs = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)[None, :]  # [1, BX]
        inside = (ys < H) & (xs < W)
        own = ys * W + xs  # [BY, BX] int32 (H * W < 2^31: the wrapper checks)
        active = inside & (tl.load(ring_ptr + own, mask=inside, other=0) != 0)
        active = active & (tl.load(covered_ptr + own, mask=inside, other=1) == 0)
        # RING_TAPS, in order.
        ok0, i0 = _tap(covered_ptr, ys, xs, H, W, active, -1, 0)
        ok1, i1 = _tap(covered_ptr, ys, xs, H, W, active, 0, -1)
        ok2, i2 = _tap(covered_ptr, ys, xs, H, W, active, 0, 1)
        ok3, i3 = _tap(covered_ptr, ys, xs, H, W, active, 1, 0)
        ok4, i4 = _tap(covered_ptr, ys, xs, H, W, active, -1, -1)
        ok5, i5 = _tap(covered_ptr, ys, xs, H, W, active, -1, 1)
        ok6, i6 = _tap(covered_ptr, ys, xs, H, W, active, 1, -1)
        ok7, i7 = _tap(covered_ptr, ys, xs, H, W, active, 1, 1)
        edge = ok0 | ok1 | ok2 | ok3
        n4, n5, n6, n7 = ok4 & ~edge, ok5 & ~edge, ok6 & ~edge, ok7 & ~edge
        first = tl.where(ok0, i0, tl.where(ok1, i1, tl.where(ok2, i2, tl.where(ok3, i3, 0))))
        first = tl.where(edge, first, tl.where(n4, i4, tl.where(n5, i5, tl.where(n6, i6, i7))))
        found = edge | n4 | n5 | n6 | n7
        if HAS_CHARTS:
            first_face = tl.maximum(tl.load(face_ptr + first, mask=found, other=0), 0)
            chart = tl.load(chart_ptr + first_face, mask=found, other=-1)
            u0 = _same_chart(face_ptr, chart_ptr, i0, ok0, chart)
            u1 = _same_chart(face_ptr, chart_ptr, i1, ok1, chart)
            u2 = _same_chart(face_ptr, chart_ptr, i2, ok2, chart)
            u3 = _same_chart(face_ptr, chart_ptr, i3, ok3, chart)
            u4 = _same_chart(face_ptr, chart_ptr, i4, n4, chart)
            u5 = _same_chart(face_ptr, chart_ptr, i5, n5, chart)
            u6 = _same_chart(face_ptr, chart_ptr, i6, n6, chart)
            u7 = _same_chart(face_ptr, chart_ptr, i7, n7, chart)
        own64 = own.to(tl.int64)
        source = tl.where(found, first, own).to(tl.int64)
        for c in tl.static_range(C):
            value = tl.load(image_ptr + source * C + c, mask=inside)
            if HAS_CHARTS:
                total = tl.zeros([BLOCK_Y, BLOCK_X], dtype=value.dtype)
                count = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.int32)
                total, count = _vote(total, count, u0, image_ptr, i0, c, C)
                total, count = _vote(total, count, u1, image_ptr, i1, c, C)
                total, count = _vote(total, count, u2, image_ptr, i2, c, C)
                total, count = _vote(total, count, u3, image_ptr, i3, c, C)
                total, count = _vote(total, count, u4, image_ptr, i4, c, C)
                total, count = _vote(total, count, u5, image_ptr, i5, c, C)
                total, count = _vote(total, count, u6, image_ptr, i6, c, C)
                total, count = _vote(total, count, u7, image_ptr, i7, c, C)
                mean = tl.math.div_rn(total, tl.maximum(count, 1).to(total.dtype))
                value = tl.where(count > 1, mean, value)
            tl.store(out_ptr + own64 * C + c, value, mask=inside)


def _ring_triton(
    image: torch.Tensor,
    covered: torch.Tensor,
    ring: torch.Tensor,
    charts: Charts | None,
    block: tuple[int, int] = (BLOCK_Y, BLOCK_X),
) -> torch.Tensor:
    """`fill_ring` in Triton (CUDA, or CPU under TRITON_INTERPRET=1): the same bits as the
    torch path. block: (rows, columns) of a tile, powers of two."""
    H, W, C = image.shape
    if triton is None or H * W >= 2**31:
        raise ValueError(f"the Triton path needs triton and fewer than 2^31 texels, {H}x{W}")
    source = image.contiguous()
    out = torch.empty_like(source)
    if out.numel() == 0:
        return out
    covered_u8 = covered.contiguous().view(torch.uint8)
    ring_u8 = ring.contiguous().view(torch.uint8)
    if charts is None:
        faces = chart_of_face = covered_u8  # unused
    else:
        faces = charts[0].contiguous().long()
        chart_of_face = charts[1].contiguous().long()
    grid = (triton.cdiv(W, block[1]), triton.cdiv(H, block[0]))
    _ring_fill_kernel[grid](
        source, covered_u8, ring_u8, faces, chart_of_face, out, H, W,
        C=C, HAS_CHARTS=charts is not None, BLOCK_Y=block[0], BLOCK_X=block[1],
        num_warps=NUM_WARPS,
    )  # fmt: skip
    return out
