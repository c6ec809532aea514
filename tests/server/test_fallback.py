"""The deadline and fault guard of the executor, with a fake pipeline that has a fallback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.server.fakes import FakePipeline, orchestrator_form, png
from tests.server.support import executor_of, wait_until

pytestmark = pytest.mark.asyncio

# A short deadline, so the tests take a second: the watchdog fires 0.4 s after arrival.
DEADLINE = {"deadline_s": 0.6, "fallback_margin_s": 0.2}
SLOW = png(b"slow")


async def post(client, image: bytes, seed: str = "1"):
    return await client.post("/generate", data=orchestrator_form(image, seed))


async def counters(client) -> dict:
    return (await (await client.get("/")).json())["counters"]


async def test_a_failing_main_generation_is_answered_by_the_fallback(start_app):
    client, fake = await start_app(FakePipeline(fallback=True))
    answered = await post(client, png(b"boom"), "5")
    assert answered.status == 200 and answered.headers["X-Seed"] == "5"
    assert await answered.read() == fake.glb.to_bytes()
    assert fake.data_of("fallback") == [png(b"boom")]
    seen = await counters(client)
    assert (seen["fallbacks_error"], seen["fallbacks_deadline"]) == (1, 0)
    assert (seen["jobs_done"], seen["jobs_failed"]) == (1, 0)
    assert seen["last_job_s"]["fallback"] == "error"
    # The server carries on, and the main generator answers the next prompt.
    assert (await post(client, png(b"fine"))).status == 200
    assert fake.data_of("fallback") == [png(b"boom")]
    assert (await counters(client))["last_job_s"]["fallback"] == ""
    assert (await client.get("/health")).status == 200


async def test_a_failing_fallback_is_a_500_and_the_server_carries_on(start_app):
    client, _ = await start_app(FakePipeline(fallback=True))
    failed = await post(client, png(b"boom fallback-fails"))
    assert failed.status == 500 and "fallback failed too" in (await failed.json())["detail"]
    assert (await counters(client))["jobs_failed"] == 1
    assert (await post(client, png(b"fine"))).status == 200


async def test_a_generation_past_the_deadline_is_answered_in_time_and_discarded(start_app, caplog):
    caplog.set_level(logging.INFO, "server.executor")
    fake = FakePipeline(fallback=True, generate_times={SLOW: 1.5})
    client, _ = await start_app(fake, **DEADLINE)
    sent = time.perf_counter()
    answered = await post(client, SLOW)
    waited = time.perf_counter() - sent
    assert answered.status == 200
    assert waited < DEADLINE["deadline_s"]
    assert float(answered.headers["X-Generation-Time"]) < DEADLINE["deadline_s"]
    assert fake.data_of("fallback") == [SLOW]
    seen = await counters(client)
    assert (seen["fallbacks_deadline"], seen["fallbacks_error"]) == (1, 0)
    assert seen["last_job_s"]["fallback"] == "deadline"
    # The abandoned generation ends later, told it was abandoned; its result goes nowhere.
    await wait_until(lambda: fake.calls_of("generate"), "the slow generation ended")
    await asyncio.sleep(0.05)
    (slow,) = fake.calls_of("generate")
    assert slow.abandoned
    assert "abandoned main generation ended" in caplog.text
    assert fake.calls_of("device_fault") == []  # it did not raise: nothing to check
    # The next prompt is the main generator's again.
    assert (await post(client, png(b"fast"))).status == 200
    assert fake.data_of("fallback") == [SLOW]


async def test_a_job_queued_behind_an_abandoned_generation_keeps_its_own_deadline(start_app):
    """B arrives while A's abandoned generation still holds the GPU thread: B's generation
    queues behind it, B's own watchdog fires, the fallback answers B too; C, sent once the GPU
    thread is free, is the main generator's."""
    fake = FakePipeline(fallback=True, generate_times={SLOW: 1.2})
    client, _ = await start_app(fake, **DEADLINE)
    assert (await post(client, SLOW)).status == 200  # A: fallback at 0.4 s
    assert (await post(client, png(b"B"))).status == 200  # the GPU thread is busy until 1.2 s
    assert fake.data_of("fallback") == [SLOW, png(b"B")]
    await wait_until(lambda: len(fake.calls_of("generate")) == 2, "A's and B's generate ended")
    assert all(call.abandoned for call in fake.calls_of("generate"))
    assert (await post(client, png(b"C"))).status == 200
    assert fake.data_of("fallback") == [SLOW, png(b"B")]
    assert (await counters(client))["fallbacks_deadline"] == 2
    assert fake.max_inside_generate == 1  # still one generation at a time


async def test_without_a_fallback_there_is_no_guard(start_app):
    fake = FakePipeline(generate_times={SLOW: 0.8})
    client, _ = await start_app(fake, **DEADLINE)
    assert (await post(client, SLOW)).status == 200  # late, but answered by the generator
    assert (await post(client, png(b"boom"))).status == 500
    seen = await counters(client)
    assert seen["fallbacks_deadline"] == seen["fallbacks_error"] == 0
    assert executor_of(client).counters.jobs_failed == 1


async def test_a_job_taken_after_its_deadline_does_not_start_the_main_generation(start_executor):
    """The deadline counts from the request's arrival, not from the queue."""
    fake = FakePipeline(fallback=True)
    executor = await start_executor(fake, **DEADLINE)
    late = await executor.run(png(b"late"), 3, arrived_at=time.perf_counter() - 1.0)
    assert (late.generation.generator, late.timings.fallback) == ("fallback", "deadline")
    assert fake.calls_of("generate") == []
    on_time = await executor.run(png(b"on time"), 3)
    assert (on_time.generation.generator, on_time.timings.fallback) == ("fake", "")
