"""Upload bytes -> RGBA pixels: the decode stage.

The format is sniffed from the bytes (the orchestrator labels PNG bytes `prompt.jpg`), and only
a whitelist of raster plug-ins may run, so an upload can never reach Pillow's EPS (Ghostscript)
or other exotic readers. The pixel count is checked from the header before any pixel is
decoded: a decompression bomb is refused, never inflated. Every failure is one of the service
errors (pipeline/errors.py): 400 empty, 413 too many pixels, 415 not an accepted image,
422 truncated or corrupt.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import time
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import BadRequest, PayloadTooLarge, UnprocessableInput, UnsupportedMediaType
from pipeline.profiling import mark
from pipeline.settings import PipelineSettings
from pipeline.types import DecodedImage

__all__ = ["ACCEPTED_FORMATS", "decode_image", "sniff_format"]

log = logging.getLogger("pipeline.decode")

# Pillow plug-ins allowed to parse an upload: the raster formats prompts arrive in.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# Pillow's DecompressionBombWarning goes through the process-wide `warnings` filters, which
# `catch_warnings` swaps globally: one lock keeps concurrent decodes from restoring each
# other's filters. It guards only the header parse (microseconds), never pixel decoding.
_OPEN_LOCK = threading.Lock()

# Exceptions Pillow's readers raise on truncated or malformed data.
_CORRUPT_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

# Bytes a text-ish upload is judged on (printable share) and the share that makes it text.
_TEXT_PROBE_BYTES = 1024
_TEXT_MIN_PRINTABLE = 0.95

# Grey modes Pillow keeps at 16 or 32 bits; they are scaled to 8 bits here, not clipped.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode_image(data: bytes, settings: PipelineSettings) -> DecodedImage:
    """Decode an uploaded image to [H, W, 4] uint8 RGBA (first frame, EXIF orientation applied).

    Thread-safe. Raises BadRequest, PayloadTooLarge, UnsupportedMediaType or UnprocessableInput.
    """
    start = time.perf_counter()
    # 1. Nothing uploaded.
    if not data:
        raise BadRequest("the image file is empty (0 bytes)")
    # 2. What the bytes claim to be, from their magic numbers alone.
    sniffed, sniffed_format = sniff_format(data)
    # 3. Parse the header with the whitelisted plug-ins only.
    image = _open_header(data, sniffed, sniffed_format, settings.max_image_pixels)
    container = "JPEG" if image.format == "MPO" else str(image.format)
    # 4. Refuse too many pixels before a single one is decoded.
    width, height = image.size
    if width * height > settings.max_image_pixels:
        raise PayloadTooLarge(
            f"{container} image is {width}x{height} = {width * height} pixels; "
            f"the limit is {settings.max_image_pixels} (MAX_IMAGE_PIXELS)"
        )
    if width == 0 or height == 0:
        raise UnprocessableInput(f"{container} image has no pixels ({width}x{height})")
    # 5. Decode the first frame (animated GIF/WEBP/APNG, multi-page TIFF: frame 0).
    try:
        image.load()
    except _CORRUPT_ERRORS as error:
        raise UnprocessableInput(f"{container} image is truncated or corrupt: {error}") from error
    # 6. Camera orientation; broken EXIF is optional metadata and must not lose the request.
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:  # any EXIF parser failure
        log.warning("ignoring unreadable EXIF orientation: %s", error)
    # 7. Any mode -> RGBA uint8.
    mode = image.mode
    pixels, has_alpha = _to_rgba(image)
    log.info(
        "decode: %d bytes %s %s %dx%d -> RGBA%s, %.1f ms",
        len(data),
        container,
        mode,
        pixels.shape[1],
        pixels.shape[0],
        " (alpha)" if has_alpha else "",
        (time.perf_counter() - start) * 1e3,
    )
    mark("decode")
    return DecodedImage(pixels=pixels, has_alpha=has_alpha, format=container)


def _open_header(
    data: bytes, sniffed: str, sniffed_format: str | None, max_pixels: int
) -> Image.Image:
    """Image.open restricted to ACCEPTED_FORMATS; Pillow's own bomb guard raises, never warns."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLarge(
            f"{sniffed_format or 'the'} image declares more pixels than Pillow decodes safely "
            f"(our limit is {max_pixels}, MAX_IMAGE_PIXELS): {error}"
        ) from error
    except _CORRUPT_ERRORS as error:
        if sniffed_format is None:
            raise UnsupportedMediaType(
                f"expected an image ({', '.join(ACCEPTED_FORMATS)}); got {sniffed}"
            ) from error
        reason = (
            "its header could not be read"
            if isinstance(error, Image.UnidentifiedImageError)
            else str(error)
        )
        raise UnprocessableInput(
            f"{sniffed_format} image is truncated or corrupt: {reason}"
        ) from error


