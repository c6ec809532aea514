"""prepare_image: matte choice, square crop with margin, premultiplied resampling, colour fill."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.decode import decode_image
from pipeline.matting import ClassicalMatting
from pipeline.prepare import prepare_image, square_box
from pipeline.settings import PipelineSettings
from pipeline.types import DecodedImage, PreparedImage

SETTINGS = PipelineSettings()
# Real prompts checked on the alpha path: props, a thin plant, a 2162 px character, a tree.
ALPHA_PROMPTS = (0, 1, 4, 8, 18, 20)
# The prepared mask against the prompt's alpha put through the same square crop.
MIN_ALPHA_IOU = 0.98
# Geometry tolerance in output pixels: a bounding box thresholded at 0.5 after resampling.
GEOMETRY_TOLERANCE_PX = 2.0
# When shrinking, the square is snapped to whole source pixels: half a pixel per edge.
SNAP_TOLERANCE_PX = 0.5


def rgba_image(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels=pixels, has_alpha=True, format="PNG")


def rgb_image(rgb: np.ndarray) -> DecodedImage:
    pixels = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    return DecodedImage(pixels=pixels, has_alpha=False, format="JPEG")


def disc(height: int, width: int, cx: float, cy: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.hypot(xs - cx, ys - cy) < radius


def ring_rgba(side: int = 200) -> np.ndarray:
    """A two-colour ring (outer radius 0.4, inner 0.18 of the side) on transparent black."""
    ring = disc(side, side, side / 2, side / 2, 0.4 * side) & ~disc(
        side, side, side / 2, side / 2, 0.18 * side
    )
    pixels = np.zeros((side, side, 4), np.uint8)
    pixels[..., :3] = (200, 60, 30)
    pixels[:, side // 2 :, :3] = (40, 90, 210)
    pixels[..., 3] = np.where(ring, 255, 0)
    return pixels


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) half-open box of mask > 0.5."""
    rows = np.flatnonzero((mask > 0.5).any(axis=1))
    columns = np.flatnonzero((mask > 0.5).any(axis=0))
    return columns[0], rows[0], columns[-1] + 1, rows[-1] + 1


def assert_contract(prepared: PreparedImage, size: int) -> None:
    assert prepared.rgb.shape == (size, size, 3) and prepared.mask.shape == (size, size)
    for tensor in (prepared.rgb, prepared.mask):
        assert tensor.dtype == torch.float32
        assert tensor.device.type == "cpu"
        assert tensor.is_contiguous()
        assert torch.isfinite(tensor).all()
        assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert prepared.matte_source in ("alpha", "matting", "full-frame")


def assert_centred_with_margin(mask: np.ndarray, margin: float) -> None:
    size = mask.shape[0]
    left, top, right, bottom = mask_box(mask)
    assert abs((left + right) / 2 - size / 2) <= GEOMETRY_TOLERANCE_PX
    assert abs((top + bottom) / 2 - size / 2) <= GEOMETRY_TOLERANCE_PX
    long_side = max(right - left, bottom - top)
    assert abs(long_side - (1 - 2 * margin) * size) <= GEOMETRY_TOLERANCE_PX
    for gap in (left, top, size - right, size - bottom):
        assert gap >= margin * size - GEOMETRY_TOLERANCE_PX


def area_weights(start: float, side: float, size: int, length: int) -> np.ndarray:
    """[size, length]: the share of output cell u covered by source pixel x (exact box areas)."""
    cells = start + np.arange(size + 1) * (side / size)  # output cell edges in source units
    pixels = np.arange(length + 1, dtype=np.float64)  # source pixel edges
    overlap = np.minimum(cells[1:, None], pixels[None, 1:]) - np.maximum(
        cells[:-1, None], pixels[None, :-1]
    )
    return np.clip(overlap, 0.0, None) * (size / side)


