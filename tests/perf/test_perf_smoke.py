"""The perf scripts from the checkout against a real server on loopback, at small settings: the
CPU smoke of what perf/server_suite.sh runs on the GPU machine.

One server (`python -m server`, inflate at small settings) serves `perf/latency.py` sequential
and `--burst 2` on 3 shared prompts, and a bad file to check that failures count (and fail the
run with `--fail-on-error`); `perf/profile.py` runs the same prompts in process; `perf/report.py`
makes the RESULTS.md entry from their JSON and inserts it above the newest entry.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import PROMPTS_DIR
from tests.processes import free_port, stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROMPT_COUNT = 3
# Small enough for a generation well under a second on a 2-core CPU.
SMALL_SETTINGS = {
    "DEVICE": "cpu",
    "GENERATOR": "inflate",
    "RESOLUTION": "96",
    "FACE_BUDGET": "3000",
    "TEXTURE_SIZE": "256",
    "CPU_WORKERS": "2",
}
HEALTHY_WITHIN_S = 120  # import, load and warm-up at the small settings take ~5-10 s
SCRIPT_TIMEOUT_S = 180
STEPS = ("decode", "prepare", "stage", "generate", "mesh", "atlas", "bake", "glb")
MESH_STEPS = ("weld", "degenerate", "simplify", "weld_slabs", "orient", "compact", "frame")


def _env() -> dict[str, str]:
    env = {**os.environ, **SMALL_SETTINGS, "LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)  # CPU tensors take the torch paths either way
    return env


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "perf" / name), *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def prompts() -> Path:
    if len(sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []) < PROMPT_COUNT:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    return PROMPTS_DIR


@pytest.fixture(scope="module")
def server_url(prompts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="module")
def out(server_url: str, prompts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's $OUT at small scale: latency.json, burst_on.json, profile.json."""
    folder = tmp_path_factory.mktemp("out")
    common = ["--url", server_url, "--prompts", str(prompts), "--count", str(PROMPT_COUNT)]
    common += ["--seed", "42", "--png", "--wait-healthy", str(HEALTHY_WITHIN_S)]
    for name, extra in (("latency.json", []), ("burst_on.json", ["--burst", "2"])):
        run = _script("latency.py", *common, *extra, "--json", str(folder / name))
        assert run.returncode == 0, run.stdout + run.stderr
        (folder / f"{name}.txt").write_text(run.stdout)
    run = _script(
        "profile.py",
        *("--prompts", str(prompts), "--count", str(PROMPT_COUNT), "--repeat", "1", "--png"),
        *("--warmup", "0", "--json", str(folder / "profile.json")),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (folder / "profile.json.txt").write_text(run.stdout)
    (folder / "device.txt").write_text("CPU smoke\n")
    return folder


def _load(folder: Path, name: str) -> dict[str, Any]:
    return json.loads((folder / name).read_text())


def test_sequential_latency_against_a_real_server(out: Path) -> None:
    measured = _load(out, "latency.json")
    summary, requests = measured["summary"], measured["requests"]
    assert measured["meta"]["mode"] == "sequential"
    assert measured["meta"]["server"]["generator"] == "inflate"
    assert summary["count"] == summary["successes"] == PROMPT_COUNT
    assert summary["failures"] == summary["over_90_s"] == summary["at_or_over_180_s"] == 0
    for request in requests:
        assert request["ok"] and request["status"] == 200 and request["size"] > 0
        assert request["header_s"] > 0 and request["body_s"] >= 0
        assert request["generation_s"] > 0
        # X-Generation-Time is rounded to the millisecond: it may exceed by half of one.
        assert request["overhead_ms"] > -0.5
    # The next request goes out when the previous headers are in, not after its body.
    for previous, following in itertools.pairwise(requests):
        assert following["sent_s"] >= previous["sent_s"] + previous["header_s"]
    header = summary["header_s"]
    assert header["trimmed_dropped"] == 0  # 3 successes: nothing trimmed
    assert header["trimmed_median"] == header["median"] > 0
    assert not math.isnan(summary["overhead_ms"]["median"])
    text = (out / "latency.json.txt").read_text()
    assert "trimmed median" in text and "server overhead ms" in text


def test_burst_keeps_requests_in_flight_and_reports_throughput(out: Path) -> None:
    measured = _load(out, "burst_on.json")
    summary, requests = measured["summary"], measured["requests"]
    assert measured["meta"]["mode"] == "burst 2"
    assert summary["successes"] == PROMPT_COUNT and summary["burst"] == 2
    assert summary["throughput_per_s"] > 0 and summary["wall_s"] > 0
    # The first two went out together, before either had its headers.
    first, second = sorted(requests, key=lambda r: r["sent_s"])[:2]
    assert second["sent_s"] < first["sent_s"] + first["header_s"]
    assert measured["meta"]["server"]["settings"]["server"]["prefetch"] is True


def test_failures_are_counted_and_fail_the_run_when_asked(server_url: str, tmp_path: Path) -> None:
    (tmp_path / "not_an_image.png").write_bytes(b"%PDF-1.7 this is no image" * 10)
    argv = ["--url", server_url, "--prompts", str(tmp_path), "--seed", "1"]
    argv += ["--wait-healthy", str(HEALTHY_WITHIN_S), "--json", str(tmp_path / "bad.json")]
    assert _script("latency.py", *argv).returncode == 0  # counted, not fatal by default
    run = _script("latency.py", *argv, "--fail-on-error")
    assert run.returncode == 1, run.stdout + run.stderr
    summary = _load(tmp_path, "bad.json")["summary"]
    assert summary["successes"] == 0 and summary["failures"] == 1
    assert _load(tmp_path, "bad.json")["requests"][0]["status"] == 415


def test_profile_lists_every_stage_and_mesh_step(out: Path) -> None:
    profile = _load(out, "profile.json")
    meta, summary = profile["meta"], profile["summary"]
    assert meta["runs"] == PROMPT_COUNT and "host clock" in meta["timer"]
    rows = summary["rows"]
    assert set(STEPS) <= set(rows)
    assert {f"mesh.{step}" for step in MESH_STEPS} | {"glb.encode", "glb.write"} <= set(rows)
    assert summary["peak_mib"] is None  # no CUDA here
    assert all(row["median"] >= 0 for row in rows.values())
    stages_share = sum(rows[stage]["share"] for stage in STEPS)
    assert stages_share == pytest.approx(1.0, abs=0.25)  # medians of parts vs of the whole
    assert summary["dominant_stage"] in STEPS
    text = (out / "profile.json.txt").read_text()
    assert "timer: host clock" in text and "dominant stage" in text


def test_report_makes_an_entry_and_inserts_it_above_the_newest(out: Path, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nPreamble.\n\n## 2026-01-01 — an older entry\n\nText.\n")
    run = _script("report.py", str(out), "--into", str(results))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("## ") and "trimmed median header time" in run.stdout
    assert "| **mesh** |" in run.stdout and "↳ simplify" in run.stdout
    text = results.read_text()
    assert text.startswith("# Results\n\nPreamble.\n\n## ")
    assert text.index(run.stdout.splitlines()[0]) < text.index("## 2026-01-01 — an older entry")
