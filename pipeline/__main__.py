"""`python -m pipeline IMAGE -o out.glb [--seed N] [--set NAME=VALUE ...]`: one image, no server.

Settings come from the environment like the server's (NAME in upper case), then from --set.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.run import Pipeline
from pipeline.settings import PipelineSettings, parse_overrides, settings_from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("image", type=Path, help="PNG, JPEG, WebP, ... (format sniffed)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="GLB to write")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting, e.g. --set texture_size=1024",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        overrides = parse_overrides(PipelineSettings, args.set)
        settings = settings_from_env(PipelineSettings, **overrides)
    except ValueError as error:
        parser.error(str(error))
    pipeline = Pipeline(settings)
    pipeline.load()
    start = time.perf_counter()
    try:
        data = args.image.read_bytes()
    except OSError as error:
        print(f"{args.image}: cannot read: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        result = pipeline.run(data, args.seed)
    except ServiceError as error:
        print(f"{args.image}: {error.error}: {error.detail}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("wb") as out:
        for chunk in result.glb.chunks:
            out.write(chunk)
    stages = "  ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items())
    print(
        f"{args.output}: {result.glb.size / 1e6:.2f} MB, {result.stats.get('faces', 0):.0f} "
        f"faces, {(time.perf_counter() - start):.2f} s  [ms: {stages}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
