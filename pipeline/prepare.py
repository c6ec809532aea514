"""Decoded RGBA -> the object, centred in a square with a margin: the prepare stage.

The matte is the file's own alpha when it carries a cut-out, else background removal
(pipeline/matting.py), else the whole frame: a prompt always yields an image, because in the
competition a failure is a lost duel. The square crop is resampled with premultiplied colour
(no background colour bleeds into the edge), and fully transparent pixels take the colour of
the nearest solid object pixel, so no later stage can sample the prompt's background.
"""

from __future__ import annotations

import logging
import math
import time

import cv2
import numpy as np
import torch

from pipeline.matting import ClassicalMatting, Matting
from pipeline.settings import PipelineSettings
from pipeline.types import DecodedImage, PreparedImage

__all__ = ["prepare_image", "square_box"]

log = logging.getLogger("pipeline.prepare")

# Alpha at or above this is opaque: lossy WebP stores opaque as 254 (most pixels of the
# shared prompts), and other lossy codecs wander a few levels further.
OPAQUE_ALPHA = 250
# An alpha channel is a cut-out when at least this share of pixels is not opaque. Below it the
# transparency is decoration (rounded corners of radius 5 % cover 0.2 %); the prompts have 39 %
# or more.
MIN_TRANSPARENT_SHARE = 0.01
# Fewer object pixels (matte > 0.5) than this is no object: an empty alpha or an empty matte.
MIN_OBJECT_PIXELS = 16
# Pixels at least this opaque lend their colour to the transparent ones: their colour is the
# object's. Edge pixels of a matte blend the object with the background it was cut from
# (a red disc on white: 0.5 gives a pink fill, 0.95 a red one).
FILL_SOURCE_MIN_MASK = 0.95
# Pixels whose resampled mask is below one 8-bit level are transparent: their colour is filled.
FILL_TARGET_MAX_MASK = 1.0 / 255.0

# Transparent border around an enlarged crop: the bicubic kernel's reach.
_ENLARGE_FRAME_PX = 2
_DEFAULT_MATTING = ClassicalMatting()
_OPAQUE_8BIT = 255


def prepare_image(
    decoded: DecodedImage, settings: PipelineSettings, matting: Matting | None = None
) -> PreparedImage:
    """RGBA pixels -> PreparedImage: rgb [S, S, 3] and mask [S, S] float32 CPU tensors in [0, 1].

    S = settings.image_size; the object's bounding box (mask > 0.5) is centred and its long
    side spans 1 - 2 * settings.crop_margin of the square. Deterministic.
    """
    start = time.perf_counter()
    pixels = decoded.pixels
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be [H, W, 4] uint8, got {pixels.shape} {pixels.dtype}")
    # 1. The matte: the file's alpha, background removal, or the whole frame.
    matte, source = _choose_matte(decoded, matting or _DEFAULT_MATTING)
    # 2. The square around the object's bounding box, with the margin.
    box = square_box(matte, settings.crop_margin, settings.image_size)
    # 3. Crop (transparent outside the image) and resample with premultiplied colour.
    rgb, mask = _crop_and_resize(pixels, matte, box, settings.image_size)
    # 4. Transparent pixels take the nearest object colour.
    _fill_transparent(rgb, mask)
    prepared = PreparedImage(
        rgb=torch.from_numpy(np.ascontiguousarray(rgb)),
        mask=torch.from_numpy(np.ascontiguousarray(mask)),
        matte_source=source,
    )
    log.info(
        "prepare: %dx%d %s -> %dx%d, object %.0f %% of the square, %.1f ms",
        pixels.shape[1],
        pixels.shape[0],
        source,
        settings.image_size,
        settings.image_size,
        100.0 * float(mask.mean()),
        (time.perf_counter() - start) * 1e3,
    )
    return prepared


