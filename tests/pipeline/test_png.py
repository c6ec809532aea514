"""pipeline/png.py: strips deflated apart and joined by full flushes make one lossless PNG,
its checksums right, the same bytes whatever the thread count."""

from __future__ import annotations

import io
import random
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

import pipeline.png as png
from pipeline.png import STRIP_ROWS, adler32_combine, encode_png
from tests.pipeline.test_jpeg import texture

LEVEL = 1


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk after the signature, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack_from(">I", data, at + 8 + length)
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        at += 12 + length
    return found


@pytest.mark.parametrize(
    ("height", "width"),
    [
        (2048, 2048),  # the default texture: 8 strips
        (1000, 1003),  # a partial last strip, an odd width
        (STRIP_ROWS + 1, 40),  # a last strip of one row
        (STRIP_ROWS, 64),  # exactly one strip: it ends the stream itself
        (1, 5),
    ],
)
def test_decoders_read_back_the_exact_pixels(height: int, width: int) -> None:
    pixels = texture(height, width)
    data = encode_png(pixels, LEVEL)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB" and image.size == (width, height)
        assert np.array_equal(np.asarray(image), pixels)
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(opencv[:, :, ::-1], pixels)


@pytest.mark.parametrize(("height", "width"), [(1000, 1003), (STRIP_ROWS + 1, 40), (1, 5)])
def test_a_grey_image_is_an_8_bit_greyscale_png_of_the_exact_pixels(
    height: int, width: int
) -> None:
    pixels = np.ascontiguousarray(texture(height, width)[..., 2])
    data = encode_png(pixels, LEVEL)
    header = dict(chunks(data))[b"IHDR"]
    assert struct.unpack(">IIBBBBB", header) == (width, height, 8, 0, 0, 0, 0)  # greyscale
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L" and np.array_equal(np.asarray(image), pixels)
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(opencv, pixels)


def test_one_zlib_stream_of_up_filtered_rows_with_its_checksum() -> None:
    """zlib.decompress checks the Adler-32 the strips' checksums were combined into."""
    height, width = 3 * STRIP_ROWS + 7, 33
    pixels = texture(height, width, seed=2)
    found = chunks(encode_png(pixels, LEVEL))
    assert [kind for kind, _ in found] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", found[0][1]) == (width, height, 8, 2, 0, 0, 0)
    stream = found[1][1]
    assert (stream[0] * 256 + stream[1]) % 31 == 0  # RFC 1950 FCHECK
    rows = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == png.FILTER_UP).all()
    flat = pixels.reshape(height, -1)
    above = np.vstack([np.zeros_like(flat[:1]), flat[:-1]])
    assert np.array_equal(rows[:, 1:], flat - above)  # uint8 arithmetic wraps as PNG's does


def test_the_stream_is_deflated_in_strips() -> None:
    """Each strip but the last ends in a full flush's empty stored block (00 00 FF FF), from
    which a fresh raw inflater decodes the rest of the stream alone."""
    pixels = texture(4 * STRIP_ROWS, 48, seed=4)
    stream = dict(chunks(encode_png(pixels, LEVEL)))[b"IDAT"][2:-4]
    row_bytes = 1 + 3 * 48
    flush = b"\x00\x00\xff\xff"
    cuts = [at + len(flush) for at in range(len(stream)) if stream.startswith(flush, at)]
    alone = []
    for cut in cuts:
        try:
            alone.append(len(zlib.decompressobj(-zlib.MAX_WBITS).decompress(stream[cut:])))
        except zlib.error:
            continue  # four bytes inside compressed data that only look like a flush
    strips = sorted(
        {n // (row_bytes * STRIP_ROWS) for n in alone if n % (row_bytes * STRIP_ROWS) == 0}
    )
    assert strips == [1, 2, 3]


@pytest.mark.parametrize("seed", range(5))
def test_adler32_combine_matches_zlib(seed: int) -> None:
    rng = random.Random(seed)
    parts = [
        rng.randbytes(rng.choice([0, 1, 7, 65521, 65522, 200_000, rng.randrange(1, 5000)]))
        for _ in range(6)
    ]
    combined = 1
    for part in parts:
        combined = adler32_combine(combined, zlib.adler32(part), len(part))
    assert combined == zlib.adler32(b"".join(parts))


def test_bytes_do_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = texture(1500, 700, seed=3)
    outputs = set()
    for threads in (1, 3, 8):
        with ThreadPoolExecutor(threads) as pool:
            monkeypatch.setattr(png, "texture_pool", lambda pool=pool: pool)
            outputs.add(encode_png(pixels, LEVEL))
            outputs.add(encode_png(pixels, LEVEL))
    assert len(outputs) == 1


def test_the_level_reaches_every_strip() -> None:
    pixels = texture(1024, 256, seed=6)
    fast, small = encode_png(pixels, 1), encode_png(pixels, 9)
    assert len(small) < len(fast)
    for data in (fast, small):
        with Image.open(io.BytesIO(data)) as image:
            assert np.array_equal(np.asarray(image), pixels)
