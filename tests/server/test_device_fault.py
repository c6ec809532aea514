"""A device fault (a sticky CUDA error): the CPU fallback answers, `/health` says so, and the
process is restarted once no job comes. With a fake pipeline whose device breaks for good on a
b"fault" job (in generate) or a b"stage-fault" job (in stage), as a real CUDA context does."""

from __future__ import annotations

import asyncio
import gc

import pytest

from server.executor import State
from tests.server.fakes import FAULT, FakePipeline, orchestrator_form, png
from tests.server.support import executor_of, wait_until

pytestmark = pytest.mark.asyncio

# A short deadline: the fallback answers 0.4 s after arrival.
DEADLINE = {"deadline_s": 0.6, "fallback_margin_s": 0.2}


async def post(client, image: bytes, seed: str = "1"):
    return await client.post("/generate", data=orchestrator_form(image, seed))


async def index(client) -> dict:
    return await (await client.get("/")).json()


async def health(client) -> tuple[int, dict]:
    response = await client.get("/health")
    return response.status, await response.json()


@pytest.mark.parametrize("fallback", [False, True], ids=["inflate-main", "trellis-main"])
async def test_after_a_device_fault_the_fallback_answers_every_job(start_app, fallback):
    client, fake = await start_app(FakePipeline(fallback=fallback))
    assert (await post(client, png(b"before"))).status == 200
    assert fake.data_of("device_fault") == []  # no failure, no check
    # The job that breaks the device is answered by the fallback, not failed.
    broken = await post(client, png(b"fault"), "5")
    assert broken.status == 200 and broken.headers["X-Seed"] == "5"
    assert await broken.read() == fake.glb.to_bytes()
    assert fake.data_of("fallback") == [png(b"fault")]
    assert len(fake.calls_of("device_fault")) == 1
    seen = await index(client)
    assert seen["status"] == "faulted"
    counters = seen["counters"]
    assert (counters["fallbacks_fault"], counters["fallbacks_error"]) == (1, 0)
    assert (counters["jobs_done"], counters["jobs_failed"]) == (1 + 1, 0)
    assert counters["last_job_s"]["fallback"] == "fault"
    status, body = await health(client)
    assert status == 503 and body["status"] == "faulted" and FAULT in body["detail"]
    # Later jobs: staged on the host (the device's upload would fail), the main generator
    # not asked, the fallback answers.
    for tag in (b"after-1", b"after-2"):
        answered = await post(client, png(tag), "6")
        assert answered.status == 200 and answered.headers["X-Seed"] == "6"
    assert fake.data_of("stage_on_host") == [png(b"after-1"), png(b"after-2")]
    assert png(b"after-1") not in fake.data_of("stage")
    assert fake.data_of("generate") == [png(b"before"), png(b"fault")]
    assert fake.data_of("fallback") == [png(b"fault"), png(b"after-1"), png(b"after-2")]
    assert (await index(client))["counters"]["fallbacks_fault"] == 3
    assert len(fake.calls_of("device_fault")) == 1  # known once, not asked again
    # What was on the device at the fault is never freed (a real process would abort).
    assert len(fake.live_at_fault) == 1 and fake.freed_since_the_fault() == 0


async def test_a_failure_that_leaves_the_device_working_is_not_a_fault(start_app):
    client, fake = await start_app(FakePipeline())
    failed = await post(client, png(b"boom"))
    assert failed.status == 500  # no fallback: the failure is the answer, as before
    assert len(fake.calls_of("device_fault")) == 1
    assert await health(client) == (200, {"status": "healthy"})
    assert (await post(client, png(b"fine"))).status == 200
    assert fake.data_of("stage_on_host") == [] and fake.data_of("fallback") == []
    # With a main-generation fallback: the fallback answers for the error, not the fault.
    client, fake = await start_app(FakePipeline(fallback=True))
    assert (await post(client, png(b"boom"))).status == 200
    counters = (await index(client))["counters"]
    assert (counters["fallbacks_error"], counters["fallbacks_fault"]) == (1, 0)
    assert executor_of(client).state is State.HEALTHY


