"""The whole pipeline as the server and the CLI drive it.

Three calls split one generation along the executor's lines:
  prepare(bytes)   CPU threads: decode, matte, crop            (many may run at once)
  stage(prepared)  CPU thread + side CUDA stream: pinned upload and the generator's own
                   preprocessing, ordered before the generation by an event
  generate(staged) the GPU worker, one at a time: generate, mesh, atlas, bake, glb
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.atlas import unwrap
from pipeline.bake import bake
from pipeline.decode import decode_image
from pipeline.generators import Generator, make_generator
from pipeline.glb import write_glb
from pipeline.mesh import process_mesh
from pipeline.prepare import prepare_image
from pipeline.settings import PipelineSettings
from pipeline.types import GlbParts, PreparedImage

__all__ = ["Generation", "Pipeline", "StagedImage", "resolve_device"]

log = logging.getLogger("pipeline")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    return torch.device(name)


@dataclass(frozen=True)
class StagedImage:
    prepared: PreparedImage  # on the pipeline's device
    features: Any  # the generator's preprocess(prepared), on the device
    ready: torch.cuda.Event | None  # recorded on the side stream once both are done


@dataclass(frozen=True)
class Generation:
    glb: GlbParts
    seed: int
    matte_source: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class _Clock:
    """Stage timer: milliseconds per named stage, synchronising the device when it is CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times_ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times_ms[stage] = (now - self._last) * 1e3
        self._last = now


class Pipeline:
    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.generator: Generator | None = None
        self._side_stream: torch.cuda.Stream | None = None

    def describe(self) -> dict[str, str]:
        name = self.generator.name if self.generator else self.settings.generator
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"generator": name, "device": device}

    def load(self) -> None:
        """Load the generator (weights, if any) and make the side stream."""
        self.generator = make_generator(self.settings, self.device)
        if self.device.type == "cuda":
            self._side_stream = torch.cuda.Stream(self.device)
        log.info("pipeline loaded: generator=%s device=%s", self.generator.name, self.device)

    def prepare(self, data: bytes) -> PreparedImage:
        """bytes -> object-centred square image (CPU; thread-safe; raises ServiceError)."""
        return prepare_image(decode_image(data, self.settings), self.settings)

    def stage(self, prepared: PreparedImage) -> StagedImage:
        """Upload and preprocess on the side stream, overlapping the running generation."""
        if self.generator is None:
            raise RuntimeError("Pipeline.load() must run before stage()")
        if self._side_stream is None:
            return StagedImage(prepared, self.generator.preprocess(prepared), None)
        pinned = PreparedImage(
            prepared.rgb.pin_memory(), prepared.mask.pin_memory(), prepared.matte_source
        )
        with torch.cuda.stream(self._side_stream):
            on_device = pinned.to(self.device, non_blocking=True)
            features = self.generator.preprocess(on_device)
            ready = torch.cuda.Event()
            ready.record(self._side_stream)
        return StagedImage(on_device, features, ready)

    def generate(self, staged: StagedImage, seed: int) -> Generation:
        """The GPU part, run by one worker thread at a time."""
        if self.generator is None:
            raise RuntimeError("Pipeline.load() must run before generate()")
        prepared = staged.prepared
        if staged.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(staged.ready)
            # Made on the side stream, used on this one: keep the allocator from reusing them.
            for tensor in (prepared.rgb, prepared.mask, *_tensors(staged.features)):
                tensor.record_stream(stream)
        clock = _Clock(self.device)
        asset = self.generator.generate(prepared, seed, staged.features)
        clock.lap("generate")
        mesh = process_mesh(asset, self.settings)
        clock.lap("mesh")
        uv_mesh = unwrap(mesh, self.settings)
        clock.lap("atlas")
        textured = bake(uv_mesh, asset, self.settings)
        clock.lap("bake")
        glb = write_glb(textured, self.settings)
        clock.lap("glb")
        stats = {**mesh.stats, **uv_mesh.stats, "faces": float(len(textured.faces))}
        return Generation(glb, seed, prepared.matte_source, clock.times_ms, stats)

    def run(self, data: bytes, seed: int) -> Generation:
        """The whole path in the calling thread (CLI, warm-up, tests)."""
        start = time.perf_counter()
        staged = self.stage(self.prepare(data))
        if staged.ready is not None:
            staged.ready.synchronize()
        prepare_ms = (time.perf_counter() - start) * 1e3
        result = self.generate(staged, seed)
        result.timings_ms["prepare"] = prepare_ms  # decode, matte, crop, upload, preprocess
        return result

    def warm_up(self) -> Generation:
        """One full generation on a built-in image, so the first request pays no start-up."""
        return self.run(warm_up_image(), seed=0)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a generator's features (a tensor, or a tuple/list/dict of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def warm_up_image() -> bytes:
    """A small RGBA PNG of a two-colour ring: exercises the matte, a hole and the texture."""
    import io

    from PIL import Image

    side = 256
    yy, xx = np.mgrid[0:side, 0:side]
    radius = np.hypot(xx - side / 2, yy - side / 2)
    ring = (radius < side * 0.4) & (radius > side * 0.18)
    pixels = np.zeros((side, side, 4), np.uint8)
    pixels[..., 0] = np.where(xx < side / 2, 220, 40)
    pixels[..., 1] = 120
    pixels[..., 2] = np.where(xx < side / 2, 40, 220)
    pixels[..., 3] = np.where(ring, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