def _choose_matte(decoded: DecodedImage, matting: Matting) -> tuple[np.ndarray, str]:
    """-> ([H, W] uint8 matte, its source): the alpha if it is a cut-out, else matting, else all.

    An all-opaque alpha is ignored: the colour channels go to background removal as they are.
    An empty alpha (a fully transparent image) frames the whole image: its colour channels are
    whatever the encoder left there, not a picture to search.
    """
    pixels = decoded.pixels
    alpha = pixels[..., 3]
    whole_frame = np.full(alpha.shape, _OPAQUE_8BIT, np.uint8)
    # 1. The file's alpha: a cut-out is the matte; an empty one leaves nothing to look for.
    if decoded.has_alpha:
        object_pixels = np.count_nonzero(alpha > 127)
        if object_pixels < MIN_OBJECT_PIXELS:
            return whole_frame, "full-frame"
        transparent_pixels = np.count_nonzero(alpha < OPAQUE_ALPHA)
        if transparent_pixels >= MIN_TRANSPARENT_SHARE * alpha.size:
            return alpha, "alpha"
    # 2. Background removal on the colour channels. A failing matting (a model out of memory,
    #    a bug) must not lose the request: the whole frame is still a prompt.
    try:
        matte = matting.matte(np.ascontiguousarray(pixels[..., :3]))
        if matte is not None and matte.shape != alpha.shape:
            raise ValueError(f"a {matte.shape} matte for a {alpha.shape} image")
    except Exception:
        log.exception("matting %r failed; framing the whole image", matting.name)
        matte = None
    if matte is not None:
        matte_8bit = np.rint(np.clip(matte, 0.0, 1.0) * _OPAQUE_8BIT).astype(np.uint8)
        if np.count_nonzero(matte_8bit > 127) >= MIN_OBJECT_PIXELS:
            return matte_8bit, "matting"
    # 3. Nothing found: the whole frame is the object.
    return whole_frame, "full-frame"


def square_box(matte: np.ndarray, margin: float, size: int) -> tuple[float, float, float]:
    """matte: [H, W] uint8 -> (left, top, side): the square prepare samples, in source pixels.

    The square is centred on the bounding box of matte > 127 (mask > 0.5), and that box's long
    side spans 1 - 2 * margin of the square's side. It may reach outside the image. When it is
    larger than `size` (the output shrinks) it is snapped to whole source pixels, so an area
    filter can sample it: at most half a source pixel off the exact square.
    """
    object_pixels = matte > 127
    rows = np.flatnonzero(object_pixels.any(axis=1))
    columns = np.flatnonzero(object_pixels.any(axis=0))
    if rows.size == 0:  # callers pass a non-empty matte; frame the whole image regardless
        rows, columns = np.array([0, matte.shape[0] - 1]), np.array([0, matte.shape[1] - 1])
    top, bottom = float(rows[0]), float(rows[-1] + 1)  # the box's outer pixel edges
    left, right = float(columns[0]), float(columns[-1] + 1)
    side = max(bottom - top, right - left) / (1.0 - 2.0 * margin)
    square_left, square_top = (left + right - side) / 2.0, (top + bottom - side) / 2.0
    if side < size:
        return square_left, square_top, side
    side_px = math.floor(side + 0.5)
    shift = (side - side_px) / 2.0 + 0.5
    return (
        float(math.floor(square_left + shift)),
        float(math.floor(square_top + shift)),
        float(side_px),
    )