async def test_a_fault_found_by_the_staging_restages_the_job_on_the_host(start_app):
    client, fake = await start_app(FakePipeline(fallback=True))
    answered = await post(client, png(b"stage-fault"), "3")
    assert answered.status == 200 and answered.headers["X-Seed"] == "3"
    assert fake.data_of("stage") == [png(b"stage-fault")]
    assert fake.data_of("stage_on_host") == [png(b"stage-fault")]
    assert fake.data_of("generate") == []
    assert fake.data_of("fallback") == [png(b"stage-fault")]
    assert executor_of(client).state is State.FAULTED


async def test_a_staging_failure_on_a_working_device_fails_the_job(start_app):
    client, fake = await start_app(FakePipeline(fallback=True))
    failed = await post(client, png(b"crash-prepare"))
    assert failed.status == 500 and "prepare failed" in (await failed.json())["detail"]
    assert len(fake.calls_of("device_fault")) == 1
    assert fake.data_of("fallback") == [] and executor_of(client).state is State.HEALTHY


async def test_jobs_waiting_at_the_fault_are_staged_again_on_the_host(start_app):
    fake = FakePipeline(gated=("generate",))
    client, _ = await start_app(fake)
    first = asyncio.create_task(post(client, png(b"fault")))
    await wait_until(lambda: fake.has_started("generate", png(b"fault")), "the faulting job runs")
    second = asyncio.create_task(post(client, png(b"queued")))
    # Prefetched: staged on the device while the first job generates.
    await wait_until(lambda: fake.data_of("stage") == [png(b"fault"), png(b"queued")], "prefetch")
    fake.open("generate")
    assert (await asyncio.wait_for(first, 5)).status == 200
    assert (await asyncio.wait_for(second, 5)).status == 200
    assert fake.data_of("stage_on_host") == [png(b"queued")]
    assert fake.data_of("generate") == [png(b"fault")]
    assert fake.data_of("fallback") == [png(b"fault"), png(b"queued")]
    assert len(fake.live_at_fault) == 2 and fake.freed_since_the_fault() == 0


async def test_with_nothing_waiting_the_restart_is_asked_for_before_the_faults_answer(
    start_app,
):
    """So the server stops listening before the client has its answer: an orchestrator's
    next request, sent as the answer arrives, waits in the backlog for the new image."""
    asked: list[list[bytes | None]] = []  # the fallback's answers so far, when asked
    fake = FakePipeline()
    client, _ = await start_app(fake, on_restart=lambda: asked.append(fake.data_of("fallback")))
    assert (await post(client, png(b"fine"))).status == 200
    answered = await post(client, png(b"fault"))
    assert answered.status == 200 and answered.headers["Connection"] == "close"
    assert asked == [[]]  # once, before the fallback had answered the fault's job
    assert fake.data_of("fallback") == [png(b"fault")]


