"""Where the chart atlas spends its time: each step (pipeline/atlas.py's marks) timed with the
device synchronised, on synthetic meshes of the given face counts or on perf/quality.py's
inputs (a mesh file or a prompt image), plus a cProfile of one run (host time per function; on
CUDA the waits land on the call that synchronises). Each line ends with the last run's stats.

    python -m perf.atlas_steps 200000 1000000 PROMPT.webp [--device cuda] [--repeat 3] [--profile]

(as a module: perf/profile.py would shadow the standard library's profile, which cProfile
imports).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import torch

import pipeline.atlas as atlas_module
from perf.bench import sync
from perf.quality_inputs import load_input
from perf.synthetic import synthetic_mesh
from pipeline.settings import PipelineSettings


def _marker(
    steps: dict[str, list[float]], last: list[float], device: torch.device
) -> Callable[[str], None]:
    def mark(step: str) -> None:
        sync(device)
        now = time.perf_counter()
        steps.setdefault(step, []).append((now - last[0]) * 1e3)
        last[0] = now

    return mark


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="+", help="face counts, mesh files or prompt images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = PipelineSettings(device=args.device)

    for spec in args.inputs:
        if spec.isdigit():
            mesh = synthetic_mesh(int(spec), device=device)
        else:
            mesh = load_input(spec, settings, device).mesh
        steps: dict[str, list[float]] = {}
        last = [0.0]
        atlas_module.mark = _marker(steps, last, device)
        for run in range(args.repeat + 1):
            sync(device)
            last[0] = time.perf_counter()
            uv_mesh = atlas_module.unwrap(mesh, settings)
            if run == 0:  # the warm-up
                steps.clear()
        line = "  ".join(f"{k} {statistics.median(v):.1f}" for k, v in steps.items())
        total = sum(statistics.median(v) for v in steps.values())
        stats = "  ".join(f"{k} {v:g}" for k, v in uv_mesh.stats.items())
        print(f"{len(mesh.faces)} faces on {device}: {line}  total {total:.1f} ms  ({stats})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            atlas_module.unwrap(mesh, settings)
            sync(device)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
