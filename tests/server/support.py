"""Helpers shared by the server tests: their settings and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp.test_utils import TestClient

from server.config import ServerSettings
from server.executor import Executor, State
from server.routes import EXECUTOR_KEY

__all__ = ["TEST_SETTINGS", "executor_of", "wait_healthy", "wait_until"]

# Small and explicit; never read from the environment.
TEST_SETTINGS = ServerSettings(port=0, queue_size=4, cpu_workers=2, retry_after_s=7)
WAIT_TIMEOUT_S = 5.0  # every condition a test waits for comes true well within this


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


def executor_of(client: TestClient) -> Executor:
    return client.app[EXECUTOR_KEY]


async def wait_healthy(client: TestClient) -> None:
    executor = executor_of(client)
    await wait_until(lambda: executor.state is State.HEALTHY, "the pipeline is healthy")
