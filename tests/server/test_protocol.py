"""The HTTP contract of SPEC §1, through aiohttp's test client and raw sockets."""

from __future__ import annotations

import asyncio
import configparser
import json
from pathlib import Path

import pytest

from pipeline.settings import describe_settings
from server.config import MIB
from tests.server.fakes import FakePipeline, big_glb, orchestrator_form, png, raw_generate_request
from tests.server.support import executor_of, wait_until

pytestmark = pytest.mark.asyncio


def joined(glb) -> bytes:
    return b"".join(bytes(memoryview(chunk).cast("B")) for chunk in glb.chunks)


async def read_raw_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    data = await asyncio.wait_for(reader.read(), 5)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return status_line, {k.lower(): v for k, v in headers.items()}, body


async def test_generate_returns_the_glb_with_its_headers(start_app):
    client, fake = await start_app(FakePipeline(generate_s=0.05))
    response = await client.post("/generate", data=orchestrator_form(png(), "12345"))
    assert response.status == 200
    body = await response.read()
    assert body == joined(fake.glb) and len(body) == fake.glb.size
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert int(response.headers["Content-Length"]) == fake.glb.size
    assert response.headers["X-File-Size-MB"] == f"{fake.glb.size / MIB:.3f}"
    assert response.headers["X-Seed"] == "12345"
    assert float(response.headers["X-Generation-Time"]) >= 0.05
    assert fake.calls_of("generate")[0].data == png()  # the bytes, whatever the label said


async def test_large_chunks_are_streamed_intact(start_app):
    client, fake = await start_app(FakePipeline(glb=big_glb()))
    response = await client.post("/generate", data=orchestrator_form(png(), "1"))
    assert response.status == 200
    assert await response.read() == joined(fake.glb)
    assert response.headers["X-File-Size-MB"] == f"{fake.glb.size / MIB:.3f}"


async def test_no_header_is_sent_before_the_asset_is_final(start_app):
    client, fake = await start_app(FakePipeline(gated=("generate",)))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(raw_generate_request(png(), "7"))
        await writer.drain()
        await wait_until(lambda: fake.has_started("generate", png()), "generate started")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # not one byte while generating
        fake.open("generate")
        status, headers, body = await read_raw_response(reader)
    finally:
        writer.close()
    assert status == "HTTP/1.1 200 OK"
    assert headers["x-seed"] == "7" and int(headers["content-length"]) == fake.glb.size
    assert body == joined(fake.glb)


async def test_second_request_waits_and_then_succeeds(start_app):
    client, fake = await start_app(FakePipeline(gated=("generate",)))
    first = asyncio.create_task(client.post("/generate", data=orchestrator_form(png(b"1"), "1")))
    second = asyncio.create_task(client.post("/generate", data=orchestrator_form(png(b"2"), "2")))
    await wait_until(lambda: executor_of(client).snapshot()["queue_length"] == 1, "one waits")
    await asyncio.sleep(0.2)
    assert not first.done() and not second.done()
    fake.open("generate")
    responses = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [r.status for r in responses] == [200, 200]
    assert [r.headers["X-Seed"] for r in responses] == ["1", "2"]
    # X-Generation-Time runs from arrival, so the second one's includes its time in the queue
    assert float(responses[1].headers["X-Generation-Time"]) >= 0.2


async def test_full_queue_answers_503_with_retry_after(start_app):
    client, fake = await start_app(FakePipeline(gated=("generate",)), queue_size=1)
    tasks = [
        asyncio.create_task(client.post("/generate", data=orchestrator_form(png(t), "1")))
        for t in (b"1", b"2")
    ]
    await wait_until(lambda: executor_of(client).snapshot()["queue_length"] == 1, "one waits")
    refused = await client.post("/generate", data=orchestrator_form(png(b"3"), "1"))
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "7"
    assert (await refused.json())["error"] == "server busy"
    fake.open("generate")
    assert [r.status for r in await asyncio.wait_for(asyncio.gather(*tasks), 5)] == [200, 200]


async def test_client_that_disconnects_while_queued_is_dropped(start_app):
    client, fake = await start_app(FakePipeline(gated=("generate",)))
    first = asyncio.create_task(client.post("/generate", data=orchestrator_form(png(b"1"), "1")))
    await wait_until(lambda: fake.has_started("generate", png(b"1")), "first generating")
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(raw_generate_request(png(b"gone"), "2"))
    await writer.drain()
    executor = executor_of(client)
    await wait_until(lambda: executor.snapshot()["queue_length"] == 1, "second queued")
    writer.close()  # the client gives up before its job starts
    await wait_until(lambda: executor.counters.dropped_disconnected == 1, "second dropped")
    assert executor.snapshot()["queue_length"] == 0
    fake.open("generate")
    assert (await asyncio.wait_for(first, 5)).status == 200
    assert fake.data_of("generate") == [png(b"1")]


async def test_index_describes_the_service(start_app):
    client, fake = await start_app(max_upload_mb=3.0)
    assert (await client.post("/generate", data=orchestrator_form(png(), "1"))).status == 200
    assert (await client.post("/generate", data=orchestrator_form(b"junk", "1"))).status == 415
    info = await (await client.get("/")).json()
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    assert info["name"] == cfg["metadata"]["name"]
    assert info["version"] == cfg["metadata"]["version"]
    assert (info["generator"], info["device"], info["status"]) == ("fake", "cpu", "healthy")
    assert info["settings"]["server"]["max_upload_mb"] == 3.0
    assert info["settings"]["pipeline"] == json.loads(json.dumps(describe_settings(fake.settings)))
    counters = info["counters"]
    assert counters["jobs_done"] == 1 and counters["jobs_rejected_input"] == 1
    assert counters["jobs_failed"] == counters["rejected_busy"] == 0
    assert counters["dropped_disconnected"] == counters["queue_length"] == 0
    assert counters["gone_while_running"] == 0
    assert counters["last_job_s"]["generate_s"] >= 0
