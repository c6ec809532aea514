"""Per-step profile of a generation over the shared prompts: where the time and GPU memory go.

    python perf/profile.py [--prompts DIR] [--count N] [--repeat K] [--warmup N] [--png]
                           [--seed N] [--set NAME=VALUE ...] [--json OUT]

One run per prompt and repeat, in this process (no server), step by step:
  decode, prepare (matte, crop)   what the server's CPU pool does, ahead of time with prefetch;
  stage                           pinned upload and the generator's preprocessing (side stream);
  generate, mesh.<step>, atlas,   the GPU worker's call, the one that prefetch cannot hide:
  bake, glb.<step>                mesh steps weld, degenerate (+ download), simplify,
                                  weld_slabs, orient, compact, frame, normals; GLB steps check,
                                  encode (the texture), write (the file's parts).
A stage's ".other" row is its time after its last marked step.

On CUDA each step is timed with CUDA events on the current stream (`pipeline/profiling.py`:
no synchronisation at the marks, the stream's own clock) and the peak GPU memory of each run
is `torch.cuda.max_memory_allocated` after a reset; elsewhere the host clock times the steps,
the header says so, and no GPU memory is reported. `pipeline.warm_up()` and `--warmup` untimed
runs come first. Prints a table of medians, p90 and each step's share of the median total,
the worker's total (the critical path with prefetch), peak memory, the dominant stage and its
largest step.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

# Run as a script, this file's folder leads sys.path, where this file would shadow the standard
# library's `profile` (cProfile imports it, and torch._dynamo cProfile): the folder moves to the
# end (appended, then its first occurrence removed) and the repository leads instead.
sys.path.append(str(Path(__file__).resolve().parent))
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.stages import DEFAULT_PROMPTS, commit, device_name, percentile
from pipeline.profiling import mark, recording
from pipeline.run import Pipeline
from pipeline.settings import PipelineSettings, parse_overrides, settings_from_env

AHEAD_STEPS = ("decode", "prepare", "stage")  # off the critical path when prefetch is on
OTHER = "other"


def load_prompts(folder: Path, count: int, png: bool) -> list[tuple[str, bytes]]:
    paths = sorted(folder.glob("*.webp"))[:count]
    return [(path.name, _as_png(path) if png else path.read_bytes()) for path in paths]


def _as_png(path: Path) -> bytes:
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def profile_once(
    pipeline: Pipeline, data: bytes, seed: int
) -> tuple[list[tuple[str, float]], float | None]:
    """One generation, step by step: ([(step, ms)] in order, peak GPU MiB; None off CUDA)."""
    device = pipeline.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with recording(device) as recorder:
        # 1. What the CPU pool does: decode (which marks its own end), matte and crop.
        prepared = pipeline.prepare(data)
        mark("prepare")
        # 2. The upload and preprocessing on the side stream, waited for as the worker does.
        staged = pipeline.stage(prepared)
        if staged.ready is not None:
            staged.ready.synchronize()
        mark("stage")
        # 3. The GPU worker's call; its stages and steps mark themselves.
        pipeline.generate(staged, seed)
    steps = recorder.steps_ms()
    peak_mib = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return _named(steps), peak_mib


def _named(steps: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """A stage's closing mark after marked steps of its own becomes `<stage>.other`."""
    seen: set[str] = set()
    named = []
    for step, ms in steps:
        stage = step.split(".")[0]
        named.append((f"{step}.{OTHER}" if "." not in step and stage in seen else step, ms))
        if "." in step:
            seen.add(stage)
    return named


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and p90 of every step and stage over the runs, each with its share of the total."""
    order: list[str] = []
    for run in runs:
        order += [step for step in run["steps"] if step not in order]
    stages = list(dict.fromkeys(step.split(".")[0] for step in order))
    totals = [sum(run["steps"].values()) for run in runs]
    worker = [
        sum(ms for step, ms in run["steps"].items() if step not in AHEAD_STEPS) for run in runs
    ]
    total_median = statistics.median(totals)

    def spread(values: list[float]) -> dict[str, float]:
        median = statistics.median(values)
        return {"median": median, "p90": percentile(values, 90), "share": median / total_median}

    rows: dict[str, dict[str, float]] = {}
    for stage in stages:
        members = [s for s in order if s.split(".")[0] == stage]
        rows[stage] = spread([sum(run["steps"].get(s, 0.0) for s in members) for run in runs])
        if members != [stage]:
            for step in members:
                rows[step] = spread([run["steps"].get(step, 0.0) for run in runs])
    worker_stages = [s for s in stages if s not in AHEAD_STEPS]
    dominant = max(worker_stages, key=lambda s: rows[s]["median"]) if worker_stages else None
    inside = [s for s in rows if dominant and s.startswith(f"{dominant}.")]
    peaks = [run["peak_mib"] for run in runs if run["peak_mib"] is not None]
    return {
        "rows": rows,
        "stages": stages,
        "total": spread(totals),
        "worker_total": spread(worker),
        "dominant_stage": dominant,
        "largest_step": max(inside, key=lambda s: rows[s]["median"]) if inside else dominant,
        "peak_mib": (
            {"median": statistics.median(peaks), "p90": percentile(peaks, 90), "max": max(peaks)}
            if peaks
            else None
        ),
    }


def table(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [
        f"device: {meta['device']}  commit: {meta['commit']}  torch {meta['torch']}  "
        f"runs: {meta['runs']} ({meta['prompts']} prompts x {meta['repeat']})  "
        f"resolution {meta['settings']['resolution']}  faces {meta['settings']['face_budget']}  "
        f"texture {meta['settings']['texture_size']}",
        f"timer: {meta['timer']}",
        f"{'step':<22}{'where':<10}{'median ms':>11}{'p90 ms':>10}{'share':>8}",
    ]
    rows = summary["rows"]
    for step, row in rows.items():
        stage = step.split(".")[0]
        where = "ahead" if stage in AHEAD_STEPS else "worker"
        name = f"  {step.split('.', 1)[1]}" if "." in step else step
        lines.append(
            f"{name:<22}{where:<10}{row['median']:>11.1f}{row['p90']:>10.1f}"
            f"{row['share'] * 100:>7.1f}%"
        )
    for label, row in (("total", summary["total"]), ("worker total", summary["worker_total"])):
        lines.append(
            f"{label:<32}{row['median']:>11.1f}{row['p90']:>10.1f}{row['share'] * 100:>7.1f}%"
        )
    peak = summary["peak_mib"]
    if peak:
        lines.append(
            f"peak GPU memory MiB (max_memory_allocated per run): median {peak['median']:.0f}  "
            f"p90 {peak['p90']:.0f}  max {peak['max']:.0f}"
        )
    else:
        lines.append("peak GPU memory: none (CPU path)")
    dominant, largest = summary["dominant_stage"], summary["largest_step"]
    if dominant:
        line = f"dominant stage: {dominant} ({rows[dominant]['share'] * 100:.0f} % of the total)"
        if largest != dominant:
            line += f", its largest step: {largest} ({rows[largest]['share'] * 100:.0f} %)"
        lines.append(line)
    lines.append(
        "where: ahead = the CPU pool and side stream, hidden by prefetch while the previous job "
        "generates; worker = the GPU worker's call"
    )
    return "\n".join(lines)


def _cpu_name() -> str:
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--count", type=int, default=24, help="prompts to use (sorted by name)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per prompt")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs on the first prompts")
    parser.add_argument("--png", action="store_true", help="re-encode prompts as PNG first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path, help="write every run's steps and the summary here")
    args = parser.parse_args(argv)

    prompts = load_prompts(args.prompts, args.count, args.png) if args.prompts.is_dir() else []
    if not prompts:
        print(f"no prompts in {args.prompts}", file=sys.stderr)
        return 2
    settings = settings_from_env(PipelineSettings, **parse_overrides(PipelineSettings, args.set))
    pipeline = Pipeline(settings)
    pipeline.load()
    pipeline.warm_up()
    for _, data in prompts[: args.warmup]:
        profile_once(pipeline, data, args.seed)
    runs = []
    for name, data in prompts:
        for _ in range(args.repeat):
            steps, peak_mib = profile_once(pipeline, data, args.seed)
            totals: dict[str, float] = {}
            for step, ms in steps:
                totals[step] = totals.get(step, 0.0) + ms
            runs.append({"prompt": name, "steps": totals, "peak_mib": peak_mib})
    cuda = pipeline.device.type == "cuda"
    meta = {
        "device": device_name() if cuda else _cpu_name(),
        "commit": commit(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "timer": "CUDA events on the current stream"
        if cuda
        else "host clock (time.perf_counter): not on CUDA, so no CUDA events",
        "runs": len(runs),
        "prompts": len(prompts),
        "repeat": args.repeat,
        "png": args.png,
        "settings": {
            **{
                name: getattr(settings, name)
                for name in ("device", "generator", "resolution", "texture_size")
            },
            "face_budget": settings.faces_kept(pipeline.device.type),  # 0 read as on this device
        },
    }
    summary = summarize(runs)
    print(table(meta, summary))
    if args.json:
        payload = {"meta": meta, "runs": runs, "summary": summary}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
