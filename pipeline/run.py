"""The whole pipeline as the server and the CLI drive it.

Three calls split one generation along the executor's lines:
  prepare(bytes)   CPU threads: decode, matte, crop            (many may run at once)
  stage(prepared)  CPU thread + side CUDA stream: pinned upload and the generator's own
                   preprocessing, ordered before the generation by an event
  generate(staged) the GPU worker, one at a time: generate, mesh, atlas, bake, glb

When the generator is not inflate (TRELLIS.2), `generate_fallback(staged)` answers a job from
inflate on the CPU instead: the executor calls it when `generate` raised (its memory released
first, a CUDA OOM included) or would miss the job's deadline. It reads the staged image's host
copy and touches no GPU state, so it can run while an abandoned generation still holds the GPU.

A sticky CUDA fault (an illegal memory access, say) leaves the process's CUDA context unusable:
every later CUDA call fails, the pinned upload in `stage` included. `device_fault()` tells one
apart from an ordinary failure; after one, `stage_on_host` and `generate_fallback` (inflate on
the CPU, whatever the main generator) still answer jobs, until the process is restarted.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kernels import triton_available, triton_status
from pipeline.atlas import unwrap, warm_up_kernels
from pipeline.bake import bake
from pipeline.decode import decode_image
from pipeline.errors import GenerationFailed
from pipeline.generators import Generator, make_generator
from pipeline.generators.inflate import InflateGenerator
from pipeline.glb import write_glb
from pipeline.matting import Matting, make_matting
from pipeline.mesh import process_mesh
from pipeline.prepare import prepare_image
from pipeline.profiling import mark
from pipeline.settings import PipelineSettings
from pipeline.types import GlbParts, PreparedImage, RawAsset

__all__ = [
    "Generation",
    "GenerationAbandoned",
    "Pipeline",
    "StagedImage",
    "kernel_backend",
    "resolve_device",
]

log = logging.getLogger("pipeline")

CPU = torch.device("cpu")
FALLBACK_NAME = "inflate (fallback)"


class GenerationAbandoned(Exception):
    """The executor answered this job from the fallback; this run's result would be discarded."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    return torch.device(name)


def kernel_backend(device: torch.device) -> tuple[str, bool]:
    """What runs the hot ops on `device` -> (description, whether that is a degraded path).

    On CUDA without Triton every kernel's torch twin runs instead: the same kind of result,
    but slower, other bytes, and the atlas lays pieces out by their boxes (the raster layout
    is Triton's), so its textures get fewer texels. That is worth a warning; off CUDA the
    torch paths are the design.
    """
    if device.type != "cuda":
        return f"torch on {device.type}", False
    if triton_available():
        return triton_status(), False
    return f"torch on cuda: {triton_status()}", True


@dataclass(frozen=True)
class StagedImage:
    prepared: PreparedImage  # on the pipeline's device
    features: Any  # the generator's preprocess(prepared), on the device
    ready: torch.cuda.Event | None  # recorded on the side stream once both are done
    host: PreparedImage | None = None  # the same image on the host, for the CPU fallback


@dataclass(frozen=True)
class Generation:
    glb: GlbParts
    seed: int
    matte_source: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    generator: str = ""  # the generator that made it ("trellis2", "inflate (fallback)", ...)


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
        mark(stage)  # perf/profile.py's step timings; nothing when not profiling