async def test_the_restart_is_asked_for_once_no_job_waits(start_app):
    """An orchestrator sends each request as the last one's headers arrive, so the server is
    never idle: the restart does not wait for quiet. Jobs queued behind the fault's are
    answered (by the fallback); the restart is asked for once the last of them is taken."""
    restarts: list[tuple[int, int]] = []  # (jobs answered, jobs waiting) when asked
    fake = FakePipeline(gated=("generate",))
    client, _ = await start_app(fake, on_restart=lambda: restarts.append(progress()))
    executor = executor_of(client)

    def progress() -> tuple[int, int]:
        return executor.counters.jobs_done, len(executor._waiting)

    fake.open("generate")
    first = await post(client, png(b"fine"))
    assert first.status == 200 and first.headers.get("Connection") != "close"
    fake.gates["generate"].clear()
    faulting = asyncio.create_task(post(client, png(b"fault")))
    await wait_until(lambda: fake.has_started("generate", png(b"fault")), "the fault's job runs")
    behind = [asyncio.create_task(post(client, png(tag))) for tag in (b"b-1", b"b-2")]
    await wait_until(lambda: len(executor._waiting) == 2, "two jobs wait behind it")
    fake.open("generate")
    answers = await asyncio.wait_for(asyncio.gather(faulting, *behind), 5)
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert all(answer.headers["Connection"] == "close" for answer in answers)
    await wait_until(lambda: restarts, "the restart was asked for")
    assert restarts == [(3, 0)]  # as the last one waiting (b-2) was taken
    assert fake.data_of("fallback") == [png(b"fault"), png(b"b-1"), png(b"b-2")]
    # Until the process image ends it still answers, and its shutdown refuses nothing: a job
    # read meanwhile is answered by the fallback, then stop() ends the executor.
    late = asyncio.create_task(post(client, png(b"late")))
    await wait_until(lambda: fake.has_started("stage_on_host", png(b"late")), "the late job")
    executor.close()  # on_shutdown, during the restart
    assert (await asyncio.wait_for(late, 5)).status == 200
    assert fake.data_of("fallback")[-1] == png(b"late")
    assert len(restarts) == 1  # asked once
    assert fake.freed_since_the_fault() == 0


async def test_a_shutdown_without_a_fault_refuses_the_waiting_jobs(start_app):
    fake = FakePipeline(gated=("generate",))
    client, _ = await start_app(fake, on_restart=lambda: None)
    running = asyncio.create_task(post(client, png(b"running")))
    await wait_until(lambda: fake.has_started("generate", png(b"running")), "the first job runs")
    waiting = asyncio.create_task(post(client, png(b"waiting")))
    await wait_until(lambda: len(executor_of(client)._waiting) == 1, "the second job waits")
    executor_of(client).close()
    refused = await asyncio.wait_for(waiting, 5)
    assert refused.status == 503 and "shutting down" in (await refused.json())["detail"]
    fake.open("generate")
    answered = await asyncio.wait_for(running, 5)
    assert answered.status == 200 and answered.headers.get("Connection") != "close"


async def test_without_a_restart_the_server_stays_on_the_fallback(start_app):
    restarts: list[int] = []
    client, _ = await start_app(
        FakePipeline(), fault_restart=False, on_restart=lambda: restarts.append(1)
    )
    assert (await post(client, png(b"fault"))).status == 200
    await asyncio.sleep(0.5)
    assert restarts == [] and not executor_of(client).restart_requested
    assert (await post(client, png(b"after"))).status == 200
    assert (await health(client))[1]["status"] == "faulted"


async def test_a_fault_in_an_abandoned_generation_is_found_and_its_image_kept(start_app):
    """The fallback answers a job at its deadline; its abandoned generation then breaks the
    device. Nothing awaits that call, yet the fault is found as it raises, on the GPU thread,
    and the image it held stays alive (freed on a broken context it would abort a process)."""
    slow_fault = png(b"slow fault")
    fake = FakePipeline(fallback=True, generate_times={slow_fault: 1.0})
    client, _ = await start_app(fake, **DEADLINE)
    answered = await post(client, slow_fault, "4")
    assert answered.status == 200 and fake.data_of("fallback") == [slow_fault]
    assert executor_of(client).state is State.HEALTHY  # its generation still runs
    await wait_until(lambda: executor_of(client).state is State.FAULTED, "the fault is found")
    (generation,) = fake.calls_of("generate")
    (check,) = fake.calls_of("device_fault")
    assert generation.abandoned and check.thread == generation.thread
    assert check.start >= generation.end
    assert len(fake.live_at_fault) == 1 and fake.freed_since_the_fault() == 0
    status, body = await health(client)
    assert status == 503 and FAULT in body["detail"]
    # The next job is staged on the host and answered by the fallback, for the fault.
    assert (await post(client, png(b"after"), "5")).status == 200
    assert fake.data_of("stage_on_host") == [png(b"after")]
    assert fake.data_of("generate") == [slow_fault]
    counters = (await index(client))["counters"]
    assert (counters["fallbacks_deadline"], counters["fallbacks_fault"]) == (1, 1)
    assert fake.freed_since_the_fault() == 0


