"""Pipeline (load, prepare, stage, generate, run, warm_up), warm_up_image and the command line
`python -m pipeline`, on small PNGs built here and small settings."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.__main__ import main
from pipeline.errors import GenerationFailed, UnsupportedMediaType
from pipeline.run import (
    Generation,
    GenerationAbandoned,
    Pipeline,
    StagedImage,
    kernel_backend,
    resolve_device,
    warm_up_image,
)
from pipeline.settings import PipelineSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = {"prepare", "generate", "mesh", "atlas", "bake", "glb"}
SMALL = {
    "generator": "inflate",  # explicit: the tests' path, whatever is installed
    "matting": "classical",
    "image_size": 96,
    "resolution": 32,
    "face_budget": 600,
    "texture_size": 128,
    "texture_format": "png",
}
# The command-line run starts a fresh interpreter (torch import included): generous on a busy
# 2-core machine, far below a hang.
CLI_TIMEOUT_S = 120


def small_settings(**overrides) -> PipelineSettings:
    return dataclasses.replace(PipelineSettings(device="cpu"), **{**SMALL, **overrides})


def png_bytes(side: int = 80) -> bytes:
    """An RGBA PNG: an off-centre ellipse, red on the left half and blue on the right."""
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    inside = ((xs - 0.45 * side) / (0.35 * side)) ** 2 + ((ys - 0.55 * side) / (0.25 * side)) ** 2
    pixels = np.zeros((side, side, 4), np.uint8)
    pixels[..., 0] = np.where(xs < side / 2, 230, 20)
    pixels[..., 2] = np.where(xs < side / 2, 20, 230)
    pixels[..., 1] = 60
    pixels[..., 3] = np.where(inside < 1, 255, 0)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, format="PNG")
    return out.getvalue()


def glb_document(data: bytes) -> tuple[dict, bytes]:
    """(JSON chunk, BIN chunk) of a GLB, read from the header (independent of the writer)."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A
    document = json.loads(data[20 : 20 + json_length])
    bin_start = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<II", data, bin_start)
    assert bin_type == 0x004E4942
    return document, data[bin_start + 8 : bin_start + 8 + bin_length]


def texture_of(data: bytes) -> Image.Image:
    document, binary = glb_document(data)
    view = document["bufferViews"][document["images"][0]["bufferView"]]
    start = view.get("byteOffset", 0)
    return Image.open(io.BytesIO(binary[start : start + view["byteLength"]]))


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    loaded = Pipeline(small_settings())
    loaded.load()
    return loaded


# --- Pipeline -----------------------------------------------------------------------------------


def test_run_returns_a_glb_with_timings_for_every_stage(pipeline: Pipeline) -> None:
    result = pipeline.run(png_bytes(), seed=7)
    assert isinstance(result, Generation)
    assert result.seed == 7 and result.matte_source == "alpha"
    assert set(result.timings_ms) == STAGES
    assert all(ms >= 0 for ms in result.timings_ms.values())
    data = result.glb.to_bytes()
    assert result.glb.size == len(data)
    document, _ = glb_document(data)
    assert document["accessors"][0]["count"] > 0
    assert texture_of(data).size == (128, 128)
    assert 0 < result.stats["faces"] <= SMALL["face_budget"] + 4
    assert {"faces_in", "faces_out", "charts"} <= set(result.stats)


def test_run_is_deterministic(pipeline: Pipeline) -> None:
    first = pipeline.run(png_bytes(), seed=1).glb.to_bytes()
    second = pipeline.run(png_bytes(), seed=1).glb.to_bytes()
    assert first == second


