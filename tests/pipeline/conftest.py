"""Fixtures for the pipeline tests: the shared real prompts and the RGB variants built from them.

The prompts live outside the repository (../shared/data/prompts from the repo root); tests
that need them skip, saying so, when that folder is missing. Variants of an RGBA prompt, as
competition prompts may arrive:
- "white", "grey": composited on pure white / mid grey (128);
- "white-jpeg": the white variant re-encoded as JPEG, quality 90;
- "sweep-jpeg": on a studio-like sweep (250 in the centre falling to 228 in the corners, plus
  Gaussian sensor noise of sigma 2.5 levels), re-encoded as JPEG quality 90;
- "cluttered": on a defocused clutter: 40 random-colour ellipses and rectangles over a random
  two-colour gradient, Gaussian-blurred with sigma 1.5 % of the side (a shallow depth of field),
  plus sensor noise of sigma 4 levels; seeded per prompt.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

_REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout; a copy inside it (ignored by git) on machines that receive
# only the checkout, such as the GPU machine.
PROMPTS_DIR = next(
    (
        folder / "data" / "prompts"
        for folder in (_REPO.parent / "shared", _REPO / "shared")
        if (folder / "data" / "prompts").is_dir()
    ),
    _REPO.parent / "shared" / "data" / "prompts",
)
VARIANTS = ("white", "grey", "white-jpeg", "sweep-jpeg", "cluttered")
# Devices for the pipeline tests that run on both: "cuda" joins where a GPU is present (as
# `pytest -m gpu`), so CPU-only machines never see a skipped CUDA case.
DEVICES: list = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))
JPEG_QUALITY = 90


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """rgba [H, W, 4] uint8 over background [H, W, 3] or [3] -> [H, W, 3] uint8."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    blended = rgba[..., :3].astype(np.float32) * alpha + np.asarray(background, np.float32) * (
        1.0 - alpha
    )
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def cluttered_background(height: int, width: int, seed: int) -> np.ndarray:
    """[H, W, 3] float32: defocused random shapes over a gradient, with sensor noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    ramp = ((xs * np.cos(1.0) + ys * np.sin(1.0)) / (width + height))[..., None]
    image = (start * (1 - ramp) + end * ramp).astype(np.float32)
    for _ in range(40):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            axes = (int(rng.uniform(0.03, 0.25) * width), int(rng.uniform(0.03, 0.25) * height))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(image, (int(cx), int(cy)), axes, angle, 0, 360, colour, -1)
        else:
            dx, dy = rng.uniform(0.05, 0.35) * width, rng.uniform(0.05, 0.35) * height
            cv2.rectangle(image, (int(cx), int(cy)), (int(cx + dx), int(cy + dy)), colour, -1)
    image = cv2.GaussianBlur(image, (0, 0), 0.015 * max(height, width))
    return image + rng.normal(0, 4, image.shape).astype(np.float32)


def sweep_background(height: int, width: int, seed: int) -> np.ndarray:
    """[H, W, 3] float32: bright centre falling off to the corners, with sensor noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius2 = ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / (
        (width / 2) ** 2 + (height / 2) ** 2
    )
    grey = np.repeat((250 - 22 * radius2)[..., None], 3, axis=2)
    return grey + rng.normal(0, 2.5, grey.shape).astype(np.float32)


def make_variant(rgba: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """rgba [H, W, 4] uint8 -> the RGB prompt variant `name` (see the module docstring)."""
    height, width = rgba.shape[:2]
    if name == "white":
        return composite(rgba, np.full(3, 255.0))
    if name == "grey":
        return composite(rgba, np.full(3, 128.0))
    if name == "white-jpeg":
        return jpeg_roundtrip(composite(rgba, np.full(3, 255.0)))
    if name == "sweep-jpeg":
        return jpeg_roundtrip(
            composite(rgba, np.clip(sweep_background(height, width, seed), 0, 255))
        )
    if name == "cluttered":
        return composite(rgba, np.clip(cluttered_background(height, width, seed), 0, 255))
    raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")


def iou(matte: np.ndarray | None, alpha: np.ndarray) -> float:
    """IoU of matte > 0.5 (float in [0, 1]) against alpha > 127 (uint8); 0 for no matte."""
    if matte is None:
        return 0.0
    found, truth = matte > 0.5, alpha > 127
    return float((found & truth).sum() / max(1, (found | truth).sum()))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """The pipeline tests' tensors are small: on a shared 2-core machine a second intra-op
    thread only spins (measured: a 256^2 UV raster took 110 ms with two threads under load,
    4.5 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ImageHelpers:
    """The builders above, handed to tests as a fixture (conftest is not importable by name)."""

    composite = staticmethod(composite)
    jpeg_roundtrip = staticmethod(jpeg_roundtrip)
    make_variant = staticmethod(make_variant)
    iou = staticmethod(iou)


@dataclass
class Prompts:
    """The shared prompts, loaded lazily and cached for the session."""

    paths: list[Path]
    _cache: dict[int, np.ndarray] = field(default_factory=dict)

    def data(self, index: int) -> bytes:
        return self.paths[index].read_bytes()

    def rgba(self, index: int) -> np.ndarray:
        """[H, W, 4] uint8 of prompt `index` (read-only, cached)."""
        if index not in self._cache:
            with Image.open(self.paths[index]) as image:
                pixels = np.asarray(image.convert("RGBA"))
            pixels.setflags(write=False)
            self._cache[index] = pixels
        return self._cache[index]

    def variant(self, index: int, name: str) -> np.ndarray:
        return make_variant(self.rgba(index), name, seed=index)


@pytest.fixture(scope="session")
def helpers() -> ImageHelpers:
    return ImageHelpers()


@pytest.fixture(scope="session")
def prompts() -> Prompts:
    paths = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR} (needs ../shared/data/prompts)")
    return Prompts(paths)
