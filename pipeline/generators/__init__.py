"""Generators: one protocol, `generate(prepared_image, seed) -> RawAsset`, and their selection.

`trellis2` is the production generator (TRELLIS.2-4B, pipeline/generators/trellis2.py);
`inflate` the embedded, weight-free one (tests, CI, laptops, and the fallback when TRELLIS.2
fails or would miss a deadline). GENERATOR chooses:
  inflate   inflate;
  trellis2  TRELLIS.2, or the load fails (and /health says why);
  auto      TRELLIS.2 when its package imports and its pinned weights are found (fetched first
            when FETCH_WEIGHTS is on) and it loads; otherwise inflate.
The choice and its reason go to one log line and to `GET /`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset

__all__ = ["Generator", "Selection", "make_generator"]

log = logging.getLogger("pipeline")


class Generator(Protocol):
    """`preprocess` is the generator's own input preparation (resampling, normalising): the
    pipeline runs it for the next job on a side CUDA stream while the current job generates.
    It must be thread-safe and must not touch state that `generate` changes."""

    name: str

    def preprocess(self, image: PreparedImage) -> Any: ...

    def generate(self, image: PreparedImage, seed: int, features: Any = None) -> RawAsset: ...


@dataclass(frozen=True)
class Selection:
    generator: Generator
    reason: str  # why this generator, in words (logged once, reported by GET /)


def make_generator(settings: PipelineSettings, device: torch.device) -> Selection:
    from pipeline.generators.inflate import InflateGenerator

    if settings.generator == "inflate":
        return Selection(InflateGenerator(settings, device), "GENERATOR=inflate")
    from pipeline.generators.trellis2 import Trellis2Unavailable, load_trellis2

    if settings.generator == "trellis2":
        generator = load_trellis2(settings, device)  # raises: the load fails, /health says why
        return Selection(generator, f"GENERATOR=trellis2, weights in {settings.weights_dir}")
    try:
        generator = load_trellis2(settings, device)
    except Trellis2Unavailable as why:
        return Selection(InflateGenerator(settings, device), f"GENERATOR=auto: {why}")
    except Exception as error:  # it imports and has weights, but does not load
        log.exception("trellis2 failed to load")
        reason = f"GENERATOR=auto: trellis2 failed to load ({type(error).__name__}: {error})"
        return Selection(InflateGenerator(settings, device), reason)
    reason = (
        f"GENERATOR=auto: trellis2 imports and its pinned weights are in {settings.weights_dir}"
    )
    return Selection(generator, reason)
