"""Frozen server settings, read from the environment and the command line.

Each field is one setting; its environment variable is the field name in upper case
(`queue_size` -> `QUEUE_SIZE`), exactly as for `pipeline.settings.PipelineSettings`, and the
help text beside it is what `--help` and `GET /` show (the README's settings table, written by
hand, must name every setting: tests/server/test_config.py). Command line flags are generated
from the same fields (`--queue-size`, `--no-prefetch`), so a setting is declared once.

Precedence: field default < environment variable < command-line flag.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import functools
import importlib.metadata
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.settings import check_choices, setting

__all__ = [
    "SERVICE_NAME",
    "ServerSettings",
    "add_setting_flags",
    "service_version",
    "settings_from_flags",
]

# The distribution name in setup.cfg; the version is read from there too (one place).
SERVICE_NAME = "image-to-mesh-server"

MIB = 1024 * 1024
SEED_MAX = 2**32 - 1  # the orchestrator draws seeds with secrets.randbits(32)


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("0.0.0.0", "address to bind (0.0.0.0 = every interface)")
    port: int = setting(10006, "TCP port to bind; the competition expects 10006")
    queue_size: int = setting(
        8, "most jobs waiting behind the one generating; one more is refused with 503"
    )
    prefetch: bool = setting(
        True, "prepare and stage the next job(s) on the CPU pool while one generates"
    )
    prefetch_depth: int = setting(
        1, "how many waiting jobs are prepared ahead (bounds the memory held by prefetch)"
    )
    cpu_workers: int = setting(4, "threads that decode, prepare and stage uploads")
    max_upload_mb: float = setting(
        50.0, "largest request body accepted, in MiB; more is refused with 413"
    )
    default_seed: int = setting(
        0, "seed used when the request has none or sends -1 (0..4294967295)"
    )
    retry_after_s: int = setting(10, "Retry-After (seconds) sent with a 503 when busy")
    handler_cancellation: bool = setting(
        True, "cancel a request's handler when its client disconnects (drops its queued job)"
    )
    log_level: str = setting("info", "logging level", ("debug", "info", "warning", "error"))
    deadline_s: float = setting(
        150.0,
        "seconds from a request's arrival to its answer; a main generation (TRELLIS.2) that "
        "would pass it is answered by the inflate fallback instead (0 = no deadline)",
    )
    fallback_margin_s: float = setting(
        20.0,
        "seconds before the deadline at which a still-running main generation is abandoned for "
        "the fallback (inflate and post-processing on the CPU must fit in them)",
    )
    fault_restart: bool = setting(
        True,
        "after a device fault (a sticky CUDA error: the CPU fallback answers every job), restart "
        "the server's process as soon as no job waits, even if requests keep coming "
        "(those sent meanwhile wait in the listening socket's backlog for the new process "
        "image); false: stay on the fallback until restarted from outside",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.queue_size < 0 or self.prefetch_depth < 1 or self.cpu_workers < 1:
            raise ValueError("queue_size >= 0, prefetch_depth >= 1 and cpu_workers >= 1 required")
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if not 0 <= self.default_seed <= SEED_MAX:
            raise ValueError(f"default_seed must be 0..{SEED_MAX}, got {self.default_seed}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if self.deadline_s < 0 or self.fallback_margin_s < 0:
            raise ValueError("deadline_s and fallback_margin_s must be >= 0")
        if 0 < self.deadline_s <= self.fallback_margin_s:
            raise ValueError(
                f"fallback_margin_s ({self.fallback_margin_s}) must be under deadline_s "
                f"({self.deadline_s})"
            )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)


@functools.cache
def service_version() -> str:
    """The installed distribution's version, else setup.cfg's (a source checkout)."""
    try:
        return importlib.metadata.version(SERVICE_NAME)
    except importlib.metadata.PackageNotFoundError:
        pass
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    return parser.get("metadata", "version", fallback="0+unknown")


def add_setting_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One `--flag` per field of the settings dataclass `cls`, defaulting to "not given"."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (env {f.name.upper()}, default {f.default!r})"
        dest = _dest(cls, f.name)
        if kind is bool:
            group.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                choices=f.metadata.get("choices"),
                help=help_text,
                metavar=f.name.upper(),
            )


def settings_from_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags given for `cls` (None = not given), as overrides for `settings_from_env`."""
    return {f.name: getattr(args, _dest(cls, f.name)) for f in dataclasses.fields(cls)}


def _dest(cls: type, name: str) -> str:
    # Prefixed so that a server and a pipeline setting of the same name could not collide.
    return f"{cls.__name__}.{name}"
