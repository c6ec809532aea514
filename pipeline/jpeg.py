"""Baseline JPEG encoded in horizontal strips on threads, joined into one image by restart
markers.

One libjpeg call on a 2048² texture takes ~40 ms of one core on the GPU machine's host, on
the GPU worker's critical path. A baseline JPEG is a run of 8×8 blocks (4:4:4: one block of
each component per MCU) coded one after another; the only state a block carries to the next
is each component's previous DC value and the bit position. A restart marker (RSTm, ITU-T
T.81 §B.2.1, §F.1.2.3) resets both: the coder pads its last byte with 1-bits, writes RSTm
(m counting 0..7 and round again) and starts the next interval with DC predictions of 0. The
interval length, in MCUs, is declared once by a DRI segment before the scan.

So a strip of whole MCU rows encoded alone, with the same quantisation and the same (standard)
Huffman tables, is exactly one restart interval: its entropy-coded bytes, between its scan
header and its EOI, can stand between two restart markers of the whole image. The strips are
encoded by OpenCV's libjpeg on a thread pool (cv2 releases the GIL while it encodes; Pillow's
encoder does not), and joined as: strip 0's header with the frame's height set to the whole
image's and a DRI segment added, then the strips' scans separated by RST0, RST1, ..., then EOI.
Every block is coded from the same pixels with the same tables as in a one-call encode, so a
decoder gives exactly the same pixels (tests/pipeline/test_jpeg.py checks it).

The strips are cut by the image's size alone (STRIP_ROWS), never by the thread count, so the
bytes are the same on every host. An image of one strip is one plain encode.
"""

from __future__ import annotations

import logging
import struct

import cv2
import numpy as np

from pipeline.texture_threads import texture_pool

__all__ = ["STRIP_ROWS", "encode_jpeg"]

log = logging.getLogger("pipeline.jpeg")

# Rows per strip: a multiple of the 8-row MCU of 4:4:4. A 2048² texture is 8 strips, and
# each strip's interval (32 MCU rows of 256) stays far below DRI's 16-bit limit.
STRIP_ROWS = 256
MCU_SIZE = 8  # 4:4:4: every component sampled 1×1, one 8×8 block each per MCU (grey: one)
MAX_INTERVAL = 0xFFFF  # DRI's restart interval is a 16-bit count of MCUs

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
SOF0, DHT, JPG, DAC, SOS, DRI = 0xC0, 0xC4, 0xC8, 0xCC, 0xDA, 0xDD  # SOFn: C0-CF but C4, C8, CC
RST0 = 0xD0


def _encode_one(pixels: np.ndarray, quality: int) -> bytes:
    """[H, W, 3] uint8 RGB -> one baseline 4:4:4 JPEG with standard Huffman tables; [H, W]
    uint8 -> one grey (one-component) baseline JPEG."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY, quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        cv2.IMWRITE_JPEG_OPTIMIZE, 0,  # per-image Huffman tables would differ between strips
        cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
    ]  # fmt: skip
    ordered = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", ordered, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {pixels.shape} image as JPEG")
    return encoded.tobytes()


def _split(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A one-scan baseline JPEG -> its segments up to and with the scan header as (marker,
    bytes with marker), and the entropy-coded bytes between the scan header and EOI."""
    if not (data.startswith(SOI) and data.endswith(EOI)):
        raise ValueError("not a JPEG from SOI to EOI")
    segments: list[tuple[int, bytes]] = []
    at = len(SOI)
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError(f"no marker at byte {at}")
        marker = data[at + 1]
        (length,) = struct.unpack_from(">H", data, at + 2)
        segments.append((marker, data[at : at + 2 + length]))
        at += 2 + length
        if marker == SOS:
            return segments, data[at : -len(EOI)]
    raise ValueError("no scan")


def _joined(strips: list[bytes], height: int, interval: int) -> bytes:
    """Strips of one width, encoded alike -> one JPEG of `height` rows, restart markers every
    `interval` MCUs. Raises ValueError if the strips' headers are not alike."""
    first, _ = _split(strips[0])
    head = [SOI]
    frames = [m for m, _ in first if 0xC0 <= m <= 0xCF and m not in (DHT, JPG, DAC)]
    if frames != [SOF0]:
        raise ValueError(f"expected one baseline frame (SOF0), got markers {frames}")
    for marker, segment in first:
        if marker == SOF0:  # FF C0, length (2), precision (1), height (2), width (2), ...
            segment = segment[:5] + struct.pack(">H", height) + segment[7:]
        elif marker == SOS:
            head.append(struct.pack(">BBHH", 0xFF, DRI, 4, interval))
        elif marker == DRI:
            raise ValueError("the encoder already wrote restart markers")
        head.append(segment)
    scans = []
    for index, strip in enumerate(strips):
        segments, scan = _split(strip)
        alike = [s for m, s in segments if m != SOF0] == [s for m, s in first if m != SOF0]
        if not alike:
            raise ValueError(f"strip {index} was not encoded with strip 0's tables")
        if index:
            scans.append(bytes((0xFF, RST0 + (index - 1) % 8)))
        scans.append(scan)
    return b"".join(head) + b"".join(scans) + EOI


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """[H, W, 3] uint8 RGB or [H, W] uint8 grey, C-contiguous -> baseline JPEG (4:4:4, or one
    component), standard Huffman tables, no metadata: strips of STRIP_ROWS rows encoded in
    parallel and joined by restart markers (module docstring). Deterministic: the same pixels
    give the same bytes on any host."""
    height, width = pixels.shape[:2]
    mcus_per_row = -(-width // MCU_SIZE)
    rows = min(STRIP_ROWS // MCU_SIZE, MAX_INTERVAL // mcus_per_row) * MCU_SIZE
    if rows == 0 or height <= rows:
        return _encode_one(pixels, quality)
    cuts = range(0, height, rows)
    strips = list(texture_pool().map(lambda y: _encode_one(pixels[y : y + rows], quality), cuts))
    try:
        return _joined(strips, height, mcus_per_row * rows // MCU_SIZE)
    except ValueError as error:  # an encoder that writes other JPEGs than the ones read here
        log.warning("jpeg: strips not joinable (%s); encoding in one call", error)
        return _encode_one(pixels, quality)
