"""The app on a real socket, on uvloop, as `python -m server` runs it (AppRunner + TCPSite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import uvloop
from aiohttp import web

from server.app import make_app
from server.executor import Executor
from server.routes import EXECUTOR_KEY
from tests.server.fakes import FakePipeline, orchestrator_form, png, raw_generate_request
from tests.server.support import TEST_SETTINGS, wait_until

SCENARIO_TIMEOUT_S = 20.0


def run_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


@asynccontextmanager
async def serving(
    fake: FakePipeline, *, handler_cancellation: bool
) -> AsyncIterator[tuple[str, Executor]]:
    app = make_app(TEST_SETTINGS, pipeline=fake)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", app[EXECUTOR_KEY]
    finally:
        fake.open_all()
        await runner.cleanup()


async def wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(500):
        async with session.get(f"{url}/health") as response:
            if response.status == 200:
                return
            assert response.status == 503
        await asyncio.sleep(0.01)
    raise AssertionError("never healthy")


@asynccontextmanager
async def healthy_server(
    fake: FakePipeline, *, handler_cancellation: bool
) -> AsyncIterator[tuple[str, Executor, aiohttp.ClientSession]]:
    """`serving`, with a client session, once /health says healthy."""
    async with (
        serving(fake, handler_cancellation=handler_cancellation) as (url, executor),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        await wait_healthy(session, url)
        yield url, executor, session


async def send_raw(url: str, image: bytes, seed: str) -> asyncio.StreamWriter:
    """A /generate request written on a raw connection, whose writer closes it."""
    _, port = url.rsplit(":", 1)
    _, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(raw_generate_request(image, seed))
    await writer.drain()
    return writer


def test_generate_over_a_real_socket_on_uvloop():
    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        fake = FakePipeline(gated=("load",))
        async with (
            serving(fake, handler_cancellation=True) as (url, _),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        ):
            async with session.get(f"{url}/health") as response:  # bound before loading ends
                assert response.status == 503
                assert await response.json() == {"status": "loading"}
            fake.open("load")
            await wait_healthy(session, url)
            form = orchestrator_form(png(), "4294967295")
            async with session.post(f"{url}/generate", data=form) as response:
                assert response.status == 200
                assert response.headers["X-Seed"] == "4294967295"
                assert await response.read() == fake.glb.to_bytes()

    run_on_uvloop(scenario)


def test_gone_client_is_dropped_by_the_transport_check_alone():
    """Without handler cancellation the queued job stays until its turn, then is dropped."""

    async def scenario() -> None:
        fake = FakePipeline(gated=("generate",))
        async with healthy_server(fake, handler_cancellation=False) as (url, executor, session):
            first = asyncio.create_task(
                session.post(f"{url}/generate", data=orchestrator_form(png(b"1"), "1"))
            )
            await wait_until(lambda: fake.has_started("generate", png(b"1")), "generating")
            writer = await send_raw(url, png(b"gone"), "2")
            await wait_until(lambda: executor.snapshot()["queue_length"] == 1, "queued")
            writer.close()
            await asyncio.sleep(0.1)
            assert executor.counters.dropped_disconnected == 0  # noticed only at its turn
            fake.open("generate")
            response = await first
            assert response.status == 200
            response.release()
            await wait_until(lambda: executor.counters.dropped_disconnected == 1, "dropped")
            assert fake.data_of("generate") == [png(b"1")]

    run_on_uvloop(scenario)


def test_client_gone_while_its_job_runs_is_counted_and_the_next_is_served():
    """With handler cancellation (the server's default) a client that goes away during its
    generation cancels its handler: the job runs on, the counters say its answer went
    nowhere, and the next request is answered."""

    async def scenario() -> None:
        fake = FakePipeline(gated=("generate",))
        async with healthy_server(fake, handler_cancellation=True) as (url, executor, session):
            writer = await send_raw(url, png(b"gone"), "2")
            await wait_until(lambda: fake.has_started("generate", png(b"gone")), "generating")
            writer.close()
            await wait_until(lambda: executor.counters.gone_while_running == 1, "counted")
            fake.open("generate")
            await wait_until(lambda: executor.counters.jobs_done == 1, "it ran on")
            form = orchestrator_form(png(b"next"), "1")
            async with session.post(f"{url}/generate", data=form) as response:
                assert response.status == 200
            async with session.get(f"{url}/") as response:
                counters = (await response.json())["counters"]
            assert (counters["jobs_done"], counters["gone_while_running"]) == (2, 1)
            assert counters["dropped_disconnected"] == 0

    run_on_uvloop(scenario)
