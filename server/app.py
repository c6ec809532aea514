"""The application factory and the lifecycle of its one resource, the executor.

`make_app(settings)` builds the app around the real pipeline; tests pass a fake pipeline.
The port is bound before anything loads: the executor's `cleanup_ctx` starts loading in the
background and returns at once, so `/health` answers "loading" from the first second.
Shutdown happens in two steps: `on_shutdown` (before aiohttp waits for running handlers)
refuses new jobs and fails the waiting ones with 503, letting the running generation finish
(unless the executor is restarting after a device fault: then it answers them all);
the `cleanup_ctx` exit then stops the worker and releases the thread pools. After a device
fault every response closes its connection, so the client's next request opens a new one,
which waits in the listening socket's backlog through a restart instead of meeting a
keep-alive connection closed under it; so does the answer to a request whose body stream
failed, a connection aiohttp drops after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import hdrs, web

from pipeline.settings import PipelineSettings, settings_from_env
from server.config import MIB, ServerSettings
from server.errors import error_middleware
from server.executor import Executor, GenerationPipeline
from server.routes import EXECUTOR_KEY, PIPELINE_SETTINGS_KEY, SETTINGS_KEY, add_routes

__all__ = ["make_app"]

log = logging.getLogger("server")

# Room above max_upload_mb for the multipart framing and the seed field, so that aiohttp's
# client_max_size never refuses an upload our own limit accepts.
_FORM_OVERHEAD_BYTES = MIB

_MAKE_PIPELINE_KEY = web.AppKey("make_pipeline", Callable[[], GenerationPipeline])
_ON_RESTART_KEY = web.AppKey("on_restart", Callable[[], None] | None)
_RESTARTED_KEY = web.AppKey("restarted_after_fault", bool)
_MAKE_HOST_PIPELINE_KEY = web.AppKey("make_host_pipeline", Callable[[], GenerationPipeline] | None)


def make_app(
    settings: ServerSettings,
    pipeline: GenerationPipeline | None = None,
    *,
    pipeline_settings: PipelineSettings | None = None,
    on_restart: Callable[[], None] | None = None,
    restarted_after_fault: bool = False,
) -> web.Application:
    """The service around `pipeline`, by default `Pipeline(pipeline_settings)`.

    `pipeline_settings` defaults to `PipelineSettings` read from the environment (read here,
    so a bad value fails at start); it is ignored when a pipeline is given, which carries its
    own. The default pipeline is made in the background, like its loading. `on_restart`: what
    the executor calls to have the process restarted after a device fault (`python -m server`
    shuts the app down and executes itself again); None: the server stays on the fallback.
    `restarted_after_fault`: this process image was started by such a restart.
    """
    make_host_pipeline: Callable[[], GenerationPipeline] | None = None
    if pipeline is None:
        pipeline_settings = pipeline_settings or settings_from_env(PipelineSettings)
        make_pipeline = functools.partial(_real_pipeline, pipeline_settings)
        on_the_host = dataclasses.replace(pipeline_settings, device="cpu", generator="inflate")
        make_host_pipeline = functools.partial(_real_pipeline, on_the_host)
    else:
        pipeline_settings = pipeline.settings
        make_pipeline = functools.partial(_given, pipeline)
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_upload_bytes + _FORM_OVERHEAD_BYTES,
    )
    app[SETTINGS_KEY] = settings
    app[PIPELINE_SETTINGS_KEY] = pipeline_settings
    app[_MAKE_PIPELINE_KEY] = make_pipeline
    app[_ON_RESTART_KEY] = on_restart
    app[_RESTARTED_KEY] = restarted_after_fault
    app[_MAKE_HOST_PIPELINE_KEY] = make_host_pipeline
    app.cleanup_ctx.append(_executor_ctx)
    app.on_shutdown.append(_close_executor)
    app.on_response_prepare.append(_close_connections)
    add_routes(app)
    return app


def _real_pipeline(settings: PipelineSettings) -> GenerationPipeline:
    from pipeline.run import Pipeline  # torch and every stage: seconds to import

    return Pipeline(settings)


def _given(pipeline: GenerationPipeline) -> GenerationPipeline:
    return pipeline


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    executor = Executor(
        app[_MAKE_PIPELINE_KEY],
        queue_size=settings.queue_size,
        prefetch_depth=settings.prefetch_depth if settings.prefetch else 0,
        cpu_workers=settings.cpu_workers,
        retry_after_s=settings.retry_after_s,
        deadline_s=settings.deadline_s,
        fallback_margin_s=settings.fallback_margin_s,
        on_restart=app[_ON_RESTART_KEY] if settings.fault_restart else None,
        restarted_after_fault=app[_RESTARTED_KEY],
        make_host_pipeline=app[_MAKE_HOST_PIPELINE_KEY],
    )
    app[EXECUTOR_KEY] = executor
    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    executor.start()  # make, load and warm up in the background; the port binds now
    yield
    await executor.stop()
    log.info("executor stopped: %s", executor.counters)


async def _close_connections(request: web.Request, response: web.StreamResponse) -> None:
    """`Connection: close` after a device fault, and where the request's body stream failed
    (a Content-Encoding that does not decode: aiohttp drops that connection after the answer)."""
    executor = request.app.get(EXECUTOR_KEY)
    faulted = executor is not None and executor.fault is not None
    if faulted or request.content.exception() is not None:
        response.force_close()
        # aiohttp (3.14 here) prepares the headers before this signal: tell the client too.
        response.headers[hdrs.CONNECTION] = "close"


async def _close_executor(app: web.Application) -> None:
    if EXECUTOR_KEY in app:
        app[EXECUTOR_KEY].close()
