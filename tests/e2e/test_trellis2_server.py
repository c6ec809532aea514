"""The real server and pipeline around the fake trellis2 package: selection on `GET /`, warm-up
gating `/health`, the GLB a prompt gets, and the fallback on a CUDA OOM and past the deadline,
the server serving on afterwards."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient

from pipeline.settings import PipelineSettings
from server.app import make_app
from server.config import ServerSettings
from tests.e2e.glb_checks import gltf_json, load_single_mesh
from tests.e2e.test_server_e2e import form
from tests.gltf_validator import validate_glb
from tests.pipeline.test_run import png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SERVER = ServerSettings(port=0, queue_size=4, cpu_workers=2)
WARM_UP_TIMEOUT_S = 120.0


def small(fake, **values) -> PipelineSettings:
    return PipelineSettings(
        device="cpu",
        weights_dir=str(fake.weights),
        matting="classical",
        trellis2_pipeline_type="512",
        image_size=128,
        resolution=64,
        face_budget=3000,
        texture_size=256,
        **values,
    )


async def start(aiohttp_client, fake, server: ServerSettings = SERVER, **values) -> TestClient:
    return await aiohttp_client(make_app(server, pipeline_settings=small(fake, **values)))


async def healthy(client: TestClient) -> None:
    deadline = time.monotonic() + WARM_UP_TIMEOUT_S
    while (await client.get("/health")).status != 200:
        assert time.monotonic() < deadline, "the server never became healthy"
        await asyncio.sleep(0.1)


async def post(client: TestClient, seed: str = "7"):
    return await client.post("/generate", data=form(png_bytes(), seed))


async def info(client: TestClient) -> dict:
    return await (await client.get("/")).json()


async def test_health_waits_for_the_warm_up_generation(aiohttp_client, fake_trellis2):
    hooks = fake_trellis2.hooks
    hooks.gate = threading.Event()
    client = await start(aiohttp_client, fake_trellis2, generator="trellis2")
    assert await asyncio.to_thread(hooks.started.wait, WARM_UP_TIMEOUT_S)
    # Loaded, and TRELLIS.2 is generating the warm-up prompt: not healthy yet.
    response = await client.get("/health")
    assert (response.status, await response.json()) == (503, {"status": "loading"})
    hooks.gate.set()
    await healthy(client)
    assert [call["seed"] for call in hooks.calls] == [0]


async def test_a_prompt_gets_a_valid_glb_from_trellis2(aiohttp_client, fake_trellis2):
    client = await start(aiohttp_client, fake_trellis2)  # GENERATOR=auto finds it
    await healthy(client)
    described = await info(client)
    assert described["generator"] == "trellis2"
    assert described["generator_selection"].startswith("GENERATOR=auto: trellis2 imports")
    assert described["fallback"] == "inflate (fallback) on the CPU"
    response = await post(client, "4294967295")
    assert response.status == 200 and response.headers["X-Seed"] == "4294967295"
    body = await response.read()
    assert fake_trellis2.hooks.calls[-1]["seed"] == 4294967295
    mesh = load_single_mesh(body)
    vertices = np.asarray(mesh.vertices)
    assert np.abs(vertices).max() <= 0.5
    assert np.argmax(vertices.max(0) - vertices.min(0)) == 1  # Y up
    # The fake's roughness varies: a metallicRoughness texture (MATERIAL=roughness: metallic
    # from METALLIC, 0.0, the factor), one grey channel that glTF reads as G and B.
    material = gltf_json(body)["materials"][0]["pbrMetallicRoughness"]
    assert material["metallicRoughnessTexture"] == {"index": 1}
    assert (material["metallicFactor"], material["roughnessFactor"]) == (0.0, 1.0)
    texture = mesh.visual.material.metallicRoughnessTexture
    assert texture.mode == "L"
    roughness = np.asarray(texture)
    # JPEG (quality 90) moves levels by up to 16 (tests/pipeline/test_glb.py's tolerance).
    assert 0.3 * 255 - 16 <= roughness.min() < roughness.max() <= 0.7 * 255 + 16
    report = validate_glb(body)
    assert report["numErrors"] == 0, report["errors"]
    counters = (await info(client))["counters"]
    assert counters["jobs_done"] == 1 and counters["fallbacks_error"] == 0


async def test_a_cuda_oom_is_answered_by_inflate_and_the_server_carries_on(
    aiohttp_client, fake_trellis2
):
    client = await start(aiohttp_client, fake_trellis2, generator="trellis2")
    await healthy(client)
    runs = len(fake_trellis2.hooks.calls)
    fake_trellis2.hooks.failures.append(torch.OutOfMemoryError("CUDA out of memory (fake)"))
    response = await post(client)
    assert response.status == 200
    load_single_mesh(await response.read())
    counters = (await info(client))["counters"]
    assert (counters["fallbacks_error"], counters["jobs_done"]) == (1, 1)
    assert counters["last_job_s"]["fallback"] == "error"
    # TRELLIS.2 answers the next prompt.
    assert (await post(client)).status == 200
    assert len(fake_trellis2.hooks.calls) == runs + 2
    counters = (await info(client))["counters"]
    assert (counters["fallbacks_error"], counters["jobs_done"]) == (1, 2)
    assert counters["last_job_s"]["fallback"] == ""


async def test_a_trellis2_run_past_the_deadline_is_answered_by_inflate_in_time(
    aiohttp_client, fake_trellis2
):
    # The watchdog fires 2 s after arrival; inflate and its post-processing take ~1-3 s here.
    server = ServerSettings(port=0, cpu_workers=2, deadline_s=12.0, fallback_margin_s=10.0)
    client = await start(aiohttp_client, fake_trellis2, server, generator="trellis2")
    await healthy(client)
    hooks = fake_trellis2.hooks
    hooks.delay_s = 6.0
    response = await post(client)
    assert response.status == 200
    assert float(response.headers["X-Generation-Time"]) < server.deadline_s
    load_single_mesh(await response.read())
    counters = (await info(client))["counters"]
    assert counters["fallbacks_deadline"] == 1 and counters["last_job_s"]["fallback"] == "deadline"
    # The abandoned run ends, its result is dropped; then TRELLIS.2 answers again.
    ended = hooks.runs_ended
    hooks.delay_s = 0.0
    deadline = time.monotonic() + 30
    while hooks.runs_ended == ended:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await post(client)).status == 200
    counters = (await info(client))["counters"]
    assert (counters["fallbacks_deadline"], counters["jobs_done"]) == (1, 2)
    assert counters["last_job_s"]["fallback"] == ""
