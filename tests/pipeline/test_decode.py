"""decode_image: every accepted format and pixel mode, built in memory, and every bad input."""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline.decode import decode_image, sniff_format
from pipeline.errors import (
    BadRequest,
    PayloadTooLarge,
    UnprocessableInput,
    UnsupportedMediaType,
)
from pipeline.settings import PipelineSettings

SETTINGS = PipelineSettings()
# Lossy codecs at high quality stay within this many levels on flat colour blocks.
LOSSY_TOLERANCE = 12
# CMYK -> RGB in Pillow is the naive formula, no colour management: "roughly right".
CMYK_TOLERANCE = 40


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def quadrants(mode: str = "RGB") -> Image.Image:
    """A 64x48 image of four flat colours: red, green / blue, white (top-left first)."""
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:24, :32] = (220, 30, 30)
    pixels[:24, 32:] = (30, 200, 40)
    pixels[24:, :32] = (30, 40, 210)
    pixels[24:, 32:] = (250, 250, 250)
    return Image.fromarray(pixels).convert(mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB(A); a header may lie about size."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_16bit(values: np.ndarray, colour_type: int) -> bytes:
    """values: [H, W, C] uint16 (C = 3 for RGB, 4 for RGBA) -> 16-bit PNG bytes."""
    height, width = values.shape[:2]
    big_endian = values.astype(">u2")
    rows = b"".join(b"\x00" + big_endian[y].tobytes() for y in range(height))
    return png_bytes(width, height, 16, colour_type, rows)


def assert_rgba(decoded, height: int, width: int) -> None:
    assert decoded.pixels.shape == (height, width, 4)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.flags.c_contiguous


# --- accepted formats and modes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "mode", "options", "has_alpha"),
    [
        ("PNG", "RGB", {}, False),
        ("PNG", "RGBA", {}, True),
        ("PNG", "L", {}, False),
        ("PNG", "LA", {}, True),
        ("PNG", "P", {}, False),
        ("JPEG", "RGB", {"quality": 95}, False),
        ("JPEG", "L", {"quality": 95}, False),
        ("WEBP", "RGB", {"lossless": True}, False),
        ("WEBP", "RGBA", {"lossless": True, "exact": True}, True),
        ("GIF", "P", {}, False),
        ("BMP", "RGB", {}, False),
        ("TIFF", "RGB", {}, False),
        ("TIFF", "RGBA", {}, True),
        ("TIFF", "PA", {}, True),
        ("TIFF", "YCbCr", {}, False),
        ("TIFF", "LAB", {}, False),
    ],
)
def test_formats_and_modes_decode_to_rgba(format, mode, options, has_alpha):
    source = quadrants()
    if mode in ("RGBA", "LA", "PA"):
        source = quadrants("RGBA")
        source.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    image = source.convert(mode) if mode not in ("RGB", "RGBA") else source
    data = encode(image, format, **options)

    decoded = decode_image(data, SETTINGS)

    assert_rgba(decoded, 48, 64)
    assert decoded.format == format
    assert decoded.has_alpha is has_alpha
    expected = np.asarray(image.convert("RGBA"))
    lossy = format == "JPEG" or mode in ("P", "YCbCr", "LAB")
    tolerance = LOSSY_TOLERANCE if lossy else 0
    difference = np.abs(decoded.pixels.astype(int) - expected.astype(int))
    if lossy:  # chroma subsampling blurs the colour edges: compare inside the quadrants
        difference = difference[np.r_[4:18, 30:44]][:, np.r_[4:26, 38:60]]
    assert difference.max() <= tolerance
    if not has_alpha:
        assert (decoded.pixels[..., 3] == 255).all()


def test_png_palette_with_transparent_entry_has_alpha():
    image = quadrants("P")
    transparent_index = image.getpixel((0, 0))
    data = encode(image, "PNG", transparency=transparent_index)

    decoded = decode_image(data, SETTINGS)

    assert decoded.has_alpha
    assert decoded.pixels[0, 0, 3] == 0  # the red quadrant's entry is transparent
    assert decoded.pixels[-1, -1, 3] == 255


def test_grey_and_rgb_png_with_trns_colour_have_alpha():
    grey = Image.fromarray(np.array([[0, 100, 200]], np.uint8))
    decoded = decode_image(encode(grey, "PNG", transparency=100), SETTINGS)
    assert decoded.has_alpha
    assert decoded.pixels[0, :, 3].tolist() == [255, 0, 255]


