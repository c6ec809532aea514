"""`python -m server [--host H] [--port P] [--flag ...]`: serve the pipeline on uvloop.

Every server and pipeline setting has a flag and an environment variable (`--queue-size` /
`QUEUE_SIZE`); a flag beats the environment, which beats the default. `--help` lists them.
The port is bound at once; models load in the background while `/health` says "loading".
After a device fault (a sticky CUDA error), as soon as no job waits (unless `fault_restart` is
off), the server shuts down as on SIGTERM, answering the requests it has
already read, and executes the same command line again: a fresh process image (the
same PID, so a container does not stop), a fresh CUDA context, the same listening socket
(server/listen.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web

from pipeline.settings import PipelineSettings, describe_settings, settings_from_env
from server.app import make_app
from server.config import (
    SERVICE_NAME,
    ServerSettings,
    add_setting_flags,
    service_version,
    settings_from_flags,
)
from server.listen import hand_over, listening_socket
from server.routes import EXECUTOR_KEY

__all__ = ["main"]

log = logging.getLogger("server")

# Set for the process image a restart after a device fault starts (and taken out at start):
# that image does not restart again if the device faults before answering anything.
RESTARTED_ENV = "IMAGE_TO_MESH_RESTARTED_AFTER_FAULT"
# The exit status of a server stopped after a device fault (without a restart).
FAULT_EXIT_CODE = 1


def main(argv: Sequence[str] | None = None) -> None:
    # 1. Settings: defaults < environment < flags.
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Image to textured GLB mesh server (POST /generate, GET /health, GET /).",
    )
    add_setting_flags(parser, ServerSettings, "server settings")
    add_setting_flags(parser, PipelineSettings, "pipeline settings")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_env(ServerSettings, **settings_from_flags(args, ServerSettings))
        pipeline_settings = settings_from_env(
            PipelineSettings, **settings_from_flags(args, PipelineSettings)
        )
    except ValueError as exc:  # a malformed environment variable or an invalid value
        parser.error(str(exc))
    # 2. Logging, and the effective settings once at start.
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.info("%s %s", SERVICE_NAME, service_version())
    log.info("server settings: %s", describe_settings(settings))
    log.info("pipeline settings: %s", describe_settings(pipeline_settings))
    restarted = os.environ.pop(RESTARTED_ENV, "") == "1"
    if restarted:
        log.warning("this process image was started by a restart after a device fault")
    # 3. Serve on a uvloop event loop (uvloop.install() is deprecated since Python 3.12), on a
    # socket bound here (or handed over by the image before this one), a duplicate of which
    # stays open for a restart.
    app = make_app(
        settings,
        pipeline_settings=pipeline_settings,
        on_restart=_shut_down,
        restarted_after_fault=restarted,
    )
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:  # the port taken, an address not of this host
        log.error("cannot listen on %s port %d: %s", settings.host, settings.port, exc)
        sys.exit(1)
    kept = os.dup(sock.fileno())
    web.run_app(
        app,
        sock=sock,
        loop=uvloop.new_event_loop(),
        handler_cancellation=settings.handler_cancellation,
        access_log=None,  # the /generate handler logs its own richer line
        print=log.info,
    )
    # 4. After a device fault: restart (the same command, a new process image) or exit, either
    # way without finalising this interpreter: freeing tensors that a broken CUDA context
    # still holds events for aborts the process.
    executor = app.get(EXECUTOR_KEY)
    if executor is not None and executor.fault is not None:
        if executor.restart_requested:
            from pipeline.simplify_workers import stop_workers  # loaded by now

            stop_workers()  # its worker processes would outlive the process image
            hand_over(kept)  # connections meanwhile wait in its backlog
            os.environ[RESTARTED_ENV] = "1"
            command = [sys.executable, *sys.orig_argv[1:]]
            log.critical("restarting after the device fault: %s", " ".join(command))
            logging.shutdown()
            os.execv(sys.executable, command)
        log.critical("exiting after the device fault (%s)", executor.fault)
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)


def _shut_down() -> None:
    """Graceful shutdown, as on SIGTERM (run_app's handler): the listening socket stops
    accepting, the requests already read are answered (the executor, restarting, refuses
    none), then the process image ends."""
    signal.raise_signal(signal.SIGTERM)


if __name__ == "__main__":
    main()