def _crop_and_resize(
    pixels: np.ndarray, matte: np.ndarray, box: tuple[float, float, float], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """pixels [H, W, 4] uint8 (RGB used), matte [H, W] uint8 -> rgb [S, S, 3], mask [S, S]
    float32 in [0, 1].

    Resampled premultiplied in uint16 (colour * alpha and alpha * 255: exact products, half the
    memory of float32): area averages when shrinking (the box is whole pixels then), bicubic
    at the exact square when enlarging.
    """
    left, top, side = box
    if side >= size:
        resized = _shrink(pixels, matte, left, top, side, size)
    else:
        resized = _enlarge(pixels, matte, left, top, side, size)
    coverage = resized[..., 3].astype(np.float32)  # alpha * 255, in [0, 65025]
    rgb_out = resized[..., :3].astype(np.float32) / np.maximum(coverage, 1.0)[..., None]
    np.clip(rgb_out, 0.0, 1.0, out=rgb_out)
    mask = np.clip(coverage * (1.0 / (_OPAQUE_8BIT * _OPAQUE_8BIT)), 0.0, 1.0)
    return rgb_out, mask


def _premultiply(pixels: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """pixels [h, w, 4] uint8, matte [h, w] uint8 -> [h, w, 4] uint16 (r*m, g*m, b*m, m*255)."""
    factors = cv2.merge([matte, matte, matte, np.full_like(matte, _OPAQUE_8BIT)])
    premultiplied = cv2.multiply(pixels, factors, dtype=cv2.CV_16U)
    np.multiply(matte, _OPAQUE_8BIT, out=premultiplied[..., 3], dtype=np.uint16)
    return premultiplied


def _shrink(
    pixels: np.ndarray, matte: np.ndarray, left: float, top: float, side: float, size: int
) -> np.ndarray:
    """-> [S, S, 4] uint16 premultiplied: a whole-pixel square, area-averaged."""
    height, width = matte.shape
    left_px, top_px, side_px = int(left), int(top), int(side)
    # 1. The part of the square inside the image, premultiplied.
    x0, y0 = min(max(left_px, 0), width), min(max(top_px, 0), height)
    x1, y1 = max(min(left_px + side_px, width), x0), max(min(top_px + side_px, height), y0)
    inside = _premultiply(pixels[y0:y1, x0:x1], matte[y0:y1, x0:x1])
    # 2. Transparent padding where the square leaves the image.
    padded = cv2.copyMakeBorder(
        inside,
        y0 - top_px,
        top_px + side_px - y1,
        x0 - left_px,
        left_px + side_px - x1,
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0, 0),
    )
    return cv2.resize(padded, (size, size), interpolation=cv2.INTER_AREA)


def _enlarge(
    pixels: np.ndarray, matte: np.ndarray, left: float, top: float, side: float, size: int
) -> np.ndarray:
    """-> [S, S, 4] uint16 premultiplied: the exact square, bicubic without ringing.

    Bicubic overshoots at hard edges (a flat 0.55 alpha rose to 0.66): every sample is clamped
    to the range of the source pixels around it, the usual anti-ringing clamp.
    """
    height, width = matte.shape
    # 1. The source pixels the bicubic kernel (radius 2) can reach, premultiplied, and a
    #    transparent frame: outside the image is nothing.
    x0, y0 = max(math.floor(left) - 2, 0), max(math.floor(top) - 2, 0)
    x1, y1 = min(math.ceil(left + side) + 2, width), min(math.ceil(top + side) + 2, height)
    inside = _premultiply(pixels[y0:y1, x0:x1], matte[y0:y1, x0:x1])
    frame = _ENLARGE_FRAME_PX
    inside = cv2.copyMakeBorder(inside, frame, frame, frame, frame, cv2.BORDER_CONSTANT, value=0)
    x0, y0 = x0 - frame, y0 - frame
    # 2. Output pixel centre u + 0.5 sits at source edge coordinate left + (u + 0.5) / scale.
    scale = size / side
    to_output = np.array(
        [
            [scale, 0.0, (x0 + 0.5 - left) * scale - 0.5],
            [0.0, scale, (y0 + 0.5 - top) * scale - 0.5],
        ]
    )

    def warp(image: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.warpAffine(
            image, to_output, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT
        )

    # 3. Bicubic, clamped between the local minimum and maximum of the source.
    neighbourhood = np.ones((3, 3), np.uint8)
    low = warp(cv2.erode(inside, neighbourhood), cv2.INTER_LINEAR)
    high = warp(cv2.dilate(inside, neighbourhood), cv2.INTER_LINEAR)
    return np.clip(warp(inside, cv2.INTER_CUBIC), low, high)


def _fill_transparent(rgb: np.ndarray, mask: np.ndarray) -> None:
    """In place: rgb [S, S, 3] under mask < FILL_TARGET_MAX_MASK <- nearest solid object colour."""
    transparent = mask < FILL_TARGET_MAX_MASK
    if not transparent.any() or mask.max() < FILL_TARGET_MAX_MASK:
        return
    # A translucent object (glass, smoke) may never reach FILL_SOURCE_MIN_MASK: its own most
    # opaque half lends the colour then.
    most_opaque = float(mask.max())
    solid = mask >= (
        FILL_SOURCE_MIN_MASK if most_opaque >= FILL_SOURCE_MIN_MASK else 0.5 * most_opaque
    )
    # Nearest solid pixel by OpenCV's labelled distance transform (5x5 chamfer, deterministic):
    # every solid pixel is its own label, numbered in raster order.
    _, nearest = cv2.distanceTransformWithLabels(
        (~solid).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    solid_colours = rgb[solid]  # [N, 3], raster order = label order
    rgb[transparent] = solid_colours[nearest[transparent] - 1]
