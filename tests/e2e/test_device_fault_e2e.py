"""A sticky CUDA fault in the real server: the fault's own job is answered by the CPU
fallback, its connection closed, and as soon as no job runs or waits the process executes
itself again (the same PID, the same listening socket) and serves from the device again; the
next prompt, sent as the answer arrives (as the orchestrator does), is answered, by the new
process image when it finds the old one gone. A fault after the deadline, in a run nothing
awaits, is found at once and survived.

The server is tests/e2e/faulty_server.py (inflate, or the fake TRELLIS.2 package), whose
chosen generation breaks the device: on CUDA (the GPU machine) for real, by an out-of-bounds
store; on a CPU (CI) the fault is simulated and the rest is real.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.e2e.glb_checks import load_single_mesh
from tests.fake_trellis2 import FAKES, write_fake_weights
from tests.pipeline.conftest import PROMPTS_DIR
from tests.processes import free_port, stop
from tests.server.fakes import multipart_body

pytestmark = pytest.mark.slow

DEVICES = [
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
    "cpu",  # the fault simulated; small settings
]
SMALL = ["--resolution", "128", "--face-budget", "8000", "--texture-size", "512"]

REPO = Path(__file__).resolve().parents[2]
HEALTHY_TIMEOUT_S = 300.0


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _health(port: int) -> str:
    try:
        return _get(port, "/health")[1]["status"]
    except OSError:  # not listening (starting, or executing itself again)
        return "down"


def _wait_for(port: int, wanted: str, server: subprocess.Popen) -> float:
    """Seconds until /health says `wanted`."""
    start = time.monotonic()
    while _health(port) != wanted:
        assert server.poll() is None, f"the server exited with {server.returncode}"
        assert time.monotonic() - start < HEALTHY_TIMEOUT_S, f"never {wanted}"
        time.sleep(0.05)
    return time.monotonic() - start


def _wait_for_line(log_path: Path, text: str, server: subprocess.Popen) -> float:
    """Seconds until the server's log holds `text`."""
    start = time.monotonic()
    while text not in log_path.read_text(errors="replace"):
        assert server.poll() is None, f"the server exited with {server.returncode}"
        assert time.monotonic() - start < HEALTHY_TIMEOUT_S, f"never logged {text!r}"
        time.sleep(0.02)
    return time.monotonic() - start


def _generate(port: int, image: bytes, seed: int) -> bytes:
    body, content_type = multipart_body(image, str(seed))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/generate", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        assert reply.status == 200 and reply.headers["X-Seed"] == str(seed)
        return reply.read()


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(fields.get("PPid", "0").strip()) == pid and fields.get("State", "")[:1] != "Z":
            found.add(int(status.parent.name))
    return found


def _watch_children(pid: int, seen: set[int], done: threading.Event) -> None:
    """Adds every child process of `pid` seen to `seen` until `done`."""
    while not done.is_set():
        seen.update(_children(pid))
        time.sleep(0.05)


def _prompt() -> bytes:
    prompts = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not prompts:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    return prompts[8].read_bytes()


@contextlib.contextmanager
def _faulty_server(
    tmp_path: Path, args: list[str], env: dict[str, str], paths: tuple[Path, ...] = ()
) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """`python -m tests.e2e.faulty_server` with `args` and `env` (its FAULT_* variables):
    (the process, its port, its log), stopped afterwards and its log's end printed. `paths`
    go on PYTHONPATH after the repository."""
    port = free_port()
    env = {
        **os.environ,
        "FAULT_ONCE_FILE": str(tmp_path / "faulted"),
        **env,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), *map(str, paths), os.environ.get("PYTHONPATH", "")]
        ),
    }
    command = [sys.executable, "-m", "tests.e2e.faulty_server", "--port", str(port), *args]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        yield server, port, log_path
    finally:
        stop(server)
        sys.stdout.write(log_path.read_text(errors="replace")[-6000:])


def _last_job(port: int) -> tuple[str, dict]:
    index = _get(port, "/")[1]
    return index["status"], index["counters"]


