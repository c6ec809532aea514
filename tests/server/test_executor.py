"""Queue policy of the executor, on the CPU with a fake pipeline (no HTTP)."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from pipeline.errors import GenerationFailed, ServerBusy, UnsupportedMediaType
from server.errors import ClientGone, ServiceUnavailable
from server.executor import State
from tests.server.fakes import FakePipeline, png
from tests.server.support import wait_until

pytestmark = pytest.mark.asyncio

A, B, C, D = png(b"A"), png(b"B"), png(b"C"), png(b"D")


def spawn(executor, data: bytes, seed: int = 1, is_gone=lambda: False) -> asyncio.Task:
    return asyncio.create_task(executor.run(data, seed, is_gone))


async def started(fake: FakePipeline, name: str, data: bytes | None = None) -> None:
    await wait_until(lambda: fake.has_started(name, data), f"{name} {data!r} started")


async def test_generate_runs_one_at_a_time_on_one_thread(start_executor):
    fake = FakePipeline(generate_s=0.02)
    executor = await start_executor(fake, queue_size=8)
    images = [png(bytes([i])) for i in range(6)]
    results = await asyncio.wait_for(
        asyncio.gather(*(executor.run(image, seed) for seed, image in enumerate(images))), 5
    )
    assert [r.generation.seed for r in results] == list(range(6))
    assert fake.max_inside_generate == 1
    generate_threads = {call.thread for call in fake.calls_of("generate")}
    assert len(generate_threads) == 1
    # load and warm-up ran on that same thread: one CUDA context for the whole model
    assert generate_threads == {fake.calls_of("load")[0].thread}
    assert threading.get_ident() not in generate_threads  # never the event loop
    spans = sorted((c.start, c.end) for c in fake.calls_of("generate"))
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))


async def test_every_worker_thread_warms_torch_maths_before_its_work(start_executor, monkeypatch):
    # Each thread's torch CPU maths has worker threads of its own whose first vector-maths call
    # may come back wrong (pipeline/cpu_threads.py): every executor thread makes a throwaway
    # call before it loads, prepares or generates anything.
    warmed: list[int] = []
    monkeypatch.setattr(
        "server.executor.warm_up_worker_threads", lambda: warmed.append(threading.get_ident())
    )
    fake = FakePipeline()
    executor = await start_executor(fake, queue_size=8)
    await asyncio.wait_for(asyncio.gather(*(executor.run(png(bytes([i])), i) for i in range(4))), 5)
    worked = {call.thread for call in fake.calls}
    assert worked and worked <= set(warmed)
    assert len(warmed) == len(set(warmed))  # once per thread


async def test_jobs_generate_in_arrival_order(start_executor):
    # Later jobs prepare faster: an executor that ran whoever was ready first would reorder.
    fake = FakePipeline(gated=("generate",), prepare_s={A: 0.0, B: 0.15, C: 0.05, D: 0.0})
    executor = await start_executor(fake, prefetch_depth=3)
    tasks = [spawn(executor, image) for image in (A, B, C, D)]
    await started(fake, "generate", A)
    await asyncio.sleep(0.2)  # B, C, D all prepared by now
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert fake.data_of("generate") == [A, B, C, D]


async def test_prefetch_prepares_next_job_while_one_generates(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, prefetch_depth=1)
    first, second = spawn(executor, A), spawn(executor, B)
    await started(fake, "generate", A)
    await wait_until(lambda: B in fake.data_of("stage"), "B staged")
    assert not first.done()  # A is still generating while B is ready
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    generate_a = fake.calls_of("generate")[0]
    prepare_b = next(c for c in fake.calls_of("prepare") if c.data == B)
    assert prepare_b.start < generate_a.end
    timings = second.result().timings
    assert timings.prefetched
    assert timings.prepare_wait_s < 0.05  # B started the moment A ended


async def test_prefetch_off_prepares_a_job_only_at_its_turn(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, prefetch_depth=0)
    first, second = spawn(executor, A), spawn(executor, B)
    await started(fake, "generate", A)
    await asyncio.sleep(0.1)
    assert not fake.has_started("prepare", B)
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    generate_a = fake.calls_of("generate")[0]
    prepare_b = next(c for c in fake.calls_of("prepare") if c.data == B)
    assert prepare_b.start >= generate_a.end
    assert not second.result().timings.prefetched


@pytest.mark.parametrize("depth", [1, 2])
async def test_prefetch_depth_bounds_the_jobs_prepared_ahead(start_executor, depth):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, prefetch_depth=depth)
    tasks = [spawn(executor, image) for image in (A, B, C, D)]
    await started(fake, "generate", A)
    await asyncio.sleep(0.1)
    assert set(fake.data_of("prepare")) == set([A, B, C, D][: depth + 1])
    assert executor.snapshot()["prefetching"] == depth
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_full_queue_refuses_with_server_busy(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, queue_size=2)
    tasks = [spawn(executor, image) for image in (A, B, C)]
    await started(fake, "generate", A)  # A runs, B and C wait: the queue is full
    with pytest.raises(ServerBusy) as refused:
        await executor.run(D, 1)
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "7"}
    assert executor.counters.rejected_busy == 1
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert D not in fake.data_of("prepare")


async def test_queue_size_zero_still_runs_a_job_on_an_idle_worker(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, queue_size=0)
    first = spawn(executor, A)
    await started(fake, "generate", A)
    with pytest.raises(ServerBusy):
        await executor.run(B, 1)
    fake.open("generate")
    assert (await asyncio.wait_for(first, 5)).generation.seed == 1


@pytest.mark.parametrize("depth", [0, 1])
async def test_job_of_a_gone_client_is_dropped_and_never_generated(start_executor, depth):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, prefetch_depth=depth)
    gone = threading.Event()
    first = spawn(executor, A)
    dropped = spawn(executor, B, 2, gone.is_set)
    last = spawn(executor, C)
    await started(fake, "generate", A)
    gone.set()  # B's client disconnects while B waits
    fake.open("generate")
    with pytest.raises(ClientGone):
        await asyncio.wait_for(dropped, 5)
    await asyncio.wait_for(asyncio.gather(first, last), 5)
    assert fake.data_of("generate") == [A, C]
    assert executor.counters.dropped_disconnected == 1
    if depth == 0:
        assert B not in fake.data_of("prepare")


async def test_cancelled_running_job_runs_on_and_is_counted(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake)
    running = spawn(executor, A)
    await started(fake, "generate", A)
    running.cancel()  # its client went away while it generates
    with pytest.raises(asyncio.CancelledError):
        await running
    assert executor.counters.gone_while_running == 1
    assert executor.counters.dropped_disconnected == executor.counters.jobs_done == 0
    fake.open("generate")
    await wait_until(lambda: executor.counters.jobs_done == 1, "it ran on")
    assert (await asyncio.wait_for(spawn(executor, B), 5)).generation is not None
    assert executor.counters.gone_while_running == 1


async def test_cancelled_waiting_job_leaves_the_queue_at_once(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake, queue_size=1)
    first, waiting = spawn(executor, A), spawn(executor, B)
    await started(fake, "generate", A)
    assert executor.snapshot()["queue_length"] == 1
    waiting.cancel()  # aiohttp's handler_cancellation does this when the client goes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert executor.snapshot()["queue_length"] == 0
    assert executor.counters.dropped_disconnected == 1
    replacement = spawn(executor, C)  # the freed slot takes a new job
    fake.open("generate")
    await asyncio.wait_for(asyncio.gather(first, replacement), 5)
    assert fake.data_of("generate") == [A, C]


async def test_bad_input_fails_only_its_job(start_executor):
    fake = FakePipeline()
    executor = await start_executor(fake)
    bad_image, crash = b"not an image", png(b"crash-prepare")
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            executor.run(A, 1),
            executor.run(bad_image, 2),
            executor.run(crash, 3),
            executor.run(B, 4),
            return_exceptions=True,
        ),
        5,
    )
    assert outcomes[0].generation.seed == 1 and outcomes[3].generation.seed == 4
    assert isinstance(outcomes[1], UnsupportedMediaType) and outcomes[1].status == 415
    assert isinstance(outcomes[2], GenerationFailed) and outcomes[2].status == 500
    assert "a bug in prepare" in outcomes[2].detail
    assert fake.data_of("generate") == [A, B]
    assert executor.counters.jobs_rejected_input == 1
    assert executor.counters.jobs_failed == 1
    assert executor.counters.jobs_done == 2


async def test_generate_exception_fails_only_its_job(start_executor):
    fake = FakePipeline()
    executor = await start_executor(fake)
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            executor.run(A, 1),
            executor.run(png(b"boom"), 2),
            executor.run(B, 3),
            return_exceptions=True,
        ),
        5,
    )
    assert isinstance(outcomes[1], GenerationFailed)
    assert outcomes[1].status == 500 and "illegal memory access" in outcomes[1].detail
    assert [o.generation.seed for o in (outcomes[0], outcomes[2])] == [1, 3]
    assert len({c.thread for c in fake.calls_of("generate")}) == 1  # the worker survived
    assert executor.state is State.HEALTHY


async def test_jobs_wait_for_load_and_warm_up(start_executor):
    fake = FakePipeline(gated=("load", "warm_up"))
    executor = await start_executor(fake, healthy=False)
    job = spawn(executor, A)
    await asyncio.sleep(0.05)
    assert executor.state is State.LOADING
    fake.open("load")
    await started(fake, "warm_up")
    await asyncio.sleep(0.05)
    assert executor.state is State.LOADING and not fake.has_started("prepare", A)
    fake.open("warm_up")
    await asyncio.wait_for(job, 5)
    assert fake.calls_of("warm_up")[0].end <= fake.calls_of("prepare")[0].start


async def test_failed_load_fails_waiting_and_new_jobs(start_executor):
    fake = FakePipeline(gated=("load",), load_error=OSError("weights not found"))
    executor = await start_executor(fake, healthy=False)
    job = spawn(executor, A)
    fake.open("load")
    with pytest.raises(ServiceUnavailable) as waiting_error:
        await asyncio.wait_for(job, 5)
    assert waiting_error.value.status == 503
    assert executor.state is State.FAILED and "weights not found" in executor.failure
    with pytest.raises(ServiceUnavailable, match="weights not found"):
        await executor.run(B, 1)
    assert not fake.calls_of("prepare") and not fake.calls_of("warm_up")


async def test_stop_fails_running_and_waiting_jobs_with_503(start_executor):
    fake = FakePipeline(gated=("generate",))
    executor = await start_executor(fake)
    running, waiting = spawn(executor, A), spawn(executor, B)
    await started(fake, "generate", A)
    await executor.stop()
    for task in (running, waiting):
        with pytest.raises(ServiceUnavailable) as error:
            await asyncio.wait_for(task, 5)
        assert error.value.status == 503
    assert executor.state is State.STOPPED
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await executor.run(C, 1)