class Pipeline:
    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.generator: Generator | None = None
        self.matting: Matting | None = None  # None until load(): prepare uses the classical one
        self._fallback: Generator | None = None  # inflate on the CPU, when the main is not inflate
        self._fault_fallback: Generator | None = None  # the same, made after a fault otherwise
        self._reasons = {"generator_selection": "", "matting_selection": ""}
        self._side_stream: torch.cuda.Stream | None = None

    @property
    def has_fallback(self) -> bool:
        return self._fallback is not None

    def describe(self) -> dict[str, str]:
        name = self.generator.name if self.generator else self.settings.generator
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        described = {"generator": name, "device": device, "kernels": kernel_backend(self.device)[0]}
        if self.generator is not None:
            matting = self.matting.name if self.matting else "classical"
            fallback = f"{FALLBACK_NAME} on the CPU" if self._fallback else "none"
            described.update(matting=matting, fallback=fallback, **self._reasons)
        return described

    def load(self) -> None:
        """Choose and load the generator and the matting (weights, if any), make the side stream."""
        selection = make_generator(self.settings, self.device)
        self.generator = selection.generator
        self._reasons["generator_selection"] = selection.reason
        log.info("generator: %s (%s)", self.generator.name, selection.reason)
        if self.generator.name != "inflate":
            self._fallback = InflateGenerator(self.settings, CPU)
        self.matting, matting_reason = make_matting(self.settings, self.device)
        self._reasons["matting_selection"] = matting_reason
        log.info("matting: %s (%s)", self.matting.name, matting_reason)
        if self.device.type == "cuda":
            self._side_stream = torch.cuda.Stream(self.device)
        kernels, degraded = kernel_backend(self.device)
        if degraded:
            log.warning("kernels: %s; slower, and the atlas packs pieces by their boxes", kernels)
        else:
            log.info("kernels: %s", kernels)
        log.info("pipeline loaded: generator=%s device=%s", self.generator.name, self.device)

    def prepare(self, data: bytes) -> PreparedImage:
        """bytes -> object-centred square image (CPU; thread-safe; raises ServiceError)."""
        return prepare_image(decode_image(data, self.settings), self.settings, self.matting)

    def stage(self, prepared: PreparedImage) -> StagedImage:
        """Upload and preprocess on the side stream, overlapping the running generation."""
        if self.generator is None:
            raise RuntimeError("Pipeline.load() must run before stage()")
        if self._side_stream is None:
            return StagedImage(prepared, self.generator.preprocess(prepared), None, prepared)
        pinned = PreparedImage(
            prepared.rgb.pin_memory(), prepared.mask.pin_memory(), prepared.matte_source
        )
        with torch.cuda.stream(self._side_stream):
            on_device = pinned.to(self.device, non_blocking=True)
            features = self.generator.preprocess(on_device)
            ready = torch.cuda.Event()
            ready.record(self._side_stream)
        return StagedImage(on_device, features, ready, pinned)

    def generate(
        self, staged: StagedImage, seed: int, abandoned: threading.Event | None = None
    ) -> Generation:
        """The GPU part, run by one worker thread at a time.

        `abandoned` set (by the executor, whose fallback answered the job): stop at the next
        stage boundary with GenerationAbandoned. Any other failure is logged, the memory the
        failed run held is released (a CUDA OOM included) and GenerationFailed raised, so the
        next job finds the device as free as it can be.
        """
        if self.generator is None:
            raise RuntimeError("Pipeline.load() must run before generate()")
        if abandoned is not None and abandoned.is_set():
            raise GenerationAbandoned("answered by the fallback before it started")
        try:
            return self._generate(staged, seed, abandoned)
        except GenerationAbandoned:
            raise
        except Exception as error:
            log.error("generate with %s failed", self.generator.name, exc_info=error)
            failure = f"{type(error).__name__}: {error}"
        # Out of the except block the exception and its frames are gone: what they held is free.
        _release_memory(self.device)
        raise GenerationFailed(f"generate failed: {failure}")

    def stage_on_host(self, prepared: PreparedImage) -> StagedImage:
        """A staged image for `generate_fallback` only: no upload, no CUDA call (after a fault)."""
        return StagedImage(prepared, None, None, prepared)

    def device_fault(self) -> str | None:
        """None while the device works; else why not (a sticky CUDA error, which every later
        CUDA call in this process would raise again). Waits for the device's queued work.
        Running out of memory is not a fault."""
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.synchronize(self.device)
            torch.ones(1, device=self.device).add_(1).item()
        except torch.OutOfMemoryError:
            return None
        except RuntimeError as error:
            first_line = (str(error).splitlines() or [""])[0]
            return f"{type(error).__name__}: {first_line}"
        return None

    def generate_fallback(self, staged: StagedImage, seed: int) -> Generation:
        """Inflate on the CPU from the staged image's host copy (no GPU work, any thread).
        Without a fallback (the main generator is inflate) one is made at the first call: the
        executor asks for it only after a device fault."""
        if self.generator is None:
            raise RuntimeError("Pipeline.load() must run before generate_fallback()")
        fallback = self._fallback
        if fallback is None:
            if self._fault_fallback is None:
                self._fault_fallback = InflateGenerator(self.settings, CPU)
            fallback = self._fault_fallback
        host = staged.host if staged.host is not None else staged.prepared.to(CPU)
        clock = _Clock(CPU)
        asset = fallback.generate(host, seed)
        clock.lap("generate")
        return self._finish(asset, host.matte_source, seed, clock, FALLBACK_NAME)

    def _generate(
        self, staged: StagedImage, seed: int, abandoned: threading.Event | None
    ) -> Generation:
        assert self.generator is not None
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
        if abandoned is not None and abandoned.is_set():
            raise GenerationAbandoned("answered by the fallback while this generated")
        return self._finish(asset, prepared.matte_source, seed, clock, self.generator.name)

    def _finish(
        self, asset: RawAsset, matte_source: str, seed: int, clock: _Clock, generator: str
    ) -> Generation:
        """The post-processing: raw asset -> GLB (mesh, atlas, bake, glb)."""
        mesh = process_mesh(asset, self.settings)
        clock.lap("mesh")
        uv_mesh = unwrap(mesh, self.settings)
        clock.lap("atlas")
        textured = bake(uv_mesh, asset, self.settings)
        clock.lap("bake")
        glb = write_glb(textured, self.settings)
        clock.lap("glb")
        stats = {**mesh.stats, **uv_mesh.stats, "faces": float(len(textured.faces))}
        return Generation(glb, seed, matte_source, clock.times_ms, stats, generator)

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
        """One full generation on a built-in image, so the first request pays no start-up
        (model kernels, the Triton kernels' compilation, the simplification workers), then the
        atlas kernels' variants its small mesh does not reach (`atlas.warm_up_kernels`); the
        matting's first call on an opaque copy; the fallback's first run, when there is one."""
        self.prepare(warm_up_image(opaque=True))
        result = self.run(warm_up_image(), seed=0)
        warm_up_kernels(self.settings, self.device)
        if self._fallback is not None:
            self.generate_fallback(self.stage(self.prepare(warm_up_image())), seed=0)
        return result


def _release_memory(device: torch.device) -> None:
    """Collect garbage and hand the CUDA caching allocator's free blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a generator's features (a tensor, or a tuple/list/dict of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def warm_up_image(opaque: bool = False) -> bytes:
    """A small RGBA PNG of a two-colour ring: exercises the matte, a hole and the texture.

    `opaque`: the ring on white without alpha, for the matting.
    """
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
    if opaque:
        pixels[~ring, :3] = 255
        Image.fromarray(pixels[..., :3], "RGB").save(buffer, format="PNG")
    else:
        Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