@pytest.mark.parametrize("device", DEVICES)
def test_a_sticky_cuda_fault_is_answered_reported_and_restarted(
    device: str, tmp_path: Path
) -> None:
    image = _prompt()
    args = ["--device", device, "--generator", "inflate", "--matting", "classical"]
    args += SMALL if device == "cpu" else []
    # The warm-up, the first request, then the second request.
    with _faulty_server(tmp_path, args, {"FAULT_AT_CALL": "3"}) as (server, port, log_path):
        warm = _wait_for(port, "healthy", server)
        first = _generate(port, image, 7)  # the device's answer
        status, counters = _last_job(port)
        assert status == "healthy" and counters["last_job_s"]["fallback"] == ""
        # The fault: its own job answered by the CPU fallback. The next prompt goes as the
        # answer arrives: no idle time, yet the restart comes (urllib opens a connection per
        # request; tests/server checks that the server closes kept-alive ones after a fault).
        workers: set[int] = set()  # the CPU fallback's simplification workers, while they live
        watching = threading.Event()
        watcher = threading.Thread(target=_watch_children, args=(server.pid, workers, watching))
        watcher.start()
        started = time.monotonic()
        try:
            faulted = _generate(port, image, 7)
        finally:
            answered = time.monotonic()
            watching.set()
            watcher.join()
        after = _generate(port, image, 7)
        after_s = time.monotonic() - answered
        assert (tmp_path / "faulted").exists()
        load_single_mesh(faulted)
        load_single_mesh(after)
        _wait_for_line(log_path, "restarting the process", server)
        text = log_path.read_text(errors="replace")
        assert "illegal memory access" in text.split("restarting the process")[0]
        assert "fallback=fault" in text
        assert "restarting after the device fault" in text  # the exec
        _wait_for_line(log_path, "started by a restart after a device fault", server)
        # Once the new image serves, it is the device's again, a fresh process image (which
        # knows it was started by a restart: it would not restart again before a device answer).
        _wait_for(port, "healthy", server)
        assert server.poll() is None  # the same process (PID) all along
        status, counters = _last_job(port)
        by_new_image = counters["jobs_done"] == 1
        assert status == "healthy" and counters["jobs_done"] in (0, 1)
        assert by_new_image or text.count("fallback=fault") == 2
        assert not workers & _children(server.pid)  # none outlived the old image
        assert workers or device == "cpu"  # the CUDA pipeline's pool (small meshes: inline)
        assert _generate(port, image, 7) == first  # the device again, the same bytes
        print(
            f"healthy after {warm:.1f} s; the fault's answer {answered - started:.1f} s; the "
            f"next prompt, sent at once, answered in {after_s:.1f} s by the "
            f"{'new image' if by_new_image else 'old image (fallback)'}; {len(workers)} child "
            "processes before the restart"
        )


@pytest.mark.parametrize("device", DEVICES)
def test_a_fault_after_the_deadline_is_found_and_survived(device: str, tmp_path: Path) -> None:
    """TRELLIS.2 (the fake package, small) guarded by a deadline: the first prompt's generation
    is abandoned at it, the fallback answers, and only then does that generation break the
    device. Nothing awaits it, yet the fault is found at once, and what it held is kept: the
    process lives on (freed on a broken context, a staged image aborts it) and the fallback
    answers the next prompt."""
    image = _prompt()
    weights = write_fake_weights(tmp_path / "weights")
    args = ["--device", device, "--generator", "trellis2", "--weights-dir", str(weights)]
    args += ["--matting", "classical", "--trellis2-pipeline-type", "512", *SMALL]
    args += ["--deadline-s", "3", "--fallback-margin-s", "2", "--no-fault-restart"]
    # The warm-up, then the first request, whose fault comes 4 s in: the fallback answered
    # it 1 s after its arrival.
    env = {"FAULT_AT_CALL": "2", "FAULT_DELAY_S": "4"}
    with _faulty_server(tmp_path, args, env, (FAKES / "trellis",)) as (server, port, _):
        _wait_for(port, "healthy", server)
        started = time.monotonic()
        answered = _generate(port, image, 7)
        answered_s = time.monotonic() - started
        load_single_mesh(answered)
        status, counters = _last_job(port)
        assert counters["last_job_s"]["fallback"] == "deadline"
        assert not (tmp_path / "faulted").exists() or status == "faulted"
        # The abandoned generation breaks the device; no other job comes to find it.
        found_s = _wait_for(port, "faulted", server)
        assert (tmp_path / "faulted").exists()
        code, body = _get(port, "/health")
        assert code == 503 and "illegal memory access" in body["detail"]
        time.sleep(1.0)  # anything freed after the check would have aborted by now
        assert server.poll() is None
        after = _generate(port, image, 7)
        load_single_mesh(after)
        status, counters = _last_job(port)
        assert status == "faulted" and counters["last_job_s"]["fallback"] == "fault"
        assert (counters["fallbacks_deadline"], counters["fallbacks_fault"]) == (1, 1)
        assert (counters["jobs_done"], counters["jobs_failed"]) == (2, 0)
        assert server.poll() is None
        print(
            f"the deadline's answer in {answered_s:.1f} s; the fault found {found_s:.1f} s "
            "later, before any other job"
        )


@pytest.mark.parametrize("device", DEVICES)
def test_a_device_that_fails_to_load_after_the_restart_leaves_the_server_on_the_host(
    device: str, tmp_path: Path
) -> None:
    """The new process image's pipeline fails to load (a device broken for good): it serves
    from inflate on the CPU, faulted, instead of refusing every prompt as failed; the prompt
    sent during the restart is answered."""
    image = _prompt()
    args = ["--device", device, "--generator", "inflate", "--matting", "classical", *SMALL]
    env = {"FAULT_AT_CALL": "3", "FAIL_LOAD_AFTER_FAULT": "1"}
    with _faulty_server(tmp_path, args, env) as (server, port, log_path):
        _wait_for(port, "healthy", server)
        _generate(port, image, 7)
        faulted = _generate(port, image, 7)  # the fault; the restart follows at once
        after = _generate(port, image, 7)
        assert after == faulted  # both the CPU fallback's, which is deterministic
        _wait_for_line(log_path, "loading inflate on the CPU instead", server)
        code, body = _get(port, "/health")
        assert code == 503 and "uncorrectable ECC" in body["detail"]
        status, counters = _last_job(port)
        assert status == "faulted" and counters["last_job_s"]["fallback"] == "fault"
        assert (counters["jobs_done"], counters["fallbacks_fault"]) == (1, 1)  # the new image's
        assert _generate(port, image, 7) == faulted
        assert server.poll() is None
        assert "restarting after the device fault" in log_path.read_text(errors="replace")
