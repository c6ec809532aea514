"""Generators: one protocol, `generate(prepared_image, seed) -> RawAsset`.

`inflate` is the embedded, weight-free generator (tests, CI, laptops, fallback).
"""

from __future__ import annotations

from typing import Protocol

import torch

from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset

__all__ = ["Generator", "make_generator"]


class Generator(Protocol):
    name: str

    def generate(self, image: PreparedImage, seed: int) -> RawAsset: ...


def make_generator(settings: PipelineSettings, device: torch.device) -> Generator:
    if settings.generator == "inflate":
        from pipeline.generators.inflate import InflateGenerator

        return InflateGenerator(settings, device)
    raise ValueError(f"unknown generator {settings.generator!r}")
