"""dilate: give every empty texel the value of its nearest filled texel.

`dilate(image, filled, keep)` -> image with every texel set: the filled ones unchanged, the
others copied from the nearest filled texel, except those in the optional `keep` mask, which
hold their own value. Filling gutters and empty space with the nearest chart colour keeps
bilinear sampling across UV seams from reading background (the base miner's cv2.inpaint does
this at seconds per texture).

Paths (`method`):
- "triton" (CUDA by default; CPU under TRITON_INTERPRET=1): jump flooding (Rong and Tan 2006),
  one kernel launch per pass, one lane per texel. The first pass builds the seeds from `filled`
  itself, the last one writes the flat index or gathers the image directly. Bit-identical to
  the torch twin below.
- "jump_flood" (torch, any device): log2(side) passes of 9 taps plus one pass at step 1
  (JFA+1), which fixes nearly all of plain JFA's rare misses. Each texel keeps the strictly
  nearest of its own seed and 8 taps in a fixed order (ties: the earlier candidate, own seed
  first), with exact integer squared distances, so the result is deterministic. Near-exact:
  see the tests' tolerance.
- "edt": scipy's exact Euclidean distance transform with nearest-feature indices, on the host.
- "auto": Triton on CUDA when triton is installed and the seeds fit its int32 encoding (sides
  up to about 20k texels), torch jump flooding on CUDA otherwise, the exact transform
  elsewhere.
`dilate_reference` is a brute-force exact nearest (small images; ties to the lowest index).
Which of several equidistant sources a texel copies differs between jump flooding (Triton and
torch agree exactly), the exact transform and the reference; the distance to it does not (up
to JFA's rare near-misses).
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch and scipy paths still import
    triton = None

__all__ = ["dilate", "dilate_reference", "nearest_filled"]

METHODS = ("auto", "triton", "jump_flood", "edt")
_TAPS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
# Triton tile: 8 rows x 128 columns, 4 warps (8 texels a lane); a row of 128 int32 seeds is
# one 512-byte coalesced segment. Chosen for H100, untimed against alternatives.
BLOCK_Y, BLOCK_X, NUM_WARPS = 8, 128, 4
_MAX_BLOCK = 1024  # the longest tile side _flood_triton takes
# Image dtypes the Triton gather handles (bool is viewed as uint8).
_TRITON_DTYPES = {
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool,
}  # fmt: skip


def _check(image: torch.Tensor | np.ndarray, filled: torch.Tensor | np.ndarray) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got {tuple(image.shape)}")
    if tuple(filled.shape) != tuple(image.shape[:2]):
        raise ValueError(
            f"filled must be [H, W] = {tuple(image.shape[:2])}, got {tuple(filled.shape)}"
        )


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "triton" and triton is None:
        raise ValueError("method 'triton' needs the triton package")


def _pick(method: str, filled: torch.Tensor) -> str:
    """The concrete path "auto" stands for on this tensor."""
    if method != "auto":
        return method
    if filled.device.type != "cuda":
        return "edt"
    return "triton" if triton is not None and _packing(*filled.shape) else "jump_flood"


def nearest_filled(filled: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """filled: [H, W] bool -> [H, W] int64 flat index of the nearest filled texel (-1: none).

    method: "triton", "jump_flood", "edt" or "auto" (see the module docstring). Equidistant
    sources are chosen differently by jump flooding and the exact transform.
    """
    _check_method(method)
    if filled.ndim != 2:
        raise ValueError(f"filled must be [H, W], got {tuple(filled.shape)}")
    filled = filled.bool()
    method = _pick(method, filled)
    if method == "triton" and filled.numel() > 0:
        return _flood_triton(filled)
    if method == "jump_flood":
        return _jump_flood(filled)
    if filled.numel() == 0 or not bool(filled.any()):
        return torch.full(filled.shape, -1, dtype=torch.long, device=filled.device)
    from scipy.ndimage import distance_transform_edt

    indices = distance_transform_edt(
        ~filled.cpu().numpy(), return_distances=False, return_indices=True
    )
    flat = indices[0].astype(np.int64) * filled.shape[1] + indices[1]
    return torch.from_numpy(flat).to(filled.device)


def _jump_flood(filled: torch.Tensor) -> torch.Tensor:
    """filled: [H, W] bool -> [H, W] int64 flat seed index (-1: none), JFA+1 in torch."""
    H, W = filled.shape
    device = filled.device
    ys, xs = torch.meshgrid(
        torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij"
    )
    seed = torch.where(filled, ys * W + xs, torch.full_like(ys, -1))  # [H, W] int64
    # Exact int64 squared distances: at 4096^2 they reach 2 * 4095^2, past float32's integers.
    far = H * H + W * W + 1
    for step in [*_steps(H, W), 1]:
        best_seed = seed
        sy, sx = torch.div(seed, W, rounding_mode="floor"), seed % W
        best_dist = torch.where(seed >= 0, (sy - ys) ** 2 + (sx - xs) ** 2, far)
        for dy, dx in _TAPS:
            oy, ox = dy * step, dx * step
            if (dy == 0 and dx == 0) or abs(oy) >= H or abs(ox) >= W:
                continue
            shifted = torch.full_like(seed, -1)
            dst_y = slice(max(0, -oy), H - max(0, oy))
            dst_x = slice(max(0, -ox), W - max(0, ox))
            src_y = slice(max(0, oy), H - max(0, -oy))
            src_x = slice(max(0, ox), W - max(0, -ox))
            shifted[dst_y, dst_x] = seed[src_y, src_x]
            cy, cx = torch.div(shifted, W, rounding_mode="floor"), shifted % W
            dist = torch.where(shifted >= 0, (cy - ys) ** 2 + (cx - xs) ** 2, far)
            better = dist < best_dist
            best_seed = torch.where(better, shifted, best_seed)
            best_dist = torch.where(better, dist, best_dist)
        seed = best_seed
    return seed


def _steps(H: int, W: int) -> list[int]:
    """Jump lengths: the largest power of two below the longer side, halving down to 1."""
    step = 1 << max(0, (max(H, W) - 1).bit_length() - 1)
    return [1 << k for k in range(step.bit_length() - 1, -1, -1)]


def _packing(H: int, W: int) -> tuple[int, int, bool] | None:
    """The Triton seed encoding for an H x W image, or None when it does not fit in int32.

    A seed (y, x) is stored as (y << shift) | x, so a lane unpacks it with a shift and a mask
    instead of dividing by W. "No seed" is the sentinel (far_y, 0), farther from every texel
    than any real seed, so it needs no test of its own. Returns (shift, sentinel, wide): wide
    when squared distances need int64. The margin of _MAX_BLOCK covers the lanes of tiles that
    overhang the image, so no int32 expression overflows even there.
    """
    shift = max(0, W - 1).bit_length()
    far_y = 2 * H + W + _MAX_BLOCK
    if far_y << shift >= 2**31:
        return None
    return shift, far_y << shift, far_y * far_y + (W + _MAX_BLOCK) ** 2 >= 2**31


if triton is not None:

    @triton.jit
    def _candidate(
        seeds_ptr, row, ty, tx, ok, ys, xs, shift, sentinel, FIRST: tl.constexpr, WIDE: tl.constexpr
    ):
        """The seed at (ty, tx) ([BY, 1] and [1, BX]; row = ty * W; the sentinel where not
        ok) and its squared distance from (ys, xs): ([BY, BX] int32, int32 | int64)."""
        if FIRST:
            hit = tl.load(seeds_ptr + row + tx, mask=ok, other=0)
            cand = tl.where(hit != 0, (ty << shift) | tx, sentinel)
        else:
            cand = tl.load(seeds_ptr + row + tx, mask=ok, other=sentinel)
        dy = (cand >> shift) - ys
        dx = (cand & ((1 << shift) - 1)) - xs
        if WIDE:
            dy = dy.to(tl.int64)
            dx = dx.to(tl.int64)
        return cand, dy * dy + dx * dx

    @triton.jit
    def _flood_pass_kernel(
        seeds_ptr,  # [H, W] int32 packed seeds, or uint8 filled when FIRST
        out_ptr,  # [H, W] int32 packed seeds; LAST: [H, W] int64 flat index or [H, W, C] image
        image_ptr,  # [H, W, C] image (LAST with C > 0), else unused
        keep_ptr,  # [H, W] uint8 texels that hold their own value (HAS_KEEP), else unused
        H,
        W,
        step,
        shift,
        sentinel,
        FIRST: tl.constexpr,
        LAST: tl.constexpr,
        C: tl.constexpr,  # LAST only: 0 writes the flat index, > 0 gathers C channels
        HAS_KEEP: tl.constexpr,
        WIDE: tl.constexpr,  # int64 squared distances
        BLOCK_Y: tl.constexpr,
        BLOCK_X: tl.constexpr,
    ):
        """One jump-flood pass over a BLOCK_Y x BLOCK_X tile, one lane per texel."""
        ys = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)[:, None]  # [BY, 1] int32
        xs = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)[None, :]  # [1, BX] int32
        inside = (ys < H) & (xs < W)  # [BY, BX]
        own = ys * W + xs  # [BY, BX] int32 (H * W < 2^31: _packing checks it)
        # Own seed first, then the 8 taps in _TAPS order; only a strictly nearer one replaces.
        best, best_d = _candidate(
            seeds_ptr, ys * W, ys, xs, inside, ys, xs, shift, sentinel, FIRST, WIDE
        )
        for i in tl.static_range(3):
            ty = ys + (i - 1) * step  # [BY, 1]
            row_ok = (ty >= 0) & (ty < H)
            for j in tl.static_range(3):
                if i != 1 or j != 1:
                    tx = xs + (j - 1) * step  # [1, BX]
                    ok = row_ok & (tx >= 0) & (tx < W)  # [BY, BX]
                    cand, d = _candidate(
                        seeds_ptr, ty * W, ty, tx, ok, ys, xs, shift, sentinel, FIRST, WIDE
                    )
                    better = d < best_d
                    best = tl.where(better, cand, best)
                    best_d = tl.where(better, d, best_d)
        if not LAST:
            tl.store(out_ptr + own, best, mask=inside)
        else:
            found = best != sentinel
            low = (1 << shift) - 1
            source = (best >> shift).to(tl.int64) * W + (best & low)  # [BY, BX] int64
            if C == 0:
                tl.store(out_ptr + own, tl.where(found, source, -1), mask=inside)
            else:
                if HAS_KEEP:
                    found = found & (tl.load(keep_ptr + own, mask=inside, other=0) == 0)
                source = tl.where(found, source, own.to(tl.int64))
                for c in tl.static_range(C):
                    value = tl.load(image_ptr + source * C + c, mask=inside)
                    tl.store(out_ptr + own.to(tl.int64) * C + c, value, mask=inside)


def _flood_triton(
    filled: torch.Tensor,
    image: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    block: tuple[int, int] = (BLOCK_Y, BLOCK_X),
) -> torch.Tensor:
    """Jump flooding in Triton, bit-identical to `_jump_flood` (CUDA, or CPU under
    TRITON_INTERPRET=1; no validation beyond the encoding's size limit).

    filled: [H, W] bool. Without `image`: -> [H, W] int64 flat index of the chosen seed (-1:
    none). With image [H, W, C]: -> [H, W, C] same dtype, each texel copied from its seed,
    except where there is none or keep ([H, W] bool) is set: there its own value.
    out: the result tensor to write (contiguous; the tests pre-fill it), else a new one.
    block: (rows, columns) of a tile, powers of two up to _MAX_BLOCK (the interpreter runs
    fewer, larger tiles faster).
    """
    H, W = filled.shape
    packing = _packing(H, W)
    if triton is None or packing is None:
        raise ValueError(f"the Triton path needs triton and an int32 seed encoding, {H}x{W}")
    if max(block) > _MAX_BLOCK:
        raise ValueError(f"tile sides are at most {_MAX_BLOCK}, got {block}")
    shift, sentinel, wide = packing
    device = filled.device
    seeds = filled.contiguous().view(torch.uint8)  # [H, W] uint8, read by the first pass
    as_bool = image is not None and image.dtype == torch.bool
    if image is None:
        out = torch.empty(H, W, dtype=torch.long, device=device) if out is None else out
        channels, source_image = 0, out
    else:
        source_image = image.contiguous().view(torch.uint8) if as_bool else image.contiguous()
        out = torch.empty_like(source_image) if out is None else out.view(source_image.dtype)
        channels = image.shape[2]
    keep_u8 = seeds if keep is None else keep.contiguous().view(torch.uint8)
    buffers = [torch.empty(H, W, dtype=torch.int32, device=device) for _ in range(2)]
    grid = (triton.cdiv(W, block[1]), triton.cdiv(H, block[0]))
    steps = [*_steps(H, W), 1]
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        target = out if last else buffers[i % 2]
        _flood_pass_kernel[grid](
            seeds, target, source_image, keep_u8, H, W, step, shift, sentinel,
            FIRST=i == 0, LAST=last, C=channels, HAS_KEEP=keep is not None, WIDE=wide,
            BLOCK_Y=block[0], BLOCK_X=block[1], num_warps=NUM_WARPS,
        )  # fmt: skip
        seeds = target
    return out.view(torch.bool) if as_bool else out


def dilate(
    image: torch.Tensor,
    filled: torch.Tensor,
    keep: torch.Tensor | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """image: [H, W, C], filled: [H, W] bool -> [H, W, C] with every empty texel filled.

    keep: optional [H, W] bool, empty texels that hold their own value: they are neither
    written nor used as a source (the flood passes over them), e.g. a background that must
    stay; filled texels are sources whether kept or not. method: as for `nearest_filled`
    (Triton images: any real or bool dtype; others gather in torch). With no filled texel at
    all the image is returned unchanged (a copy).
    """
    _check(image, filled)
    _check_method(method)
    if keep is not None and tuple(keep.shape) != tuple(filled.shape):
        raise ValueError(f"keep must be [H, W] = {tuple(filled.shape)}, got {tuple(keep.shape)}")
    for name, mask in (("filled", filled), ("keep", keep)):
        if mask is not None and mask.device != image.device:
            raise ValueError(f"{name} is on {mask.device}, the image on {image.device}")
    if image.numel() == 0:
        return image.clone()
    filled = filled.bool()
    keep = None if keep is None else keep.bool()
    if _pick(method, filled) == "triton" and image.dtype in _TRITON_DTYPES:
        return _flood_triton(filled, image, keep)
    H, W, C = image.shape
    source = nearest_filled(filled, method)  # [H, W] int64, -1: none
    own = torch.arange(H * W, device=image.device).reshape(H, W)  # [H, W] int64
    stays = source < 0 if keep is None else (source < 0) | keep
    source = torch.where(stays, own, source)
    return image.reshape(H * W, C)[source.reshape(-1)].reshape(H, W, C)


def dilate_reference(
    image: np.ndarray, filled: np.ndarray, keep: np.ndarray | None = None
) -> np.ndarray:
    """numpy twin, brute force: each empty texel not in `keep` copies its exact nearest filled
    texel (ties: the lowest flat index)."""
    _check(image, filled)
    H, W = filled.shape
    sources = np.flatnonzero(filled)
    if len(sources) == 0:
        return image.copy()
    sy, sx = sources // W, sources % W
    out = image.reshape(H * W, -1).copy()
    empty = ~filled if keep is None else ~filled & ~keep
    for t in np.flatnonzero(empty):
        y, x = divmod(int(t), W)
        d = (sy - y) ** 2 + (sx - x) ** 2
        out[t] = out[sources[int(np.argmin(d))]]
    return out.reshape(image.shape)