def test_bilevel_png():
    bits = Image.fromarray(np.array([[0, 255, 0, 255]], np.uint8)).convert("1")
    decoded = decode_image(encode(bits, "PNG"), SETTINGS)
    assert decoded.pixels[0, :, 0].tolist() == [0, 255, 0, 255]
    assert not decoded.has_alpha


@pytest.mark.parametrize(("format", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B")])
def test_16bit_grey_is_scaled_not_clipped(format, mode):
    values = np.array([[0, 257 * 100, 40000, 65535]], np.uint16)
    image = Image.fromarray(values)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    decoded = decode_image(encode(image, format), SETTINGS)
    assert decoded.pixels[0, :, 0].tolist() == [0, 100, round(40000 / 257), 255]
    assert (decoded.pixels[..., 1] == decoded.pixels[..., 0]).all()


def test_32bit_integer_grey():
    sixteen_bit = Image.fromarray(np.array([[0, 257 * 50, 65535]], np.int32))
    decoded = decode_image(encode(sixteen_bit, "TIFF"), SETTINGS)
    assert decoded.pixels[0, :, 0].tolist() == [0, 50, 255]
    wide = Image.fromarray(np.array([[-1000, 0, 1_000_000]], np.int32))  # no white point
    decoded = decode_image(encode(wide, "TIFF"), SETTINGS)
    assert decoded.pixels[0, :, 0].tolist() == [0, 0, 255]


def test_float_grey():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert decode_image(encode(unit, "TIFF"), SETTINGS).pixels[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], np.float32))
    assert decode_image(encode(wide, "TIFF"), SETTINGS).pixels[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("colour_type", [2, 6])
def test_16bit_rgb_and_rgba_png(colour_type):
    # Pillow reads 16-bit RGB(A) PNGs as 8-bit RGB(A) keeping the high byte: within one level
    # of value / 257, which is all an 8-bit pipeline can use.
    rng = np.random.default_rng(16)
    channels = 3 if colour_type == 2 else 4
    values = rng.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    decoded = decode_image(png_16bit(values, colour_type), SETTINGS)
    assert_rgba(decoded, 5, 7)
    assert decoded.has_alpha is (channels == 4)
    expected = np.rint(values / 257.0)
    assert np.abs(decoded.pixels[..., :channels] - expected).max() <= 1


def test_cmyk_jpeg_colours_roughly_right():
    image = quadrants()
    decoded = decode_image(encode(image.convert("CMYK"), "JPEG", quality=95), SETTINGS)
    assert decoded.format == "JPEG"
    for y, x in [(10, 10), (10, 50), (40, 10), (40, 50)]:
        expected = np.array(image.getpixel((x, y)))
        assert np.abs(decoded.pixels[y, x, :3].astype(int) - expected).max() <= CMYK_TOLERANCE


def test_cmyk_tiff():
    decoded = decode_image(encode(quadrants().convert("CMYK"), "TIFF"), SETTINGS)
    assert np.abs(decoded.pixels[10, 10, :3].astype(int) - [220, 30, 30]).max() <= CMYK_TOLERANCE


@pytest.mark.parametrize(("orientation", "turn"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied(orientation, turn):
    image = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(image, "JPEG", quality=95, exif=exif), SETTINGS)
    # Orientation 6 means "rotate 90 degrees clockwise to display": np.rot90 turns k=-1.
    expected = np.rot90(np.asarray(image), k=turn)
    assert decoded.pixels.shape[:2] == expected.shape[:2]
    difference = np.abs(decoded.pixels[..., :3].astype(int) - expected.astype(int))
    assert np.median(difference) <= 2
    assert difference.mean() <= LOSSY_TOLERANCE / 2


@pytest.mark.parametrize("format", ["GIF", "WEBP", "PNG"])
def test_animated_images_give_the_first_frame(format):
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    frames = [Image.new("RGB", (32, 24), colour) for colour in colours]
    options = {"lossless": True} if format == "WEBP" else {}
    data = encode(frames[0], format, save_all=True, append_images=frames[1:], **options)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3

    decoded = decode_image(data, SETTINGS)

    assert np.abs(decoded.pixels[12, 16, :3].astype(int) - colours[0]).max() <= 4


def test_format_comes_from_the_bytes():
    png = encode(quadrants(), "PNG")  # what the orchestrator uploads as prompt.jpg
    assert decode_image(png, SETTINGS).format == "PNG"
    assert sniff_format(png) == ("a PNG image", "PNG")


# --- bad inputs ----------------------------------------------------------------------------


def test_empty_bytes_are_a_bad_request():
    with pytest.raises(BadRequest):
        decode_image(b"", SETTINGS)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"hello, this is not an image\n", "plain text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(40), "ZIP"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "gzip"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b'<?xml version="1.0"?><root/>', "XML"),
        (b'{"image": "nope"}', "JSON"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "MP4"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS"),
        (bytes(range(1, 33)) * 4, "unknown binary data starting with 01 02 03 04 05 06 07 08"),
    ],
)
def test_not_an_image_is_unsupported_media_type(data, named):
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_image(data, SETTINGS)
    assert named in caught.value.detail
    assert caught.value.status == 415


@pytest.mark.parametrize(("format", "named"), [("PPM", "PNM"), ("ICO", "ICO")])
def test_formats_pillow_reads_but_we_do_not_accept(format, named):
    data = encode(quadrants(), format)
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_image(data, SETTINGS)
    assert named in caught.value.detail


@pytest.mark.parametrize(
    ("format", "keep"), [("PNG", 0.6), ("JPEG", 0.5), ("PNG", 0.02), ("PNG", 0.0004), ("JPEG", 0.9)]
)
def test_truncated_image_is_unprocessable_and_names_the_format(format, keep):
    rng = np.random.default_rng(7)  # noise does not compress: truncation cuts pixel data
    noise = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data = encode(noise, format)
    with pytest.raises(UnprocessableInput) as caught:
        decode_image(data[: int(len(data) * keep)], SETTINGS)
    assert caught.value.detail.startswith(f"{format} image is truncated or corrupt")


def test_corrupt_png_data_is_unprocessable():
    rows = b"".join(b"\x00" + bytes(range(30)) for _ in range(10))
    data = bytearray(png_bytes(10, 10, 8, 2, rows))
    data[45:60] = b"\xff" * 15  # inside the zlib stream
    with pytest.raises(UnprocessableInput) as caught:
        decode_image(bytes(data), SETTINGS)
    assert "PNG" in caught.value.detail


def test_more_pixels_than_the_setting_is_too_large():
    settings = dataclasses.replace(SETTINGS, max_image_pixels=64 * 48 - 1)
    with pytest.raises(PayloadTooLarge) as caught:
        decode_image(encode(quadrants(), "PNG"), settings)
    assert "64x48" in caught.value.detail
    decode_image(
        encode(quadrants(), "PNG"), dataclasses.replace(settings, max_image_pixels=64 * 48)
    )


@pytest.mark.parametrize(
    ("width", "height", "limit"),
    [
        (40_000, 40_000, None),  # 1.6 G pixels: over Pillow's own bomb error limit
        (8_000, 6_000, None),  # 48 M: over our 40 M default, under Pillow's limits
        (12_000, 9_000, 200_000_000),  # 108 M: we allow it, Pillow's bomb warning fires
    ],
)
def test_bomb_header_is_refused_before_decoding(width, height, limit):
    # The pixel data is a few bytes: had anything been decoded, the answer would be a 422.
    data = png_bytes(width, height, 8, 2, b"\x00" * 16)
    settings = SETTINGS if limit is None else dataclasses.replace(SETTINGS, max_image_pixels=limit)
    filters_before = list(warnings.filters)
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    truncated_before = ImageFile.LOAD_TRUNCATED_IMAGES

    with pytest.raises(PayloadTooLarge):
        decode_image(data, settings)

    assert warnings.filters == filters_before
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS
    assert truncated_before == ImageFile.LOAD_TRUNCATED_IMAGES


# --- determinism and threads ---------------------------------------------------------------


def test_deterministic_and_thread_safe():
    inputs = [
        encode(quadrants(), "PNG"),
        encode(quadrants(), "JPEG", quality=90),
        encode(quadrants("RGBA"), "WEBP", quality=80),
        encode(quadrants("P"), "GIF"),
        png_bytes(30_000, 30_000, 8, 2, b"\x00"),  # a bomb in the middle of good work
    ]

    def run(data: bytes) -> np.ndarray | str:
        try:
            return decode_image(data, SETTINGS).pixels
        except PayloadTooLarge as error:
            return type(error).__name__

    sequential = [run(data) for data in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, inputs * 8))
    for index, result in enumerate(concurrent):
        expected = sequential[index % len(inputs)]
        if isinstance(expected, str):
            assert result == expected
        else:
            assert np.array_equal(result, expected)
