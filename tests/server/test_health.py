"""`/health` follows the executor's stored state: loading, healthy, failed."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.fakes import FakePipeline, orchestrator_form, png
from tests.server.support import wait_healthy, wait_until

pytestmark = pytest.mark.asyncio


async def health(client) -> tuple[int, dict]:
    response = await client.get("/health")
    return response.status, await response.json()


async def test_loading_until_load_and_warm_up_are_done(start_app):
    client, fake = await start_app(FakePipeline(gated=("load", "warm_up")), healthy=False)
    assert await health(client) == (503, {"status": "loading"})
    fake.open("load")
    await wait_until(lambda: fake.has_started("warm_up"), "warm-up started")
    assert await health(client) == (503, {"status": "loading"})  # loaded is not enough
    fake.open("warm_up")
    await wait_healthy(client)
    assert await health(client) == (200, {"status": "healthy"})


async def test_request_sent_while_loading_waits_then_succeeds(start_app):
    client, fake = await start_app(FakePipeline(gated=("load",)), healthy=False)
    request = asyncio.create_task(client.post("/generate", data=orchestrator_form(png(), "3")))
    await asyncio.sleep(0.1)
    assert not request.done()
    assert (await (await client.get("/")).json())["counters"]["queue_length"] == 1
    fake.open("load")
    response = await asyncio.wait_for(request, 5)
    assert response.status == 200 and response.headers["X-Seed"] == "3"
    assert await health(client) == (200, {"status": "healthy"})


async def test_failed_load_reports_failed_and_refuses_jobs(start_app, caplog):
    fake = FakePipeline(load_error=RuntimeError("CUDA out of memory"))
    client, _ = await start_app(fake, healthy=False)
    await wait_until(lambda: fake.calls_of("load"), "load attempted")
    await asyncio.sleep(0.02)
    status, body = await health(client)
    assert status == 503
    assert body["status"] == "failed" and "CUDA out of memory" in body["detail"]
    assert "pipeline failed to load" in caplog.text
    refused = await client.post("/generate", data=orchestrator_form(png(), "1"))
    assert refused.status == 503
    assert (await refused.json())["error"] == "service unavailable"
