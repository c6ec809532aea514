"""The three routes. Handlers parse and validate, hand the job to the executor and await it.

POST /generate  multipart (prompt_image_file, seed) -> the GLB, headers sent once it is final
GET  /health    200 healthy | 503 loading / faulted / failed / stopped (the executor's state)
GET  /          name, version, generator (and why), matting, device, status, settings, counters
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from pipeline.errors import ServiceError
from pipeline.settings import PipelineSettings, describe_settings
from server.config import MIB, SERVICE_NAME, ServerSettings, service_version
from server.executor import Executor, JobResult, State
from server.upload import IMAGE_FIELD, SEED_FIELD, read_upload

__all__ = ["EXECUTOR_KEY", "PIPELINE_SETTINGS_KEY", "SETTINGS_KEY", "add_routes"]

log = logging.getLogger("server")

SETTINGS_KEY = web.AppKey("settings", ServerSettings)
PIPELINE_SETTINGS_KEY = web.AppKey("pipeline_settings", PipelineSettings)
EXECUTOR_KEY = web.AppKey("executor", Executor)

# Largest single write of the body: a bounded slice of a chunk, so a 100 MiB texture buffer
# goes out without one giant transport write (and without any joined copy of the file).
_WRITE_BYTES = 4 * MIB
# "Client Closed Request" (nginx), logged when the handler is cancelled by a disconnect.
_STATUS_CLIENT_GONE = 499


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/health", health)
    app.router.add_post("/generate", generate)


async def generate(request: web.Request) -> web.StreamResponse:
    """Generate a GLB from `prompt_image_file`, seeded by `seed`.

    `seed` is an integer form field in 0..2^32-1; a missing seed and -1 both mean the server's
    `default_seed`. The seed used is echoed in `X-Seed`. The response headers are sent only
    once the asset is final; `X-Generation-Time` (seconds) runs from the request's arrival to
    that moment. The body is then streamed from the GLB's parts.
    """
    received = time.perf_counter()
    settings = request.app[SETTINGS_KEY]
    status, seed, size, result, elapsed = 500, None, 0, None, None
    try:
        upload = await read_upload(
            request, max_bytes=settings.max_upload_bytes, default_seed=settings.default_seed
        )
        seed = upload.seed
        result = await request.app[EXECUTOR_KEY].run(
            upload.image, upload.seed, is_gone=lambda: _client_gone(request), arrived_at=received
        )
        elapsed = time.perf_counter() - received
        size = result.generation.glb.size
        response = web.StreamResponse(
            headers={
                "X-Generation-Time": f"{elapsed:.3f}",
                "X-File-Size-MB": f"{size / MIB:.3f}",
                "X-Seed": str(upload.seed),
            }
        )
        response.content_type = "application/octet-stream"
        response.content_length = size
        await response.prepare(request)
        status = 200
        await _write_body(response, result)
        return response
    except ServiceError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = _STATUS_CLIENT_GONE
        raise
    finally:
        _log_request(status, seed, size, received, elapsed, result)


async def _write_body(response: web.StreamResponse, result: JobResult) -> None:
    try:
        for chunk in result.generation.glb.chunks:
            view = memoryview(chunk).cast("B")
            for start in range(0, len(view), _WRITE_BYTES):
                await response.write(view[start : start + _WRITE_BYTES])
        await response.write_eof()
    except ConnectionError:
        # Headers were received, so the orchestrator already has its timing; a body it
        # stopped reading is its business. Nothing else to send.
        log.warning("job %d: client went away while the body was being sent", result.job_id)


async def health(request: web.Request) -> web.Response:
    """200 once load() and one warm_up() have completed; 503 with the state until then, and
    after a device fault (the CPU fallback answers jobs until the process restarts)."""
    executor = request.app[EXECUTOR_KEY]
    if executor.state is State.HEALTHY:
        return web.json_response({"status": "healthy"})
    body = {"status": executor.state.value}
    if executor.state is State.FAILED:
        body["detail"] = executor.failure or "unknown"
    elif executor.state is State.FAULTED:
        body["detail"] = f"device fault, the CPU fallback answers: {executor.fault}"
    return web.json_response(body, status=503)


async def index(request: web.Request) -> web.Response:
    """What this service is, how it is configured and how it has been doing."""
    executor = request.app[EXECUTOR_KEY]
    pipeline_settings = request.app[PIPELINE_SETTINGS_KEY]
    if executor.pipeline is not None:
        described = executor.pipeline.describe()
    else:  # still being made: what the settings ask for
        described = {"generator": pipeline_settings.generator, "device": pipeline_settings.device}
    return web.json_response(
        {
            "name": SERVICE_NAME,
            "version": service_version(),
            **described,  # generator, device
            "status": executor.state.value,
            "endpoints": {
                "POST /generate": f"multipart: {IMAGE_FIELD} (image file), {SEED_FIELD} "
                "(0..2^32-1; missing or -1 = default_seed) -> the GLB (application/octet-stream)",
                "GET /health": "200 healthy, 503 loading / faulted / failed",
            },
            "settings": {
                "server": describe_settings(request.app[SETTINGS_KEY]),
                "pipeline": describe_settings(pipeline_settings),
            },
            "counters": executor.snapshot(),
        }
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_request(
    status: int,
    seed: int | None,
    size: int,
    received: float,
    to_headers_s: float | None,
    result: JobResult | None,
) -> None:
    """One line per request: generation_time is X-Generation-Time; total adds the body."""
    line = f"POST /generate status={status} seed={seed} bytes={size}"
    if to_headers_s is not None:
        line += f" generation_time={to_headers_s:.3f}s"
    line += f" total={time.perf_counter() - received:.3f}s"
    if result is not None:
        t = result.timings
        line += (
            f" job={result.job_id} wait={t.wait_s:.3f}s prepare={t.prepare_s:.3f}s "
            f"prepare_wait={t.prepare_wait_s:.3f}s generate={t.generate_s:.3f}s "
            f"prefetched={t.prefetched}"
        )
        if t.fallback:
            line += f" fallback={t.fallback}"
    log.log(logging.INFO if status < 500 else logging.WARNING, line)
