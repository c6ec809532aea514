"""segment_sums: exact float64 sums over contiguous segments, the same bits on every run.

`fixed_point_sums(ordered, starts, ends)` -> [count, k] float64: the sums of rows
starts[g] .. ends[g] - 1 of ordered [n, k], for every segment g. The values are scaled to
fixed point, 2^bits over a bound on any total (max |value| * n, its base-2 exponent taken
exactly from the float's bits), what that rounds away scaled again as finer words; both words
of every column are laid end to end, [2k, n] int64, and scanned once as int64: a segment's sum
is a difference of the scan within one word's stretch. Integer addition is associative, so
the sums do not depend on the order the hardware adds in (torch documents a float `cumsum` on
CUDA as nondeterministic, and `index_add_` uses float atomics).

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_fixed_point_sums_triton`):
  one kernel writes the words, torch's integer `cumsum` scans them, a second kernel takes the
  differences and scales back: four launches (with the bound's max) where the torch path
  takes about forty. The atlas calls these sums dozens of times on small meshes, where each
  launch costs more than its work.
- `_fixed_point_sums_torch` (any device, the CPU path): the same arithmetic in torch ops,
  each word's stretch scanned on its own into one table (no copies of the words laid end to
  end; the same integer differences): a 240,000 x 2 call 1.5-2.9x faster on a 2-core CPU,
  the same bits.
The two paths give the same bits: every step is exact integer arithmetic or a float64
operation by a power of two, and the rounding is to nearest, ties to even, on both.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path serves every device
    triton = None

__all__ = ["fixed_point_sums"]

# Elements (values, then sums) per Triton program. Untuned: a few loads and stores each.
BLOCK = 1024
# No bound below 2^-SMALLEST_EXPONENT: keeps both scales finite when every value is zero (or
# nearly).
SMALLEST_EXPONENT = 900


def _check(ordered: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> None:
    if ordered.ndim != 2 or ordered.dtype != torch.float64:
        raise ValueError(
            f"ordered must be float64 [n, k], got {ordered.dtype} {tuple(ordered.shape)}"
        )
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError(
            f"starts and ends must be [count], got {tuple(starts.shape)}, {tuple(ends.shape)}"
        )
    if starts.dtype != torch.int64 or ends.dtype != torch.int64:
        raise ValueError("starts and ends must be int64")
    if not (ordered.device == starts.device == ends.device):
        raise ValueError("ordered, starts and ends must be on one device")


def word_bits(k: int) -> int:
    """Bits per word for k columns, so the scan over all 2k stretches fits int64."""
    return 62 - (2 * k - 1).bit_length()


def fine_shift(n: int, bits: int) -> int:
    """The finer word's scale over the coarse one, 2^this: a value's remainder, summed over
    n rows, stays within `bits` too."""
    return bits - (max(n, 2) - 1).bit_length()


def fixed_point_sums(
    ordered: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """ordered [n, k] float64, starts and ends [count] int64 (0 <= start <= end <= n) ->
    [count, k] float64: each segment's exact sums (for values of magnitude below
    2^900 / n). CUDA tensors go to the Triton kernels, anything else to the torch path."""
    _check(ordered, starts, ends)
    n, k = ordered.shape
    if n == 0 or len(starts) == 0:
        return ordered.new_zeros(len(starts), k)
    if triton is not None and ordered.is_cuda:
        return _fixed_point_sums_triton(
            ordered.contiguous(), starts.contiguous(), ends.contiguous()
        )
    return _fixed_point_sums_torch(ordered, starts, ends)


def _scale_torch(peak: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """2^(bits - ceil(log2(max(peak * n, 2^-SMALLEST_EXPONENT)))) as a 0-d float64 tensor."""
    bound = (peak * n).clamp_min(2.0**-SMALLEST_EXPONENT)
    mantissa, exponent = torch.frexp(bound)  # bound = mantissa * 2^exponent, mantissa in [1/2, 1)
    ceiling = exponent.long() - (mantissa == 0.5).long()
    return torch.ldexp(torch.ones_like(bound), bits - ceiling)


def _fixed_point_sums_torch(
    ordered: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    n, k = ordered.shape
    bits = word_bits(k)
    scale = _scale_torch(ordered.abs().amax(), n, bits)  # on the device: no sync
    fine = scale * 2.0 ** fine_shift(n, bits)
    high = torch.round(ordered * scale)
    low = torch.round((ordered - high / scale) * fine)
    # Each word's stretch scanned on its own, after a zero: the same integer differences as
    # one scan over the stretches end to end (the Triton path's), without the copies.
    prefix = torch.zeros(2 * k, n + 1, dtype=torch.int64, device=ordered.device)
    for row, word in enumerate((*high.T, *low.T)):
        torch.cumsum(word.long(), 0, out=prefix[row, 1:])
    sums = (prefix[:, ends] - prefix[:, starts]).double()  # [2k, count]
    return (sums[:k] / scale + sums[k:] / fine).T  # [count, k]


if triton is not None:
    # Float constants in Triton code are float32: float64 ones are built from their bits.
    _SMALLEST_BOUND_BITS = tl.constexpr((1023 - SMALLEST_EXPONENT) << 52)
    _ROUNDER_BITS = tl.constexpr((1023 + 52) << 52)  # 2^52

    @triton.jit
    def _power_of_two(exponent):
        """2^exponent as float64 (normal range), from its bits."""
        return ((exponent + 1023) << 52).to(tl.float64, bitcast=True)

    @triton.jit
    def _scale(peak_ptr, n, BITS: tl.constexpr):
        """`_scale_torch` from the bound's bits: the exponent field, less one where the
        mantissa is exactly 1/2 (a power of two)."""
        smallest = tl.full((), _SMALLEST_BOUND_BITS, tl.int64).to(tl.float64, bitcast=True)
        bound = tl.maximum(tl.load(peak_ptr) * n, smallest)
        raw = bound.to(tl.int64, bitcast=True)
        exponent = ((raw >> 52) & 0x7FF) - 1022
        ceiling = exponent - ((raw & 0xFFFFFFFFFFFFF) == 0).to(tl.int64)
        return _power_of_two(BITS - ceiling)

    @triton.jit
    def _round(x):
        """To the nearest integer, ties to even (torch.round's rule): at and above 2^52 every
        float64 is one; below, adding and taking away 2^52 (towards x's side) rounds so."""
        rounder = tl.full((), _ROUNDER_BITS, tl.int64).to(tl.float64, bitcast=True)
        rounded = tl.where(x >= 0, (x + rounder) - rounder, (x - rounder) + rounder)
        return tl.where(tl.abs(x) < rounder, rounded, x)

    @triton.jit(do_not_specialize=["n"])
    def _words_kernel(
        values_ptr,
        peak_ptr,
        words_ptr,
        n,
        fine_factor,
        K: tl.constexpr,
        BITS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = index < n * K
        value = tl.load(values_ptr + index, mask=inside, other=0.0)
        row, column = index // K, index % K
        scale = _scale(peak_ptr, n, BITS)
        high = _round(value * scale)
        low = _round((value - high / scale) * (scale * fine_factor))
        tl.store(words_ptr + column * n + row, high.to(tl.int64), mask=inside)
        tl.store(words_ptr + (column + K) * n + row, low.to(tl.int64), mask=inside)

    @triton.jit
    def _scanned(scan_ptr, at, inside):
        """The exclusive scan at `at`: the inclusive one just before it, 0 before the start."""
        return tl.load(scan_ptr + at - 1, mask=inside & (at > 0), other=0)

    @triton.jit(do_not_specialize=["n", "count"])
    def _sums_kernel(
        scan_ptr,
        starts_ptr,
        ends_ptr,
        peak_ptr,
        out_ptr,
        n,
        count,
        fine_factor,
        K: tl.constexpr,
        BITS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = index < count * K
        segment, column = index // K, index % K
        start = tl.load(starts_ptr + segment, mask=inside, other=0)
        end = tl.load(ends_ptr + segment, mask=inside, other=0)
        high_at, low_at = column * n, (column + K) * n
        high = _scanned(scan_ptr, high_at + end, inside) - _scanned(
            scan_ptr, high_at + start, inside
        )
        low = _scanned(scan_ptr, low_at + end, inside) - _scanned(scan_ptr, low_at + start, inside)
        scale = _scale(peak_ptr, n, BITS)
        total = high.to(tl.float64) / scale + low.to(tl.float64) / (scale * fine_factor)
        tl.store(out_ptr + column * count + segment, total, mask=inside)  # [K, count]


def _fixed_point_sums_triton(
    ordered: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """As `fixed_point_sums`; contiguous tensors on CUDA (on the CPU under TRITON_INTERPRET=1)."""
    n, k = ordered.shape
    count = len(starts)
    bits = word_bits(k)
    fine_factor = 2.0 ** fine_shift(n, bits)
    peak = torch.linalg.vector_norm(ordered, float("inf")).reshape(1)  # max |value|, one launch
    words = torch.empty(2 * k * n, dtype=torch.int64, device=ordered.device)
    grid = (triton.cdiv(n * k, BLOCK),)
    _words_kernel[grid](ordered, peak, words, n, fine_factor, K=k, BITS=bits, BLOCK=BLOCK)
    scan = torch.cumsum(words, 0)
    # Laid out [k, count] and returned transposed, as the torch path's: later float work on
    # these sums (reductions, products) may round differently on other strides.
    out = torch.empty(k, count, dtype=torch.float64, device=ordered.device)
    grid = (triton.cdiv(count * k, BLOCK),)
    _sums_kernel[grid](
        scan, starts, ends, peak, out, n, count, fine_factor, K=k, BITS=bits, BLOCK=BLOCK
    )
    return out.T