def _to_rgba(image: Image.Image) -> tuple[np.ndarray, bool]:
    """[H, W, 4] uint8 RGBA and whether the file carried alpha (a channel or tRNS entry)."""
    mode = image.mode
    transparency = image.info.get("transparency")
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_rgba(image, transparency)
    if mode == "RGBA":
        return np.ascontiguousarray(np.asarray(image)), True
    palette_alpha = mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
    if mode in _ALPHA_MODES or palette_alpha or transparency is not None:
        try:
            return np.ascontiguousarray(np.asarray(image.convert("RGBA"))), True
        except ValueError:  # a mode Pillow cannot take to RGBA with its transparency
            pass
    try:
        rgb = np.asarray(image.convert("RGB"))
    except ValueError as error:
        raise UnprocessableInput(f"unsupported pixel mode {mode}: {error}") from error
    pixels = np.empty((*rgb.shape[:2], 4), np.uint8)
    pixels[..., :3] = rgb
    pixels[..., 3] = 255
    return pixels, False


def _wide_grey_to_rgba(image: Image.Image, transparency: object) -> tuple[np.ndarray, bool]:
    """16/32-bit integer or float grey -> 8 bits by scaling its range (Pillow would clip)."""
    values = np.asarray(image)  # [H, W] uint16 / >u2 / int32 / float32
    grey = _scale_to_8_bits(values, image.mode)
    pixels = np.empty((*grey.shape, 4), np.uint8)
    pixels[..., :3] = grey[..., None]
    has_alpha = isinstance(transparency, int) and not isinstance(transparency, bool)
    pixels[..., 3] = np.where(values == transparency, 0, 255) if has_alpha else 255
    return pixels, has_alpha


