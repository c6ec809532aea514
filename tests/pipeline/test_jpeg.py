"""pipeline/jpeg.py: strips encoded apart and joined by restart markers decode to exactly the
pixels of one encode of the whole image, with the same bytes whatever the thread count."""

from __future__ import annotations

import io
import logging
import struct
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

import pipeline.jpeg as jpeg
from pipeline.jpeg import STRIP_ROWS, encode_jpeg

QUALITY = 90


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour with noisy patches: DC values that drift (so a DC prediction carried
    wrongly across a restart shows) and busy blocks (long entropy-coded runs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / 37.0), np.cos(y / 23.0), np.sin((x + y) / 51.0)], axis=-1)
    pixels = 127.5 + 100.0 * base
    noisy = rng.random((height, width)) < 0.3
    pixels[noisy] += rng.normal(0.0, 40.0, (int(noisy.sum()), 3))
    return np.ascontiguousarray(pixels.clip(0, 255).astype(np.uint8))


def decoded(data: bytes) -> np.ndarray:
    """Both decoders the stack uses (Pillow for trimesh and the judge, OpenCV) must agree."""
    with Image.open(io.BytesIO(data)) as image:
        pillow = np.asarray(image.convert("RGB"))
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.array_equal(pillow, opencv)
    return pillow


def segments(data: bytes) -> list[tuple[int, bytes]]:
    """Header segments (marker, payload without its length) up to and with the scan's."""
    found, at = [], 2
    while True:
        marker, (length,) = data[at + 1], struct.unpack_from(">H", data, at + 2)
        found.append((marker, data[at + 4 : at + 2 + length]))
        at += 2 + length
        if marker == 0xDA:
            return found


def restart_markers(data: bytes) -> list[int]:
    """The RSTm markers in the scan, in order (a coded 0xFF byte is stuffed as FF 00)."""
    header_end = data.index(b"\xff\xda")
    scan = np.frombuffer(data[header_end:], np.uint8)
    at = np.flatnonzero((scan[:-1] == 0xFF) & (scan[1:] >= 0xD0) & (scan[1:] <= 0xD7))
    return [int(scan[i + 1]) - 0xD0 for i in at]


@pytest.mark.parametrize(
    ("height", "width"),
    [
        (2048, 2048),  # the default texture: 8 strips
        (1000, 1003),  # neither side a multiple of 8: the last strip and column are partial
        (STRIP_ROWS + 1, 40),  # a last strip of one row
        (2600, 24),  # 11 strips: the markers count 0..7 and round again
        (300, 16400),  # 2050 MCUs a row: 31 MCU rows an interval (DRI's 16-bit limit)
    ],
)
def test_strips_decode_to_the_pixels_of_one_encode(height: int, width: int) -> None:
    pixels = texture(height, width)
    joined = encode_jpeg(pixels, QUALITY)
    whole = jpeg._encode_one(pixels, QUALITY)
    assert joined != whole  # the strips path ran (one encode has no restart markers)
    assert np.array_equal(decoded(joined), decoded(whole))


@pytest.mark.parametrize(("height", "width"), [(2048, 2048), (1000, 1003), (2600, 24)])
def test_grey_strips_decode_to_the_pixels_of_one_grey_encode(height: int, width: int) -> None:
    """An [H, W] image (the grey metallicRoughness texture) is one component, joined alike."""
    pixels = np.ascontiguousarray(texture(height, width)[..., 1])
    joined = encode_jpeg(pixels, QUALITY)
    whole = jpeg._encode_one(pixels, QUALITY)
    assert joined != whole
    components = dict(segments(joined))[0xC0][5]  # SOF0: precision, height, width, count
    assert components == 1
    with Image.open(io.BytesIO(joined)) as image, Image.open(io.BytesIO(whole)) as one:
        assert image.mode == "L" and np.array_equal(np.asarray(image), np.asarray(one))
        pillow = np.asarray(image)
    opencv = cv2.imdecode(np.frombuffer(joined, np.uint8), cv2.IMREAD_UNCHANGED)
    assert opencv.shape == (height, width) and np.array_equal(opencv, pillow)
    assert np.abs(pillow.astype(int) - pixels).mean() < 5  # this image (noisy: ~3 levels)


def test_the_joined_file_declares_its_size_and_restart_interval() -> None:
    height, width = 2600, 48
    data = encode_jpeg(texture(height, width), QUALITY)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    assert data.count(b"\xff\xd8") == 1 and data.count(b"\xff\xd9") == 1
    header = dict(segments(data))
    assert struct.unpack_from(">HH", header[0xC0], 1) == (height, width)
    mcus_per_row = width // 8
    assert struct.unpack(">H", header[0xDD]) == (mcus_per_row * STRIP_ROWS // 8,)
    strips = -(-height // STRIP_ROWS)
    assert restart_markers(data) == [k % 8 for k in range(strips - 1)]


def test_an_image_of_one_strip_is_one_plain_encode() -> None:
    pixels = texture(STRIP_ROWS, 64)
    data = encode_jpeg(pixels, QUALITY)
    assert data == jpeg._encode_one(pixels, QUALITY)
    assert 0xDD not in dict(segments(data)) and restart_markers(data) == []


def test_bytes_do_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = texture(1500, 700, seed=3)
    outputs = set()
    for threads in (1, 3, 8):
        with ThreadPoolExecutor(threads) as pool:
            monkeypatch.setattr(jpeg, "texture_pool", lambda: pool)
            outputs.add(encode_jpeg(pixels, QUALITY))
            outputs.add(encode_jpeg(pixels, QUALITY))
    assert len(outputs) == 1


def test_quality_reaches_every_strip() -> None:
    pixels = texture(1024, 256)
    low, high = encode_jpeg(pixels, 50), encode_jpeg(pixels, 95)
    assert len(low) < len(high)
    error = {q: np.abs(decoded(d).astype(int) - pixels).mean() for q, d in ((50, low), (95, high))}
    assert error[95] < error[50]


def test_strips_with_other_tables_are_refused() -> None:
    top, bottom = texture(STRIP_ROWS, 64), texture(STRIP_ROWS, 64, seed=1)
    strips = [jpeg._encode_one(top, 90), jpeg._encode_one(bottom, 60)]
    with pytest.raises(ValueError, match="strip 1 was not encoded with strip 0's tables"):
        jpeg._joined(strips, 2 * STRIP_ROWS, 8 * STRIP_ROWS // 8)


def test_unjoinable_strips_fall_back_to_one_encode(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoder that writes progressive JPEGs (not one scan a strip) still gives a JPEG."""
    pixels = texture(3 * STRIP_ROWS, 64)
    plain = jpeg._encode_one

    def progressive_strips(part: np.ndarray, quality: int) -> bytes:
        if len(part) == len(pixels):
            return plain(part, quality)
        ok, data = cv2.imencode(".jpg", part, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
        assert ok
        return data.tobytes()

    monkeypatch.setattr(jpeg, "_encode_one", progressive_strips)
    with caplog.at_level(logging.WARNING, "pipeline.jpeg"):
        data = encode_jpeg(pixels, QUALITY)
    assert data == plain(pixels, QUALITY)
    assert "strips not joinable" in caplog.text
