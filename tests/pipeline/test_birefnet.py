"""BiRefNet matting around a stand-in model (no weights here): its input and output handling,
the classical fallback, when prepare calls it, and MATTING's choice."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.birefnet import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIDE, BiRefNetMatting
from pipeline.decode import decode_image
from pipeline.matting import ClassicalMatting, classical_matte, make_matting
from pipeline.prepare import prepare_image
from pipeline.settings import PipelineSettings
from pipeline.weights import BIREFNET, write_marker
from tests.pipeline.test_matting import ring_on

CPU = torch.device("cpu")


class DarkIsObject:
    """Stands in for BiRefNet: logits high where the (de-normalised) input is not near white.
    Returns its side outputs and the final one last, as BiRefNet does."""

    def __init__(self, failure: Exception | None = None, empty: bool = False) -> None:
        self.inputs: list[torch.Tensor] = []
        self.failure, self.empty = failure, empty

    def __call__(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(pixels)
        if self.failure is not None:
            raise self.failure
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        brightness = (pixels * std + mean).mean(dim=1, keepdim=True)
        logits = (0.9 - brightness) * 40
        if self.empty:
            logits = torch.full_like(logits, -20.0)
        return [torch.zeros_like(logits), logits]


def test_the_matte_is_the_models_last_output_at_the_images_size():
    model = DarkIsObject()
    rgb, truth = ring_on((255, 255, 255), side=300)
    matte = BiRefNetMatting(model, CPU).matte(rgb)
    assert matte.shape == (300, 300) and matte.dtype == np.float32
    assert matte.min() >= 0.0 and matte.max() <= 1.0
    iou = ((matte > 0.5) & truth).sum() / ((matte > 0.5) | truth).sum()
    assert iou > 0.95
    # The model saw one 1024 x 1024 image, ImageNet-normalised (white = (1 - mean) / std).
    (seen,) = model.inputs
    assert seen.shape == (1, 3, INPUT_SIDE, INPUT_SIDE)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(seen[0, :, 0, 0], white, atol=1e-4)


@pytest.mark.parametrize(
    "model", [DarkIsObject(failure=RuntimeError("CUDA OOM")), DarkIsObject(empty=True)]
)
def test_a_failing_or_empty_model_hands_over_to_the_classical_matting(model):
    rgb, _ = ring_on((255, 255, 255))
    matte = BiRefNetMatting(model, CPU).matte(rgb)
    assert np.array_equal(matte, classical_matte(rgb))


def test_prepare_uses_it_only_without_a_real_alpha_matte():
    model = DarkIsObject()
    matting = BiRefNetMatting(model, CPU)
    settings = PipelineSettings(image_size=96)
    rgb, truth = ring_on((255, 255, 255))
    rgba = np.dstack((rgb, np.where(truth, 255, 0).astype(np.uint8)))
    for pixels, source, calls in ((rgba, "alpha", 0), (rgb, "matting", 1)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        prepared = prepare_image(decode_image(buffer.getvalue(), settings), settings, matting)
        assert prepared.matte_source == source and len(model.inputs) == calls


def test_matting_choice(tmp_path, monkeypatch):
    base = PipelineSettings(weights_dir=str(tmp_path))
    cuda = torch.device("cuda")  # only passed along: nothing runs on it here

    def choose(device, **values):
        return make_matting(dataclasses.replace(base, **values), device)

    matting, reason = choose(cuda, matting="classical")
    assert isinstance(matting, ClassicalMatting) and reason == "MATTING=classical"
    matting, reason = choose(CPU)
    assert isinstance(matting, ClassicalMatting) and "only on CUDA" in reason
    matting, reason = choose(cuda)
    assert isinstance(matting, ClassicalMatting)
    assert reason == f"MATTING=auto: BiRefNet weights ({BIREFNET.describe()}) missing in {tmp_path}"
    with pytest.raises(RuntimeError, match="MATTING=birefnet: BiRefNet weights"):
        choose(cuda, matting="birefnet")
    # With the weights: the pinned folder is what gets loaded.
    write_marker(tmp_path, BIREFNET)
    loaded = []

    def load(folder, device):
        loaded.append((folder, device))
        return BiRefNetMatting(DarkIsObject(), CPU)

    monkeypatch.setattr(BiRefNetMatting, "load", staticmethod(load))
    matting, reason = choose(cuda)
    assert matting.name == "birefnet" and loaded == [(BIREFNET.path(tmp_path), cuda)]
    assert reason == f"MATTING=auto: BiRefNet {BIREFNET.describe()} from {tmp_path}"
    matting, _ = choose(CPU, matting="birefnet")  # asked for: on any device
    assert matting.name == "birefnet"
