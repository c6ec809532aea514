"""`python -m server [--host H] [--port P] [--flag ...]`: serve the pipeline on uvloop.

Every server and pipeline setting has a flag and an environment variable (`--queue-size` /
`QUEUE_SIZE`); a flag beats the environment, which beats the default. `--help` lists them.
The port is bound at once; models load in the background while `/health` says "loading".
"""

from __future__ import annotations

import argparse
import logging
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

__all__ = ["main"]

log = logging.getLogger("server")


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
    # 3. Serve on a uvloop event loop (uvloop.install() is deprecated since Python 3.12).
    web.run_app(
        make_app(settings, pipeline_settings=pipeline_settings),
        host=settings.host,
        port=settings.port,
        loop=uvloop.new_event_loop(),
        handler_cancellation=settings.handler_cancellation,
        access_log=None,  # the /generate handler logs its own richer line
        print=log.info,
    )


if __name__ == "__main__":
    main()
