"""make_app's wiring of the settings into the executor: the PREFETCH switch (`--no-prefetch`)
really decides whether a waiting job is prepared while another generates, and PREFETCH_DEPTH
how many are, through the whole app rather than the executor alone."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.fakes import FakePipeline, orchestrator_form, png
from tests.server.support import executor_of, wait_until

pytestmark = pytest.mark.asyncio

# Time given to a prefetch that must not happen; one that does starts within milliseconds.
NO_PREFETCH_WAIT_S = 0.2


@pytest.mark.parametrize("prefetch", [True, False])
async def test_the_prefetch_setting_decides_whether_a_waiting_job_is_prepared(start_app, prefetch):
    client, fake = await start_app(FakePipeline(gated=("generate",)), prefetch=prefetch)
    first, second = png(b"first"), png(b"second")
    requests = [
        asyncio.create_task(client.post("/generate", data=orchestrator_form(image, "1")))
        for image in (first, second)
    ]
    await wait_until(lambda: fake.has_started("generate", first), "the first job generates")
    await wait_until(lambda: executor_of(client).snapshot()["queue_length"] == 1, "one waits")
    if prefetch:
        await wait_until(lambda: second in fake.data_of("stage"), "the waiting job is staged")
    else:
        await asyncio.sleep(NO_PREFETCH_WAIT_S)
        assert not fake.has_started("prepare", second)
    assert executor_of(client).snapshot()["prefetching"] == (1 if prefetch else 0)
    fake.open("generate")
    responses = await asyncio.wait_for(asyncio.gather(*requests), 5)
    assert [r.status for r in responses] == [200, 200]
    generate_first = fake.calls_of("generate")[0]
    prepare_second = next(c for c in fake.calls_of("prepare") if c.data == second)
    assert (prepare_second.start < generate_first.end) is prefetch
    info = await (await client.get("/")).json()
    assert info["settings"]["server"]["prefetch"] is prefetch
    assert info["counters"]["last_job_s"]["prefetched"] is prefetch


async def test_prefetch_depth_reaches_the_executor(start_app):
    client, fake = await start_app(FakePipeline(gated=("generate",)), prefetch_depth=2)
    images = [png(bytes([65 + i])) for i in range(4)]
    requests = [
        asyncio.create_task(client.post("/generate", data=orchestrator_form(image, "1")))
        for image in images
    ]
    await wait_until(lambda: executor_of(client).snapshot()["queue_length"] == 3, "three wait")
    await wait_until(lambda: executor_of(client).snapshot()["prefetching"] == 2, "two prepared")
    await asyncio.sleep(NO_PREFETCH_WAIT_S)
    assert executor_of(client).snapshot()["prefetching"] == 2
    fake.open("generate")
    responses = await asyncio.wait_for(asyncio.gather(*requests), 5)
    assert [r.status for r in responses] == [200] * 4
