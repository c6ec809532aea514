"""Generators: one protocol, `generate(prepared_image, seed) -> RawAsset`.

`inflate` is the embedded, weight-free generator (tests, CI, laptops, fallback).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset

__all__ = ["Generator", "make_generator"]


class Generator(Protocol):
    """`preprocess` is the generator's own input preparation (resampling, normalising): the
    pipeline runs it for the next job on a side CUDA stream while the current job generates.
    It must be thread-safe and must not touch state that `generate` changes."""

    name: str

    def preprocess(self, image: PreparedImage) -> Any: ...

    def generate(self, image: PreparedImage, seed: int, features: Any = None) -> RawAsset: ...


def make_generator(settings: PipelineSettings, device: torch.device) -> Generator:
    if settings.generator == "inflate":
        from pipeline.generators.inflate import InflateGenerator

        return InflateGenerator(settings, device)
    raise ValueError(f"unknown generator {settings.generator!r}")
