"""A fake pipeline with the surface of `pipeline.run.Pipeline`, and request builders.

`FakePipeline` does no real work: it records every call (which, on which data, on which
thread, when it started and ended), can be held at a gate (a `threading.Event`) or slowed
by a sleep, and fails on demand the way the real pipeline does:
  - prepare: data without an image signature -> UnsupportedMediaType (415);
             data containing b"crash-prepare" -> RuntimeError (an unexpected bug);
  - generate: data containing b"boom" -> RuntimeError (the device still works);
  - a device fault, as a sticky CUDA error makes one: data containing b"fault" breaks the
    device in generate, b"stage-fault" in stage; from then on `device_fault()` says why, and
    stage and generate raise, as every CUDA call would (`stage_on_host` still works).
With `fallback=True` it also has the fallback the executor guards TRELLIS.2 with
(`generate_fallback`, recorded as "fallback"), which any fake has after a device fault;
`generate_times` slows chosen jobs down.
Every gate wait has a timeout, so a test that forgets to open one fails instead of hanging.
"""

from __future__ import annotations

import gc
import io
import threading
import time
import weakref
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from PIL import Image

from pipeline.errors import UnsupportedMediaType
from pipeline.settings import PipelineSettings
from pipeline.types import GlbParts

__all__ = [
    "FAULT",
    "Call",
    "FakeGeneration",
    "FakePipeline",
    "big_glb",
    "multipart_body",
    "orchestrator_form",
    "png",
    "raw_generate_request",
    "small_glb",
]

FAULT = "an illegal memory access was encountered (fake)"
GATE_TIMEOUT_S = 10.0  # longer than any test needs, shorter than a CI job's patience
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def png(tag: bytes = b"", side: int = 8) -> bytes:
    """A real PNG (RGBA, side x side), with `tag` appended after IEND to tell jobs apart."""
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (200, 30, 30, 255)).save(buffer, format="PNG")
    return buffer.getvalue() + tag


def small_glb() -> GlbParts:
    """Three chunks of the three kinds the writer emits: bytes, bytearray view, array view."""
    return GlbParts(
        (
            b"glTF\x02\x00\x00\x00" + b"\x00" * 4,
            memoryview(bytearray(b"JSON-chunk" * 10)),
            memoryview(np.arange(64, dtype=np.float32)),  # format "f", 256 bytes
        )
    )


