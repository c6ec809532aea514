"""PNG whose compressed stream is deflated in horizontal strips on threads.

A PNG's pixels are one zlib stream (RFC 1950) of filtered rows, each row a filter-type byte
then its bytes (PNG §7.3, §9). A deflate stream (RFC 1951) is a run of blocks, only the last
marked final, whose back-references may reach 32 KiB into earlier output. So each strip of
rows is deflated by a compressor of its own (raw deflate, no zlib header: nothing refers back
past the strip's start), every strip but the last ending with a flush to a byte boundary
(Z_FULL_FLUSH: an empty stored block) instead of a final block; joined, they are one valid
deflate stream. The zlib wrapper around it needs the
Adler-32 of all the filtered bytes, combined from the strips' own checksums (zlib's
adler32_combine arithmetic, written out below).

Every row uses the Up filter (type 2: each byte minus the byte above it, modulo 256): one
vectorised subtraction, and on the textures the atlas bakes (smooth charts, flat gutters)
no larger than Pillow's choice at the same zlib level (perf/RESULTS.md). The strips are cut by
the image size alone (STRIP_ROWS), so the bytes are the same on every host for one zlib.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from pipeline.texture_threads import texture_pool

__all__ = ["STRIP_ROWS", "adler32_combine", "encode_png"]

STRIP_ROWS = 256
SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2
# IHDR: 8 bits a sample, greyscale or truecolour; deflate, adaptive filters, no interlace.
BIT_DEPTH, COLOUR_GREY, COLOUR_RGB = 8, 0, 2
ADLER_BASE = 65521  # the largest prime below 2**16


def _chunk(kind: bytes, data: bytes) -> bytes:
    """PNG §5.3: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _zlib_header(level: int) -> bytes:
    """RFC 1950 §2.2: CMF (deflate, 32 KiB window), FLG with FLEVEL and the FCHECK bits."""
    cmf = 0x78
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg += 31 - (cmf * 256 + flg) % 31
    return bytes((cmf, flg))


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of A + B from adler32(A), adler32(B) and len(B) (as zlib's adler32_combine).

    Adler-32 is s2 << 16 | s1 with s1 = 1 + sum of bytes, s2 = sum of the running s1 values,
    both modulo 65521. Appending B adds B's byte sum to s1; to s2 it adds B's own s2, plus
    len(B) times A's s1 (every running value of B starts from it), minus len(B) for the 1 that
    B's own s1 values count again.
    """
    s1_a, s2_a = first & 0xFFFF, first >> 16
    s1_b, s2_b = second & 0xFFFF, second >> 16
    s1 = (s1_a + s1_b - 1) % ADLER_BASE
    s2 = (s2_a + s2_b + second_length * (s1_a - 1)) % ADLER_BASE
    return s2 << 16 | s1


def _strip(
    pixels: np.ndarray, top: int, rows: int, level: int, last: bool
) -> tuple[bytes, int, int]:
    """Rows top..top+rows, Up-filtered and deflated -> (raw deflate bytes, Adler-32 of the
    filtered bytes, their length)."""
    block = pixels[top : top + rows].reshape(rows, -1)
    above = pixels[top - 1].reshape(1, -1) if top else np.zeros_like(block[:1])
    filtered = np.empty((rows, block.shape[1] + 1), np.uint8)
    filtered[:, 0] = FILTER_UP
    np.subtract(block[:1], above, out=filtered[:1, 1:])  # uint8: wraps modulo 256
    np.subtract(block[1:], block[:-1], out=filtered[1:, 1:])
    data = filtered.tobytes()
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    flush = zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH
    return deflate.compress(data) + deflate.flush(flush), zlib.adler32(data), len(data)


def encode_png(pixels: np.ndarray, level: int) -> bytes:
    """[H, W, 3] uint8 RGB or [H, W] uint8 grey, C-contiguous -> PNG (8-bit truecolour or
    greyscale, no metadata), every row Up-filtered, the zlib stream deflated at `level` in
    strips of STRIP_ROWS rows on threads (module docstring). Deterministic for one zlib
    build."""
    height, width = pixels.shape[:2]
    tops = range(0, height, STRIP_ROWS)

    def strip(top: int) -> tuple[bytes, int, int]:
        rows = min(STRIP_ROWS, height - top)
        return _strip(pixels, top, rows, level, last=top + rows == height)

    strips = list(texture_pool().map(strip, tops))
    checksum = 1  # Adler-32 of nothing
    for _, adler, length in strips:
        checksum = adler32_combine(checksum, adler, length)
    stream = _zlib_header(level) + b"".join(s for s, _, _ in strips) + struct.pack(">I", checksum)
    colour = COLOUR_GREY if pixels.ndim == 2 else COLOUR_RGB
    header = struct.pack(">IIBBBBB", width, height, BIT_DEPTH, colour, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")
