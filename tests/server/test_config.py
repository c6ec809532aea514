"""Settings: defaults, environment variables, command-line flags, validation."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.settings import PipelineSettings, settings_from_env
from server.app import make_app
from server.config import ServerSettings, add_setting_flags, settings_from_flags


def parse(argv: list[str], environ: dict[str, str]) -> tuple[ServerSettings, PipelineSettings]:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, ServerSettings, "server")
    add_setting_flags(parser, PipelineSettings, "pipeline")
    args = parser.parse_args(argv)
    return (
        settings_from_env(ServerSettings, environ, **settings_from_flags(args, ServerSettings)),
        settings_from_env(PipelineSettings, environ, **settings_from_flags(args, PipelineSettings)),
    )


def test_defaults_match_the_contract():
    settings, _ = parse([], {})
    assert (settings.host, settings.port) == ("0.0.0.0", 10006)
    assert settings.max_upload_mb == 50 and settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.prefetch and settings.default_seed == 0


def test_environment_sets_every_kind_of_field():
    environ = {
        "PORT": "8080",
        "PREFETCH": "off",
        "MAX_UPLOAD_MB": "1.5",
        "LOG_LEVEL": "debug",
        "TEXTURE_SIZE": "1024",
    }
    settings, pipeline = parse([], environ)
    assert settings.port == 8080 and settings.prefetch is False
    assert settings.max_upload_mb == 1.5 and settings.log_level == "debug"
    assert pipeline.texture_size == 1024


def test_flags_beat_the_environment():
    environ = {"QUEUE_SIZE": "3", "PREFETCH": "on", "TEXTURE_SIZE": "1024"}
    settings, pipeline = parse(
        ["--queue-size", "5", "--no-prefetch", "--texture-size", "512"], environ
    )
    assert settings.queue_size == 5 and settings.prefetch is False
    assert pipeline.texture_size == 512


@pytest.mark.parametrize(
    "change",
    [
        {"log_level": "loud"},
        {"default_seed": 2**32},
        {"default_seed": -1},
        {"port": 70000},
        {"max_upload_mb": 0},
        {"prefetch_depth": 0},
        {"cpu_workers": 0},
        {"queue_size": -1},
        {"deadline_s": -1.0},
        {"fallback_margin_s": -1.0},
        {"deadline_s": 20.0, "fallback_margin_s": 20.0},
    ],
)
def test_invalid_values_are_refused(change):
    with pytest.raises(ValueError):
        dataclasses.replace(ServerSettings(), **change)


def test_malformed_environment_variable_names_itself():
    with pytest.raises(ValueError, match="QUEUE_SIZE"):
        settings_from_env(ServerSettings, {"QUEUE_SIZE": "many"})


def test_every_setting_has_help_for_the_readme():
    for field in dataclasses.fields(ServerSettings):
        assert len(field.metadata["help"]) > 10, field.name


def test_the_readme_settings_table_lists_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    for cls in (ServerSettings, PipelineSettings):
        for field in dataclasses.fields(cls):
            assert field.name.upper() in rows, f"README's settings table lacks {field.name.upper()}"


def test_a_deadline_of_zero_turns_the_guard_off():
    assert ServerSettings(deadline_s=0.0, fallback_margin_s=20.0).deadline_s == 0.0


def test_make_app_refuses_a_bad_pipeline_variable_at_once(monkeypatch):
    """The default pipeline's settings are read when the app is built, not in the background."""
    monkeypatch.setenv("TEXTURE_SIZE", "huge")
    with pytest.raises(ValueError, match="TEXTURE_SIZE"):
        make_app(ServerSettings())
