"""The real server around the real pipeline: the contract, and every bad input it must survive.

The app is `make_app(...)` with the default (real) Pipeline, at small settings so warm-up and
each generation take about a second on a CPU. After every bad request the health check must
still say healthy and a valid request must still produce a judge-ready GLB.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from PIL import Image

from pipeline.settings import PipelineSettings
from server.app import make_app
from server.config import ServerSettings
from tests.e2e.glb_checks import load_single_mesh, signed_volume
from tests.pipeline.conftest import PROMPTS_DIR

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SMALL = PipelineSettings(
    device="cpu", resolution=128, face_budget=8000, texture_size=512, max_image_pixels=4_000_000
)
SERVER = ServerSettings(port=0, queue_size=4, cpu_workers=2, max_upload_mb=2.0)
WARM_UP_TIMEOUT_S = 120.0


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def prompt_bytes() -> bytes:
    paths = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    return paths[8].read_bytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares a huge image (a decompression bomb)."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    pixels = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + header + pixels


def form(data: bytes | None, seed: str | None = "1") -> aiohttp.FormData:
    body = aiohttp.FormData()
    if data is not None:
        body.add_field("prompt_image_file", data, filename="prompt.jpg", content_type="image/jpeg")
    if seed is not None:
        body.add_field("seed", seed)
    return body


@pytest_asyncio.fixture
async def client(aiohttp_client: Any) -> AsyncIterator[TestClient]:
    test_client = await aiohttp_client(make_app(SERVER, pipeline_settings=SMALL))
    deadline = time.monotonic() + WARM_UP_TIMEOUT_S
    while (await test_client.get("/health")).status != 200:
        assert time.monotonic() < deadline, "the server never became healthy"
        await asyncio.sleep(0.2)
    yield test_client


async def assert_still_serving(client: TestClient, image: bytes) -> None:
    health = await client.get("/health")
    assert health.status == 200 and (await health.json()) == {"status": "healthy"}
    response = await client.post("/generate", data=form(image, "3"))
    assert response.status == 200, await response.text()
    mesh = load_single_mesh(await response.read())
    assert np.abs(np.asarray(mesh.vertices)).max() <= 0.5 and signed_volume(mesh) > 0


async def test_a_real_prompt_labelled_jpeg(client: TestClient) -> None:
    data = prompt_bytes()  # WebP bytes, labelled prompt.jpg / image/jpeg like the orchestrator
    response = await client.post("/generate", data=form(data, "4294967295"))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    body = await response.read()
    assert int(response.headers["Content-Length"]) == len(body)
    assert response.headers["X-Seed"] == "4294967295"
    assert float(response.headers["X-Generation-Time"]) > 0
    assert abs(float(response.headers["X-File-Size-MB"]) - len(body) / 2**20) < 1e-3
    assert body[:4] == b"glTF"
    load_single_mesh(body)


@pytest.mark.parametrize(
    ("case", "status", "detail_has"),
    [
        ("missing file", 400, "prompt_image_file"),
        ("empty file", 400, "empty"),
        ("not an image", 415, "PDF"),
        ("text", 415, "text"),
        ("truncated png", 422, "PNG"),
        ("too many pixels", 413, "pixels"),
        ("upload too large", 413, "bytes"),
        ("seed not an integer", 422, "seed"),
        ("seed out of range", 422, "seed"),
    ],
)
async def test_bad_input_is_answered_and_breaks_nothing(
    client: TestClient, case: str, status: int, detail_has: str
) -> None:
    image = prompt_bytes()
    bodies = {
        "missing file": form(None),
        "empty file": form(b""),
        "not an image": form(b"%PDF-1.7\n" + b"0" * 500),
        "text": form(b"hello, this is not an image at all\n" * 20),
        "truncated png": form(png(np.full((64, 64, 3), 90, np.uint8))[:120]),
        "too many pixels": form(png_declaring(40000, 40000)),
        "upload too large": form(b"\x89PNG" + b"\0" * (3 * 2**20)),
        "seed not an integer": form(image, "1.5"),
        "seed out of range": form(image, str(2**32)),
    }
    response = await client.post("/generate", data=bodies[case])
    assert response.status == status, await response.text()
    payload = await response.json()
    assert set(payload) == {"error", "detail"}
    assert detail_has.lower() in payload["detail"].lower(), payload
    await assert_still_serving(client, image)


async def test_routes_and_methods(client: TestClient) -> None:
    assert (await client.get("/nowhere")).status == 404
    wrong = await client.get("/generate")
    assert wrong.status == 405 and "error" in await wrong.json()
    info = await (await client.get("/")).json()
    assert info["generator"] == "inflate" and info["settings"]["pipeline"]["resolution"] == 128
    await assert_still_serving(client, prompt_bytes())


async def test_a_transparent_image_still_gets_a_glb(client: TestClient) -> None:
    pixels = np.zeros((200, 200, 4), np.uint8)
    response = await client.post("/generate", data=form(png(pixels)))
    assert response.status == 200
    load_single_mesh(await response.read())