async def test_an_abandoned_generation_failing_on_a_working_device_frees_its_image(start_app):
    slow_boom = png(b"slow boom")
    fake = FakePipeline(fallback=True, generate_times={slow_boom: 1.0})
    client, _ = await start_app(fake, **DEADLINE)
    assert (await post(client, slow_boom)).status == 200
    await wait_until(lambda: fake.calls_of("device_fault"), "the device is checked")
    await asyncio.sleep(0.05)
    assert executor_of(client).state is State.HEALTHY
    assert (await post(client, png(b"fine"))).status == 200
    assert fake.data_of("generate") == [slow_boom, png(b"fine")]
    assert fake.data_of("stage_on_host") == []
    gc.collect()
    assert fake.on_device[0]() is None  # checked, then let go


@pytest.mark.parametrize("answered_first", [False, True], ids=["at-once", "after-an-answer"])
async def test_an_image_started_by_a_restart_restarts_again_only_after_a_device_answer(
    start_app, answered_first
):
    """A device that fails in every fresh context would otherwise restart at every prompt."""
    restarts: list[int] = []
    client, fake = await start_app(
        FakePipeline(), on_restart=lambda: restarts.append(1), restarted_after_fault=True
    )
    if answered_first:
        assert (await post(client, png(b"fine"))).status == 200
    assert (await post(client, png(b"fault"))).status == 200
    assert (await post(client, png(b"after"))).status == 200
    executor = executor_of(client)
    assert restarts == ([1] if answered_first else [])
    assert executor.restart_withheld is not answered_first
    assert fake.data_of("fallback") == [png(b"fault"), png(b"after")]
    assert (await health(client))[1]["status"] == "faulted"


async def test_an_image_started_by_a_restart_serves_from_the_host_if_its_device_fails_to_load(
    start_executor,
):
    """A device broken for good fails the new image's load: the prompt it read meanwhile (the
    orchestrator's next) and the later ones are answered by inflate on the CPU, not 503s."""
    broken = FakePipeline(
        load_error=RuntimeError("CUDA error: uncorrectable ECC error encountered (fake)"),
        gated=("load",),
    )
    host = FakePipeline(fallback=True)
    executor = await start_executor(
        broken, healthy=False, restarted_after_fault=True, make_host_pipeline=lambda: host
    )
    waiting = asyncio.create_task(executor.run(png(b"read while loading"), 3))
    await wait_until(lambda: len(executor._waiting) == 1, "a job waits for the load")
    broken.open("load")
    answered = await asyncio.wait_for(waiting, 5)
    assert answered.generation.generator == "fallback" and answered.timings.fallback == "fault"
    assert executor.state is State.FAULTED and "uncorrectable ECC" in (executor.fault or "")
    assert executor.restart_withheld and not executor.restart_requested
    assert broken in executor._kept_after_fault  # what it holds on the device is never freed
    later = await executor.run(png(b"later"), 4)
    assert later.generation.seed == 4
    assert host.data_of("stage_on_host") == [png(b"read while loading"), png(b"later")]
    assert host.data_of("fallback") == [png(b"read while loading"), png(b"later")]
    assert broken.data_of("generate") == [] and host.data_of("generate") == []


@pytest.mark.parametrize("restarted", [False, True], ids=["first-image", "host-fails-too"])
async def test_otherwise_a_failed_load_is_failed(start_executor, restarted):
    made: list[FakePipeline] = []

    def make_host() -> FakePipeline:
        made.append(FakePipeline(load_error=RuntimeError("the host failed too (fake)")))
        return made[-1]

    broken = FakePipeline(load_error=RuntimeError("CUDA error: no device (fake)"))
    executor = await start_executor(
        broken, healthy=False, restarted_after_fault=restarted, make_host_pipeline=make_host
    )
    await wait_until(lambda: executor.state is State.FAILED, "failed")
    assert "no device" in (executor.failure or "")
    assert len(made) == (1 if restarted else 0)
