"""BiRefNet background removal (ZhengPeng7/BiRefNet, MIT) behind the `Matting` interface.

Zheng et al., "Bilateral Reference for High-Resolution Dichotomous Image Segmentation" (CAAI AIR
2024). The model is the pinned Hub snapshot (pipeline/weights.py), loaded with transformers'
`AutoModelForImageSegmentation` and the snapshot's own model code (`trust_remote_code`: its
birefnet.py, read from the pinned local folder, needs timm, kornia and einops). Inference as its
model card gives it: the image resized to 1024 x 1024, ImageNet normalisation, the sigmoid of
the last output, resized back.

prepare calls it only for prompts without a real alpha matte. It runs on the pipeline's device
from the CPU pool's threads: one call at a time (a lock), on its own CUDA stream, so it overlaps
the GPU worker's generation instead of queueing behind it on the default stream. If it fails or
finds nothing, the classical matting answers instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.matting import ClassicalMatting, Matting

__all__ = ["BiRefNetMatting"]

log = logging.getLogger("pipeline.prepare")

# The model card's input: 1024 x 1024, ImageNet mean and deviation.
INPUT_SIDE = 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fewer pixels above 0.5 than this is "nothing found": the classical matting gets its turn.
MIN_OBJECT_PIXELS = 16


class BiRefNetMatting:
    """rgb [H, W, 3] uint8 -> matte [H, W] float32 in [0, 1], classical matting as the fallback."""

    name = "birefnet"

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        device: torch.device,
        fallback: Matting | None = None,
    ) -> None:
        """`model`: [1, 3, 1024, 1024] normalised float32 -> logits [1, 1, 1024, 1024], or a
        list/tuple whose last element they are (BiRefNet returns its side outputs too)."""
        self._model = model
        self.device = device
        self._fallback = fallback or ClassicalMatting()
        self._lock = threading.Lock()
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> BiRefNetMatting:
        from transformers import AutoModelForImageSegmentation

        start = time.perf_counter()
        model = AutoModelForImageSegmentation.from_pretrained(str(folder), trust_remote_code=True)
        model.eval().to(device)
        log.info(
            "BiRefNet loaded from %s on %s, %.1f s", folder, device, time.perf_counter() - start
        )
        return cls(model, device)

    def matte(self, rgb: np.ndarray) -> np.ndarray | None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
        start = time.perf_counter()
        try:
            matte = self._predict(rgb)
        except Exception:
            log.exception("BiRefNet failed; classical matting instead")
            return self._fallback.matte(rgb)
        if np.count_nonzero(matte > 0.5) < MIN_OBJECT_PIXELS:
            log.info("BiRefNet found no object; classical matting instead")
            return self._fallback.matte(rgb)
        log.info(
            "matting birefnet: %dx%d, object %.0f %%, %.0f ms",
            rgb.shape[1],
            rgb.shape[0],
            100.0 * float((matte > 0.5).mean()),
            (time.perf_counter() - start) * 1e3,
        )
        return matte

    def _predict(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        stream = torch.cuda.stream(self._stream) if self._stream else contextlib.nullcontext()
        with self._lock, torch.no_grad(), stream:
            # 1. Upload as bytes, resize and normalise on the device.
            pixels = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float() / 255
            pixels = F.interpolate(
                pixels, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", antialias=True
            )
            mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
            # 2. The last output's sigmoid, back at the image's size.
            logits = self._model((pixels - mean) / std)
            if isinstance(logits, (list, tuple)):
                logits = logits[-1]
            probability = torch.sigmoid(logits.float())
            probability = F.interpolate(probability, size=(height, width), mode="bilinear")
            return probability[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)
