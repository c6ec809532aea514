"""Fixtures for the server tests: an app around a FakePipeline, and an executor alone.

Both fixtures open every gate of the fakes they made before tearing down, so a failing
test never leaves a worker thread waiting. Nothing waits unbounded: gates, conditions
(`support.wait_until`) and the test client all have timeouts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestClient

from server.app import make_app
from server.executor import Executor, State
from tests.server.fakes import FakePipeline
from tests.server.support import TEST_SETTINGS, wait_healthy, wait_until

# No request of a test may hang: a broken server fails the test within this.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)

StartApp = Callable[..., Awaitable[tuple[TestClient, FakePipeline]]]


@pytest_asyncio.fixture
async def start_app(aiohttp_client: Any) -> AsyncIterator[StartApp]:
    """`await start_app(fake=None, healthy=True, on_restart=None, restarted_after_fault=False,
    **settings)` -> (client, fake)."""
    fakes: list[FakePipeline] = []

    async def start(
        fake: FakePipeline | None = None,
        *,
        healthy: bool = True,
        on_restart: Callable[[], None] | None = None,
        restarted_after_fault: bool = False,
        **settings: Any,
    ) -> tuple[TestClient, FakePipeline]:
        fake = fake or FakePipeline()
        fakes.append(fake)
        app = make_app(
            dataclasses.replace(TEST_SETTINGS, **settings),
            pipeline=fake,
            on_restart=on_restart,
            restarted_after_fault=restarted_after_fault,
        )
        client = await aiohttp_client(app, timeout=CLIENT_TIMEOUT)
        if healthy:
            await wait_healthy(client)
        return client, fake

    yield start
    for fake in fakes:
        fake.open_all()


@pytest_asyncio.fixture
async def start_executor() -> AsyncIterator[Callable[..., Awaitable[Executor]]]:
    """`await start_executor(fake, healthy=True, queue_size=4, prefetch_depth=1, **options)`
    (options: the Executor's keywords, e.g. deadline_s, fallback_margin_s)."""
    started: list[tuple[Executor, FakePipeline]] = []

    async def start(
        fake: FakePipeline,
        *,
        healthy: bool = True,
        queue_size: int = 4,
        prefetch_depth: int = 1,
        **options: Any,
    ) -> Executor:
        executor = Executor(
            lambda: fake,
            queue_size=queue_size,
            prefetch_depth=prefetch_depth,
            cpu_workers=2,
            retry_after_s=7,
            **options,
        )
        started.append((executor, fake))
        executor.start()
        if healthy:
            await wait_until(lambda: executor.state is State.HEALTHY, "healthy")
        return executor

    yield start
    for executor, fake in started:
        fake.open_all()
        await executor.stop()