def test_generation_and_post_processing_run_in_inference_mode_with_the_same_bytes(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inflate generator, mesh, atlas and bake skip autograd's bookkeeping (their outputs
    are inference tensors); the GLB is the same bytes as with it."""
    import pipeline.run as run_module

    stages = {name: getattr(run_module, name) for name in ("process_mesh", "unwrap", "bake")}
    generate = type(pipeline.generator).generate
    inference: dict[str, bool] = {}

    def spying(name: str, stage):
        def spy(*args):
            out = stage(*args)
            inference[name] = (out.vertices if name == "generate" else out.positions).is_inference()
            return out

        return spy

    monkeypatch.setattr(type(pipeline.generator), "generate", spying("generate", generate))
    for name in ("process_mesh", "unwrap"):
        monkeypatch.setattr(run_module, name, spying(name, stages[name]))
    fast = pipeline.run(png_bytes(), seed=3).glb.to_bytes()
    assert inference == {"generate": True, "process_mesh": True, "unwrap": True}
    # The undecorated functions.
    monkeypatch.setattr(
        type(pipeline.generator), "generate", spying("generate", generate.__wrapped__)
    )
    for name in ("process_mesh", "unwrap"):
        monkeypatch.setattr(run_module, name, spying(name, stages[name].__wrapped__))
    monkeypatch.setattr(run_module, "bake", stages["bake"].__wrapped__)
    slow = pipeline.run(png_bytes(), seed=3).glb.to_bytes()
    assert inference == {"generate": False, "process_mesh": False, "unwrap": False}
    assert fast == slow


def test_stage_on_the_cpu_hands_the_same_tensors_over(pipeline: Pipeline) -> None:
    prepared = pipeline.prepare(png_bytes())
    assert prepared.rgb.shape == (96, 96, 3) and prepared.mask.shape == (96, 96)
    staged = pipeline.stage(prepared)
    assert isinstance(staged, StagedImage) and staged.ready is None
    assert staged.prepared.rgb is prepared.rgb and staged.prepared.mask is prepared.mask
    assert staged.prepared.matte_source == prepared.matte_source
    result = pipeline.generate(staged, seed=0)
    assert set(result.timings_ms) == STAGES - {"prepare"}


def test_staged_features_are_the_generators_preprocessing(pipeline: Pipeline) -> None:
    """stage() runs the generator's preprocessing ahead (on the side stream on a GPU); the
    asset made from those features is the one generate() would make on its own."""
    prepared = pipeline.prepare(png_bytes())
    staged = pipeline.stage(prepared)
    assert pipeline.generator is not None
    own = pipeline.generator.preprocess(prepared)
    for staged_tensor, own_tensor in zip(staged.features, own, strict=True):
        assert torch.equal(staged_tensor, own_tensor)
    with_features = pipeline.generator.generate(prepared, 0, staged.features)
    without = pipeline.generator.generate(prepared, 0)
    assert torch.equal(with_features.vertices, without.vertices)
    assert torch.equal(with_features.attrs, without.attrs)


def test_stage_and_generate_before_load_are_refused() -> None:
    unloaded = Pipeline(small_settings())
    prepared = unloaded.prepare(png_bytes())
    with pytest.raises(RuntimeError, match="load"):
        unloaded.stage(prepared)


def test_prepare_refuses_what_is_not_an_image(pipeline: Pipeline) -> None:
    with pytest.raises(UnsupportedMediaType):
        pipeline.prepare(b"this is plain text, not an image at all\n" * 4)


def test_warm_up_runs_the_built_in_ring(pipeline: Pipeline) -> None:
    image = Image.open(io.BytesIO(warm_up_image()))
    assert image.format == "PNG" and image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3]
    side = alpha.shape[0]
    assert alpha[side // 2, side // 2] == 0  # the hole
    assert alpha[side // 2, side // 2 + side // 4] == 255  # the ring
    result = pipeline.warm_up()
    assert result.seed == 0 and set(result.timings_ms) == STAGES
    assert result.glb.size > 0


def test_describe_and_devices(pipeline: Pipeline) -> None:
    described = pipeline.describe()
    assert (described["generator"], described["device"]) == ("inflate", "cpu")
    assert (described["fallback"], described["matting"]) == ("none", "classical")
    assert described["generator_selection"] == "GENERATOR=inflate"
    assert described["matting_selection"] == "MATTING=classical"
    assert described["kernels"] == "torch on cpu"
    assert not pipeline.has_fallback
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


def test_kernel_backend_names_triton_or_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import kernels

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert kernel_backend(torch.device("cpu")) == ("torch on cpu", False)
    kernels.triton_status.cache_clear()
    try:
        triton = pytest.importorskip("triton")
        assert kernel_backend(cuda) == (f"triton {triton.__version__}", False)
        kernels.triton_status.cache_clear()
        monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
        described, degraded = kernel_backend(cuda)
        assert degraded and described.startswith("torch on cuda: Triton did not import (")
        assert not kernels.triton_available()
    finally:
        monkeypatch.undo()
        kernels.triton_status.cache_clear()
    assert kernels.triton_available()


# --- the command line ---------------------------------------------------------------------------


def _child_path() -> str:
    """The repository, then whatever PYTHONPATH this process had (the GPU machine's carried
    wheels live there): the child sees the same packages, and no other setting of ours."""
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(REPO_ROOT), inherited) if p)


def test_the_cli_writes_a_glb(tmp_path: Path) -> None:
    image = tmp_path / "prompt.jpg"  # PNG bytes under a JPEG name: the format is sniffed
    image.write_bytes(png_bytes())
    output = tmp_path / "out" / "model.glb"
    overrides = [f"--set={name}={value}" for name, value in SMALL.items()]
    command = [sys.executable, "-m", "pipeline", str(image), "-o", str(output), "--seed", "3"]
    completed = subprocess.run(
        [*command, "-q", *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": _child_path(), "DEVICE": "cpu"},
    )
    assert completed.returncode == 0, completed.stderr
    data = output.read_bytes()
    document, _ = glb_document(data)
    assert texture_of(data).size == (128, 128)
    assert document["images"][0]["mimeType"] == "image/png"
    assert "MB" in completed.stdout and str(output) in completed.stdout


def test_the_cli_answers_a_non_image_with_exit_code_2(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image, only text pretending to be one\n" * 10)
    output = tmp_path / "out.glb"
    overrides = [f"--set={name}={value}" for name, value in SMALL.items()]
    code = main([str(text), "-o", str(output), "-q", *overrides])
    assert code == 2
    error = capsys.readouterr().err
    assert str(text) in error and "unsupported media type" in error
    assert not output.exists()


def test_the_cli_answers_an_empty_file_with_exit_code_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main([str(empty), "-o", str(tmp_path / "out.glb"), "-q"]) == 2
    assert "bad request" in capsys.readouterr().err


@pytest.mark.parametrize("pair", ["bogus=1", "texture_size", "texture_size=big", "device=tpu"])
def test_a_bad_setting_is_a_usage_error(pair: str, tmp_path: Path, capsys) -> None:
    image = tmp_path / "prompt.png"
    image.write_bytes(png_bytes())
    with pytest.raises(SystemExit) as exit_info:
        main([str(image), "-o", str(tmp_path / "out.glb"), "--set", pair])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage:")
    assert not (tmp_path / "out.glb").exists()


# --- with TRELLIS.2 (the fake package): the fallback and the failure path ----------------------


@pytest.fixture
def trellis_pipeline(fake_trellis2) -> Pipeline:
    chosen = small_settings(
        generator="trellis2", weights_dir=str(fake_trellis2.weights), trellis2_pipeline_type="512"
    )
    loaded = Pipeline(chosen)
    loaded.load()
    return loaded


def test_warm_up_runs_trellis2_then_the_fallback(trellis_pipeline, fake_trellis2, monkeypatch):
    fallbacks = []
    original = Pipeline.generate_fallback

    def counted(self, staged, seed):
        fallbacks.append(seed)
        return original(self, staged, seed)

    monkeypatch.setattr(Pipeline, "generate_fallback", counted)
    result = trellis_pipeline.warm_up()
    assert result.generator == "trellis2" and result.seed == 0
    assert [call["seed"] for call in fake_trellis2.hooks.calls] == [0]
    assert fallbacks == [0]
    assert trellis_pipeline.has_fallback
    assert trellis_pipeline.describe()["fallback"] == "inflate (fallback) on the CPU"


def test_the_fallback_is_inflate_on_the_cpu(trellis_pipeline, fake_trellis2):
    staged = trellis_pipeline.stage(trellis_pipeline.prepare(png_bytes()))
    assert staged.host is staged.prepared  # on a CPU the host copy is the image itself
    result = trellis_pipeline.generate_fallback(staged, seed=9)
    assert result.generator == "inflate (fallback)" and result.seed == 9
    assert set(result.timings_ms) == STAGES - {"prepare"}
    assert fake_trellis2.hooks.calls == []  # TRELLIS.2 was not asked
    document, _ = glb_document(result.glb.to_bytes())
    assert document["accessors"][0]["count"] > 0


def test_a_cuda_oom_releases_memory_and_fails_the_generation(
    trellis_pipeline, fake_trellis2, monkeypatch
):
    import pipeline.run as run_module

    released = []
    monkeypatch.setattr(run_module, "_release_memory", released.append)
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    fake_trellis2.hooks.failures.append(oom)
    staged = trellis_pipeline.stage(trellis_pipeline.prepare(png_bytes()))
    with pytest.raises(GenerationFailed, match="generate failed: OutOfMemoryError: CUDA out of"):
        trellis_pipeline.generate(staged, seed=1)
    assert released == [trellis_pipeline.device]
    # The next generation runs as if nothing happened.
    assert trellis_pipeline.generate(staged, seed=1).generator == "trellis2"


def test_an_abandoned_generation_stops_at_the_next_stage_boundary(
    trellis_pipeline, fake_trellis2, monkeypatch
):
    import pipeline.run as run_module

    def no_post_processing(*args, **kwargs):
        raise AssertionError("an abandoned generation must not be post-processed")

    monkeypatch.setattr(run_module, "process_mesh", no_post_processing)
    staged = trellis_pipeline.stage(trellis_pipeline.prepare(png_bytes()))
    abandoned = threading.Event()
    abandoned.set()
    with pytest.raises(GenerationAbandoned, match="before it started"):
        trellis_pipeline.generate(staged, 2, abandoned)
    assert fake_trellis2.hooks.calls == []
    # Abandoned while TRELLIS.2 runs: it finishes its call, then stops.
    hooks = fake_trellis2.hooks
    hooks.gate = threading.Event()
    abandoned = threading.Event()
    outcome: list[BaseException] = []

    def generate() -> None:
        try:
            trellis_pipeline.generate(staged, 2, abandoned)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=generate)
    worker.start()
    assert hooks.started.wait(10)
    abandoned.set()
    hooks.gate.set()
    worker.join(30)
    assert hooks.runs_ended == 1
    assert len(outcome) == 1 and isinstance(outcome[0], GenerationAbandoned)


def test_after_a_device_fault_an_inflate_pipeline_answers_from_the_cpu(pipeline: Pipeline) -> None:
    """The executor asks for the fallback after a fault whatever the main generator: inflate
    as main has none for the deadline guard, so one is made, on the host, with no upload."""
    assert not pipeline.has_fallback
    assert pipeline.device_fault() is None  # a CPU pipeline's device never fails so
    prepared = pipeline.prepare(png_bytes())
    staged = pipeline.stage_on_host(prepared)
    assert staged.host is prepared and staged.ready is None and staged.features is None
    answered = pipeline.generate_fallback(staged, seed=9)
    assert (answered.generator, answered.seed) == ("inflate (fallback)", 9)
    assert not pipeline.has_fallback  # still no deadline guard for it
    # The same inflate and post-processing on the same device: the main path's bytes.
    assert answered.glb.to_bytes() == pipeline.run(png_bytes(), seed=9).glb.to_bytes()


def test_device_fault_tells_a_broken_context_from_an_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Pipeline(small_settings())
    pipe.device = torch.device("cuda")  # only the check's branches; nothing runs on it
    failure = RuntimeError("CUDA error: an illegal memory access was encountered\nSearch for …")

    def broken(device: torch.device) -> None:
        raise failure

    monkeypatch.setattr(torch.cuda, "synchronize", broken)
    assert pipe.device_fault() == (
        "RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    failure = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
    assert pipe.device_fault() is None


def test_generate_fallback_before_load_is_refused() -> None:
    with pytest.raises(RuntimeError, match="load"):
        Pipeline(small_settings()).generate_fallback(None, seed=0)  # type: ignore[arg-type]