def _scale_to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """[H, W] wide grey -> [H, W] uint8: 16-bit by 257, floats in [0, 1] by 255, else min-max.

    "I" (32-bit) has no fixed white: values within 0..255 are 8-bit data, within 0..65535
    16-bit data; anything wider is stretched over its own range (deterministic per image).
    """
    wide = values.astype(np.float32)
    if mode.startswith("I;16"):
        scaled = wide / 257.0
    else:
        finite = np.isfinite(wide)
        wide = np.where(finite, wide, np.float32(0.0))
        low, high = (float(wide.min()), float(wide.max())) if wide.size else (0.0, 0.0)
        if mode == "F" and low >= 0.0 and high <= 1.0:
            scaled = wide * 255.0
        elif mode == "I" and low >= 0 and high <= 255:
            scaled = wide
        elif mode == "I" and low >= 0 and high <= 65535:
            scaled = wide / 257.0
        else:
            scaled = (wide - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- format sniffing -----------------------------------------------------------------------

# (magic bytes at offset 0, what they are, the Pillow format when we decode it)
_SIGNATURES: tuple[tuple[bytes, str, str | None], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "PNG"),
    (b"\xff\xd8\xff", "a JPEG image", "JPEG"),
    (b"GIF87a", "a GIF image", "GIF"),
    (b"GIF89a", "a GIF image", "GIF"),
    (b"II*\x00", "a TIFF image", "TIFF"),
    (b"MM\x00*", "a TIFF image", "TIFF"),
    (b"II+\x00", "a BigTIFF image, which is not supported", None),
    (b"MM\x00+", "a BigTIFF image, which is not supported", None),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image, which is not supported", None),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream, which is not supported", None),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image, which is not supported", None),
    (b"\xff\x0a", "a JPEG XL image, which is not supported", None),
    (b"\x00\x00\x01\x00", "an ICO icon, which is not supported", None),
    (b"8BPS", "a Photoshop PSD image, which is not supported", None),
    (b"qoif", "a QOI image, which is not supported", None),
    (b"v/1\x01", "an OpenEXR image, which is not supported", None),
    (b"#?RADIANCE", "a Radiance HDR image, which is not supported", None),
    (b"DDS ", "a DDS texture, which is not supported", None),
    (b"icns", "an Apple ICNS icon, which is not supported", None),
    (b"%!PS", "a PostScript/EPS document, which is not supported", None),
    (b"\xc5\xd0\xd3\xc6", "an EPS document, which is not supported", None),
    (b"%PDF", "a PDF document", None),
    (b"PK\x03\x04", "a ZIP archive", None),
    (b"PK\x05\x06", "a ZIP archive", None),
    (b"\x1f\x8b", "gzip data", None),
    (b"BZh", "bzip2 data", None),
    (b"\xfd7zXZ\x00", "xz data", None),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive", None),
    (b"Rar!\x1a\x07", "a RAR archive", None),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video", None),
    (b"OggS", "Ogg media", None),
    (b"ID3", "MP3 audio", None),
    (b"fLaC", "FLAC audio", None),
    (b"\x7fELF", "an ELF executable", None),
)
_RIFF_KINDS: dict[bytes, tuple[str, str | None]] = {
    b"WEBP": ("a WEBP image", "WEBP"),
    b"AVI ": ("an AVI video", None),
    b"WAVE": ("WAV audio", None),
}
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_BMP_DIB_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


def sniff_format(data: bytes) -> tuple[str, str | None]:
    """What the bytes are, from magic numbers: (a phrase for messages, Pillow format or None)."""
    for magic, what, pillow_format in _SIGNATURES:
        if data.startswith(magic):
            return what, pillow_format
    if data[:4] == b"RIFF" and data[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[data[8:12]]
    is_bmp = data[:2] == b"BM" and len(data) >= 18
    if is_bmp and struct.unpack_from("<I", data, 14)[0] in _BMP_DIB_HEADER_SIZES:
        return "a BMP image", "BMP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF image, which is not supported", None
        if brand in _HEIF_BRANDS:
            return "a HEIF/HEIC image, which is not supported", None
        return "an MP4/MOV video", None
    if data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "a PNM (PBM/PGM/PPM) image, which is not supported", None
    text_kind = _sniff_text(data)
    if text_kind is not None:
        return text_kind, None
    return f"unknown binary data starting with {data[:8].hex(' ')}", None


def _sniff_text(data: bytes) -> str | None:
    """HTML, SVG, XML, JSON or plain text; None when the bytes are not mostly text."""
    probe = data[:_TEXT_PROBE_BYTES]
    if probe.startswith(b"\xef\xbb\xbf"):
        probe = probe[3:]
    text = probe.decode("utf-8", errors="replace")
    if len(data) > _TEXT_PROBE_BYTES:  # the probe may cut a multi-byte character in two
        text = text.rstrip("\ufffd")
    if not text:
        return None
    printable = sum(char.isprintable() or char in "\t\r\n" for char in text)
    if printable / len(text) < _TEXT_MIN_PRINTABLE:
        return None
    head = text.lstrip().lower()
    if head.startswith(("<!doctype html", "<html")):
        return "an HTML document"
    if head.startswith("<svg") or (head.startswith("<?xml") and "<svg" in head):
        return "an SVG image (vector graphics), which is not supported"
    if head.startswith("<?xml"):
        return "an XML document"
    if head.startswith(("{", "[")) and _is_json(data):
        return "a JSON document"
    return "plain text"


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
