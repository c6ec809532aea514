"""Per-stage timings of the whole pipeline on the shared prompts (no server).

    python perf/stages.py [--prompts DIR] [--count N] [--repeat K] [--size PX]
                          [--set NAME=VALUE ...] [--json OUT]

Each prompt is re-encoded as a PNG (resized to --size x --size when given, RGBA kept), run
once to warm up (allocator, Triton/cuDNN autotune, page cache), then --repeat times. Stage
times come from the pipeline's own clock, which synchronises the GPU at every stage boundary.
Prints a table of medians and p90 per stage (ms) and the total, and the dominant stage.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.run import Pipeline
from pipeline.settings import (
    PipelineSettings,
    parse_overrides,
    settings_from_env,
)

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"
STAGES = ("prepare", "generate", "mesh", "atlas", "bake", "glb")


def load_prompt(path: Path, size: int | None) -> bytes:
    image = Image.open(path)
    image.load()
    image = image.convert("RGBA")
    if size:
        image = image.resize((size, size), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def commit() -> str:
    if os.environ.get("COMMIT"):  # machines that receive the tree without .git
        return os.environ["COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--count", type=int, default=24, help="prompts to use (sorted by name)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per prompt")
    parser.add_argument("--size", type=int, default=None, help="resize prompts to SIZE^2 RGBA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path, help="write every run's timings here")
    args = parser.parse_args(argv)

    paths = sorted(args.prompts.glob("*.webp"))[: args.count]
    if not paths:
        print(f"no prompts in {args.prompts}", file=sys.stderr)
        return 2
    settings = settings_from_env(PipelineSettings, **parse_overrides(PipelineSettings, args.set))
    pipeline = Pipeline(settings)
    pipeline.load()
    runs: list[dict[str, float]] = []
    for path in paths:
        data = load_prompt(path, args.size)
        pipeline.run(data, args.seed)  # warm-up
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = pipeline.run(data, args.seed)
            total = (time.perf_counter() - start) * 1e3
            runs.append(
                {
                    "prompt": path.name[:12],
                    **result.timings_ms,
                    "total": total,
                    "faces": result.stats.get("faces", 0.0),
                    "mb": result.glb.size / 1e6,
                }
            )
    header = (
        f"device: {device_name()}  commit: {commit()}  runs: {len(runs)} "
        f"({len(paths)} prompts x {args.repeat})  size: {args.size or 'native'}  "
        f"texture: {settings.texture_size}  faces: {settings.faces_kept(pipeline.device.type)}"
    )
    print(header)
    print(f"{'stage':<10}{'median ms':>12}{'p90 ms':>10}{'share':>8}")
    total_median = statistics.median(r["total"] for r in runs)
    medians = {}
    for stage in (*STAGES, "total"):
        values = [r.get(stage, 0.0) for r in runs]
        medians[stage] = statistics.median(values)
        share = medians[stage] / total_median * 100
        print(f"{stage:<10}{medians[stage]:>12.1f}{percentile(values, 90):>10.1f}{share:>7.0f}%")
    dominant = max(STAGES, key=lambda s: medians[s])
    print(f"dominant stage: {dominant}")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
