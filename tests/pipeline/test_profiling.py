"""pipeline/profiling.py: marks do nothing outside a recording; inside one they time the steps
in order, in the recording's own context only; a whole run marks every stage and step that
perf/profile.py reports, and recording changes nothing in the output."""

from __future__ import annotations

import threading
import time

import torch

from pipeline.profiling import mark, recording
from pipeline.run import Pipeline, warm_up_image
from pipeline.settings import PipelineSettings

SLEEP_S = 0.02
# time.sleep may overshoot by a scheduler tick or more on a loaded CI machine, never undershoot.
CLOCK_SLACK_MS = 0.5

SMALL = PipelineSettings(device="cpu", resolution=48, face_budget=600, texture_size=128)
EXPECTED_STEPS = [
    "decode",
    "generate",
    "mesh.weld",
    "mesh.degenerate",
    "mesh.simplify",
    "mesh.weld_slabs",
    "mesh.orient",
    "mesh.compact",
    "mesh.frame",
    "mesh.normals",
    "mesh",
    "atlas.segment",
    "atlas.pleats",
    "atlas.relax",
    "atlas.tiles",
    "atlas.folds",
    "atlas.layout",
    "atlas.seams",
    "atlas",
    "bake",
    "glb.check",
    "glb.encode",
    "glb.write",
    "glb",
]


def test_a_mark_outside_a_recording_does_nothing() -> None:
    mark("anything")  # no recorder: no error, nothing kept anywhere
    with recording("cpu") as recorder:
        pass
    mark("after")
    assert recorder.steps_ms() == []


def test_steps_are_timed_from_mark_to_mark_in_order() -> None:
    with recording(torch.device("cpu")) as recorder:
        time.sleep(SLEEP_S)
        mark("first")
        mark("empty")
        time.sleep(2 * SLEEP_S)
        mark("second")
    steps = recorder.steps_ms()
    assert [name for name, _ in steps] == ["first", "empty", "second"]
    first, empty, second = (ms for _, ms in steps)
    assert first >= SLEEP_S * 1e3 - CLOCK_SLACK_MS
    assert 0 <= empty < first
    assert second >= 2 * SLEEP_S * 1e3 - CLOCK_SLACK_MS


def test_other_threads_never_see_the_recording() -> None:
    with recording("cpu") as recorder:
        worker = threading.Thread(target=mark, args=("from another thread",))
        worker.start()
        worker.join()
        mark("here")
    assert [name for name, _ in recorder.steps_ms()] == ["here"]


def test_a_run_marks_every_stage_and_step_and_gives_the_same_bytes() -> None:
    pipeline = Pipeline(SMALL)
    pipeline.load()
    image = warm_up_image()
    plain = pipeline.run(image, seed=3)
    with recording("cpu") as recorder:
        recorded = pipeline.run(image, seed=3)
    names = [name for name, _ in recorder.steps_ms()]
    assert names == EXPECTED_STEPS
    assert all(ms >= 0 for _, ms in recorder.steps_ms())
    assert b"".join(map(bytes, recorded.glb.chunks)) == b"".join(map(bytes, plain.glb.chunks))