def reference_crop(alpha: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """An independent crop: the exact area average of alpha over the square (zero outside)."""
    left, top, side = box
    rows = area_weights(top, side, size, alpha.shape[0])
    columns = area_weights(left, side, size, alpha.shape[1])
    return rows @ (alpha / 255.0) @ columns.T


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


class NothingFound:
    name = "nothing"

    def matte(self, rgb: np.ndarray) -> np.ndarray | None:
        return None


# --- the alpha path on real prompts --------------------------------------------------------


@pytest.mark.parametrize("index", ALPHA_PROMPTS)
def test_alpha_path_on_real_prompts(prompts, index):
    decoded = decode_image(prompts.data(index), SETTINGS)
    prepared = prepare_image(decoded, SETTINGS)

    assert prepared.matte_source == "alpha"
    assert_contract(prepared, SETTINGS.image_size)
    alpha = decoded.pixels[..., 3]
    box = square_box(alpha, SETTINGS.crop_margin, SETTINGS.image_size)
    expected = reference_crop(alpha, box, SETTINGS.image_size)
    assert iou(prepared.mask.numpy() > 0.5, expected > 0.5) >= MIN_ALPHA_IOU
    # Centring and margin in source pixels: thin parts of a real object may fall under 0.5
    # once shrunk, so the output's own bounding box is only checked on solid shapes below.
    left, top, side = box
    box_left, box_top, box_right, box_bottom = mask_box(alpha / 255.0)
    assert abs(left + side / 2 - (box_left + box_right) / 2) <= 0.5 + SNAP_TOLERANCE_PX
    assert abs(top + side / 2 - (box_top + box_bottom) / 2) <= 0.5 + SNAP_TOLERANCE_PX
    long_side = max(box_right - box_left, box_bottom - box_top)
    assert abs(long_side - (1 - 2 * SETTINGS.crop_margin) * side) <= 2 * SNAP_TOLERANCE_PX


@pytest.mark.parametrize(("size", "margin"), [(64, 0.0), (256, 0.2), (777, 0.08)])
def test_size_and_margin_settings(prompts, size, margin):
    settings = dataclasses.replace(SETTINGS, image_size=size, crop_margin=margin)
    prepared = prepare_image(decode_image(prompts.data(2), settings), settings)
    assert_contract(prepared, size)
    assert_centred_with_margin(prepared.mask.numpy(), margin)


def test_transparent_pixels_take_the_object_colour(prompts):
    # Paint everything the alpha hides pure green: none of it may reach the prepared image.
    pixels = np.array(prompts.rgba(3))
    pixels[pixels[..., 3] == 0, :3] = (0, 255, 0)
    prepared = prepare_image(rgba_image(pixels), SETTINGS)
    rgb, mask = prepared.rgb.numpy(), prepared.mask.numpy()
    transparent = mask == 0
    assert transparent.mean() > 0.2
    greenness = rgb[..., 1] - (rgb[..., 0] + rgb[..., 2]) / 2
    assert greenness[transparent].max() < 0.5
    assert not np.all(rgb[transparent] == rgb[transparent][0])  # filled, not one flat colour


# --- matte choice --------------------------------------------------------------------------


def test_fully_transparent_image_is_full_frame():
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[..., :3] = (10, 120, 200)
    prepared = prepare_image(rgba_image(pixels), SETTINGS)
    assert prepared.matte_source == "full-frame"
    assert_contract(prepared, SETTINGS.image_size)
    assert_centred_with_margin(prepared.mask.numpy(), SETTINGS.crop_margin)


def test_all_opaque_rgba_goes_to_matting(prompts, helpers):
    rgba = prompts.rgba(8)
    pixels = np.dstack(
        [helpers.make_variant(rgba, "white"), np.full(rgba.shape[:2], 254, np.uint8)]
    )
    prepared = prepare_image(rgba_image(pixels), SETTINGS)
    assert prepared.matte_source == "matting"
    box = square_box(rgba[..., 3], SETTINGS.crop_margin, SETTINGS.image_size)
    expected = reference_crop(rgba[..., 3], box, SETTINGS.image_size)
    assert iou(prepared.mask.numpy() > 0.5, expected > 0.5) >= 0.95


def test_nothing_found_is_full_frame():
    rgb = np.full((50, 80, 3), 200, np.uint8)
    for matting in (NothingFound(), ClassicalMatting()):
        prepared = prepare_image(rgb_image(rgb), SETTINGS, matting)
        assert prepared.matte_source == "full-frame"
        mask = prepared.mask.numpy()
        assert_centred_with_margin(mask, SETTINGS.crop_margin)
        # The frame is 80 wide: the long side spans 1 - 2 * margin, the rest is padding.
        assert abs(mask_box(mask)[3] - mask_box(mask)[1] - 50 / 80 * 0.84 * 512) <= 2


def test_failing_matting_still_gives_an_image(caplog):
    class Broken:
        name = "broken"

        def matte(self, rgb: np.ndarray) -> np.ndarray | None:
            raise RuntimeError("CUDA out of memory")

    class WrongShape:
        name = "wrong-shape"

        def matte(self, rgb: np.ndarray) -> np.ndarray | None:
            return np.ones((3, 3), np.float32)

    for matting in (Broken(), WrongShape()):
        prepared = prepare_image(rgb_image(np.zeros((40, 60, 3), np.uint8)), SETTINGS, matting)
        assert prepared.matte_source == "full-frame"
        assert matting.name in caplog.text


def test_a_matting_plugs_in():
    class Centre:
        name = "centre"

        def matte(self, rgb: np.ndarray) -> np.ndarray | None:
            matte = np.zeros(rgb.shape[:2], np.float32)
            matte[10:20, 30:60] = 1.0
            return matte

    prepared = prepare_image(rgb_image(np.zeros((40, 90, 3), np.uint8)), SETTINGS, Centre())
    assert prepared.matte_source == "matting"
    assert_centred_with_margin(prepared.mask.numpy(), SETTINGS.crop_margin)


# --- shapes of objects ---------------------------------------------------------------------


def test_ring_keeps_its_hole_on_both_paths(helpers):
    rgba = ring_rgba()
    for decoded in (rgba_image(rgba), rgb_image(helpers.composite(rgba, np.full(3, 255.0)))):
        prepared = prepare_image(decoded, SETTINGS)
        mask = prepared.mask.numpy()
        centre = SETTINGS.image_size // 2
        hole = mask[centre - 40 : centre + 40, centre - 40 : centre + 40]
        assert hole.max() < 0.01, prepared.matte_source
        assert mask[centre, 60:100].min() > 0.99  # the ring itself is solid


def test_object_touching_the_border(helpers):
    # A disc cut by the right edge: the square reaches past the image, padded transparent.
    height, width = 300, 400
    inside = disc(height, width, cx=360, cy=150, radius=80)
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = (30, 160, 60)
    rgba[..., 3] = np.where(inside, 255, 0)
    white = rgb_image(helpers.composite(rgba, np.full(3, 255.0)))
    for decoded, source in ((rgba_image(rgba), "alpha"), (white, "matting")):
        prepared = prepare_image(decoded, SETTINGS)
        assert prepared.matte_source == source
        mask = prepared.mask.numpy()
        assert_centred_with_margin(mask, SETTINGS.crop_margin)
        expected = reference_crop(rgba[..., 3], square_box(rgba[..., 3], 0.08, 512), 512)
        assert iou(mask > 0.5, expected > 0.5) >= 0.97


def test_matting_fill_is_the_object_colour_not_the_background(helpers):
    rgba = np.zeros((240, 320, 4), np.uint8)
    rgba[..., :3] = (210, 30, 40)
    rgba[..., 3] = np.where(disc(240, 320, 160, 120, 70), 255, 0)
    prepared = prepare_image(rgb_image(helpers.composite(rgba, np.full(3, 255.0))), SETTINGS)
    rgb, mask = prepared.rgb.numpy(), prepared.mask.numpy()
    transparent = mask == 0
    assert transparent.mean() > 0.3
    assert np.abs(rgb[transparent] - np.array([210, 30, 40]) / 255).max() < 0.1


def test_translucent_object_still_fills_its_surroundings():
    rgba = ring_rgba()
    rgba[..., 3] = np.where(rgba[..., 3] > 0, 140, 0)  # a glass ring: alpha 0.55 at most
    prepared = prepare_image(rgba_image(rgba), SETTINGS)
    rgb, mask = prepared.rgb.numpy(), prepared.mask.numpy()
    assert prepared.matte_source == "alpha"
    assert mask.max() <= 140 / 255 + 1e-6  # no bicubic overshoot
    assert rgb[mask == 0].max(axis=1).min() > 0.3  # filled with the ring's colours, not black


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (60, 300), (301, 59)])
def test_tiny_and_thin_images(height, width):
    rng = np.random.default_rng(height * width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    prepared = prepare_image(rgb_image(rgb), SETTINGS)
    assert_contract(prepared, SETTINGS.image_size)


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["rgba", "white", "cluttered"])
def test_same_bytes_give_identical_tensors(prompts, helpers, variant):
    rgba = prompts.rgba(5)
    image = Image.fromarray(rgba if variant == "rgba" else helpers.make_variant(rgba, variant))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    first = prepare_image(decode_image(data, SETTINGS), SETTINGS)
    second = prepare_image(decode_image(data, SETTINGS), SETTINGS)
    assert first.matte_source == second.matte_source
    assert torch.equal(first.rgb, second.rgb) and torch.equal(first.mask, second.mask)