def big_glb() -> GlbParts:
    """A 9 MiB float32 view between two small chunks: more than two 4 MiB writes."""
    floats = np.random.default_rng(0).random(9 * 1024 * 1024 // 4, dtype=np.float32)
    return GlbParts((b"glTF-head", memoryview(floats), b"tail"))


@dataclass(frozen=True)
class FakeGeneration:
    glb: GlbParts
    seed: int
    matte_source: str = "alpha"
    timings_ms: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    generator: str = "fake"


@dataclass(frozen=True)
class _FakePrepared:
    data: bytes


class _FakeStaged:
    """An image staged on the fake's device (a plain object: weak references to it work)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True)
class Call:
    name: str  # load, warm_up, prepare, stage, stage_on_host, device_fault, generate, fallback
    data: bytes | None
    seed: int | None  # generate's seed
    thread: int
    start: float
    end: float
    abandoned: bool = False  # generate: its abandoned event was set when it ended


class FakePipeline:
    def __init__(
        self,
        *,
        glb: GlbParts | None = None,
        generate_s: float = 0.0,
        prepare_s: dict[bytes, float] | None = None,
        load_error: Exception | None = None,
        describe_error: Exception | None = None,
        gated: tuple[str, ...] = (),
        fallback: bool = False,
        generate_times: dict[bytes, float] | None = None,
    ) -> None:
        """`gated` names the calls ("load", "warm_up", "generate") that wait for `open()`;
        `generate_times`: data -> seconds its generate takes (instead of `generate_s`)."""
        self.settings = PipelineSettings(device="cpu")
        self.glb = glb or small_glb()
        self.generate_s = generate_s
        self.generate_times = generate_times or {}
        self.has_fallback = fallback
        self.prepare_s = prepare_s or {}  # data -> seconds its prepare takes
        self.load_error = load_error
        self.describe_error = describe_error
        self.gates = {name: threading.Event() for name in ("load", "warm_up", "generate")}
        for name in self.gates:
            if name not in gated:
                self.gates[name].set()
        self.fault: str | None = None  # set by a b"fault" job: the device is broken for good
        # Every image staged "on the device": freeing one after a fault would abort a real
        # process (torch records CUDA events when such tensors are freed).
        self.on_device: list[weakref.ref[_FakeStaged]] = []
        self.live_at_fault: list[weakref.ref[_FakeStaged]] = []  # those alive at the fault
        self.calls: list[Call] = []
        self.started: list[tuple[str, bytes | None]] = []  # appended on entry
        self.inside_generate = 0
        self.max_inside_generate = 0
        self._lock = threading.Lock()

    # -- control ------------------------------------------------------------------------

    def open(self, name: str) -> None:
        self.gates[name].set()

    def open_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    def calls_of(self, name: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.name == name]

    def data_of(self, name: str) -> list[bytes | None]:
        """The data of every finished `name` call, in the order they started."""
        return [call.data for call in sorted(self.calls_of(name), key=lambda c: c.start)]

    def has_started(self, name: str, data: bytes | None = None) -> bool:
        with self._lock:
            return (name, data) in self.started

    # -- the Pipeline surface ------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        if self.describe_error is not None:
            raise self.describe_error
        return {"generator": "fake", "device": "cpu"}

    def load(self) -> None:
        with self._record("load", None):
            self._wait("load")
            if self.load_error is not None:
                raise self.load_error

    def warm_up(self) -> FakeGeneration:
        with self._record("warm_up", None):
            self._wait("warm_up")
            return FakeGeneration(self.glb, 0)

    def prepare(self, data: bytes) -> _FakePrepared:
        with self._record("prepare", data):
            time.sleep(self.prepare_s.get(data, 0.0))
            if b"crash-prepare" in data:
                raise RuntimeError("a bug in prepare")
            if not data.startswith(_IMAGE_SIGNATURES):
                raise UnsupportedMediaType(f"not an image: starts with {data[:8]!r}")
            return _FakePrepared(data)

    def stage(self, prepared: _FakePrepared) -> _FakeStaged:
        with self._record("stage", prepared.data):
            if b"stage-fault" in prepared.data:
                self._break_device()
            self._raise_if_faulted()
            staged = _FakeStaged(prepared.data)
            with self._lock:
                self.on_device.append(weakref.ref(staged))
            return staged

    def stage_on_host(self, prepared: _FakePrepared) -> _FakePrepared:
        with self._record("stage_on_host", prepared.data):
            return prepared

    def device_fault(self) -> str | None:
        with self._record("device_fault", None):
            return self.fault

    def generate(
        self,
        staged: _FakePrepared | _FakeStaged,
        seed: int,
        abandoned: threading.Event | None = None,
    ) -> FakeGeneration:
        with self._lock:
            self.inside_generate += 1
            self.max_inside_generate = max(self.max_inside_generate, self.inside_generate)
        try:
            with self._record("generate", staged.data, seed, abandoned):
                self._wait("generate")
                time.sleep(self.generate_times.get(staged.data, self.generate_s))
                if b"fault" in staged.data and b"stage-fault" not in staged.data:
                    self._break_device()
                self._raise_if_faulted()
                if b"boom" in staged.data:
                    raise RuntimeError("CUDA error: an illegal memory access (fake)")
                return FakeGeneration(self.glb, seed)
        finally:
            with self._lock:
                self.inside_generate -= 1

    def generate_fallback(self, staged: _FakePrepared | _FakeStaged, seed: int) -> FakeGeneration:
        if not self.has_fallback and self.fault is None:
            raise AssertionError("the executor asked a pipeline without a fallback for one")
        with self._record("fallback", staged.data, seed):
            if b"fallback-fails" in staged.data:
                raise RuntimeError("the fallback failed too (fake)")
            return FakeGeneration(self.glb, seed, generator="fallback")

    # -- internals ----------------------------------------------------------------------

    def _break_device(self) -> None:
        with self._lock:
            self.fault = FAULT
            self.live_at_fault = [ref for ref in self.on_device if ref() is not None]

    def freed_since_the_fault(self) -> int:
        """How many images staged on the device and alive at the fault have been freed since
        (garbage collected first)."""
        gc.collect()
        return sum(ref() is None for ref in self.live_at_fault)

    def _raise_if_faulted(self) -> None:
        if self.fault is not None:
            raise RuntimeError(f"CUDA error: {self.fault}")

    def _wait(self, name: str) -> None:
        if not self.gates[name].wait(GATE_TIMEOUT_S):
            raise TimeoutError(f"the test never opened the {name!r} gate")

    def _record(
        self,
        name: str,
        data: bytes | None,
        seed: int | None = None,
        abandoned: threading.Event | None = None,
    ) -> _Recorder:
        return _Recorder(self, name, data, seed, abandoned)


class _Recorder:
    """Context manager: marks a call started on entry, records it (even if it raised)."""

    def __init__(
        self,
        fake: FakePipeline,
        name: str,
        data: bytes | None,
        seed: int | None,
        abandoned: threading.Event | None = None,
    ) -> None:
        self.fake, self.name, self.data, self.seed = fake, name, data, seed
        self.abandoned = abandoned

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        with self.fake._lock:
            self.fake.started.append((self.name, self.data))

    def __exit__(self, *exc_info: object) -> None:
        end = time.perf_counter()
        abandoned = self.abandoned is not None and self.abandoned.is_set()
        thread = threading.get_ident()
        call = Call(self.name, self.data, self.seed, thread, self.start, end, abandoned)
        with self.fake._lock:
            self.fake.calls.append(call)


def orchestrator_form(image: bytes | None, seed: str | None) -> aiohttp.FormData:
    """The form as the orchestrator sends it: the file is always `prompt.jpg`, image/jpeg."""
    form = aiohttp.FormData(default_to_multipart=True)
    if image is not None:
        form.add_field("prompt_image_file", image, filename="prompt.jpg", content_type="image/jpeg")
    if seed is not None:
        form.add_field("seed", seed)
    return form


def multipart_body(image: bytes, seed: str) -> tuple[bytes, str]:
    """The orchestrator's form, encoded by hand: (body, Content-Type)."""
    boundary = "fake-boundary-5d1c0e"
    body = b"".join(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt_image_file"; '
            f'filename="prompt.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
            image,
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="seed"\r\n\r\n'
            f"{seed}\r\n--{boundary}--\r\n".encode(),
        )
    )
    return body, f"multipart/form-data; boundary={boundary}"


def raw_generate_request(image: bytes, seed: str, host: str = "127.0.0.1") -> bytes:
    """A complete HTTP/1.1 `POST /generate` (Connection: close) for a raw socket."""
    body, content_type = multipart_body(image, seed)
    head = (
        f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
