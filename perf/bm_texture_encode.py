"""The texture encode: one Pillow call (the GLB writer before pipeline/jpeg.py and
pipeline/png.py) against the strips on threads (`encode_jpeg`: joined by restart markers;
`encode_png`: deflated apart), on the real baked textures.

    python perf/bm_texture_encode.py [PROMPT ...] [--format jpeg,png] [--count 24]
        [--repeat 9] [--set NAME=VALUE ...] [--json OUT]

Each prompt (default: the first --count shared prompts) runs through the whole pipeline once
(seed 7, settings from the environment and --set) with the GLB writer's encode_texture
wrapped to keep the uint8 texture it gets. Then, per texture and format, the two encoders
alternate --repeat times in this process (the strips' thread pool started before), host
clock; the two files are decoded (Pillow) and compared pixel for pixel (for PNG also with the
texture itself). Per prompt: median ms of each, the sizes, whether the pixels are the same;
then the medians over the prompts. JPEG at the settings' quality, PNG at the writer's level.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import pipeline.glb as glb
from perf.stages import load_prompt
from pipeline.glb import PNG_COMPRESS_LEVEL
from pipeline.jpeg import encode_jpeg
from pipeline.png import encode_png
from pipeline.run import Pipeline
from pipeline.settings import PipelineSettings, parse_overrides, settings_from_env

SEED = 7
ROOT = Path(__file__).resolve().parents[1]
# The workplace's ../shared beside the checkout; on the GPU machine a copy inside it.
PROMPTS = next(
    (d for d in (ROOT.parent / "shared/data/prompts", ROOT / "shared/data/prompts") if d.is_dir()),
    ROOT.parent / "shared/data/prompts",
)


def pillow_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """The writer's encode before pipeline/jpeg.py: one libjpeg call through Pillow."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(
        out, format="JPEG", quality=quality, subsampling=0, optimize=False
    )
    return out.getvalue()


def pillow_png(pixels: np.ndarray, level: int) -> bytes:
    """The writer's encode before pipeline/png.py: one zlib stream through Pillow."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=level)
    return out.getvalue()


# format -> (Pillow's one call, the strips), each (pixels, quality or level) -> bytes
ENCODERS: dict[
    str, tuple[Callable[[np.ndarray, int], bytes], Callable[[np.ndarray, int], bytes]]
] = {
    "jpeg": (pillow_jpeg, encode_jpeg),
    "png": (pillow_png, encode_png),
}


def baked_textures(paths: list[Path], settings: PipelineSettings) -> list[np.ndarray]:
    textures: list[np.ndarray] = []
    encode = glb.encode_texture

    def keep(image: np.ndarray, settings: PipelineSettings) -> tuple[bytes, str]:
        textures.append(np.array(image))
        return encode(image, settings)

    glb.encode_texture = keep
    try:
        pipe = Pipeline(settings)
        pipe.load()
        for path in paths:
            pipe.run(load_prompt(path, None), SEED)
    finally:
        glb.encode_texture = encode
    return textures


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def compare(pixels: np.ndarray, kind: str, setting: int, repeat: int) -> dict[str, object]:
    pillow, strips = ENCODERS[kind]
    one, joined = pillow(pixels, setting), strips(pixels, setting)
    times: dict[str, list[float]] = {"pillow_ms": [], "strips_ms": []}
    for _ in range(repeat):
        for name, encode in (("pillow_ms", pillow), ("strips_ms", strips)):
            start = time.perf_counter()
            encode(pixels, setting)
            times[name].append((time.perf_counter() - start) * 1e3)
    same = np.array_equal(decoded(one), decoded(joined))
    if kind == "png":
        same = same and np.array_equal(decoded(joined), pixels)
    return {
        **{name: statistics.median(values) for name, values in times.items()},
        "pillow_bytes": len(one),
        "strips_bytes": len(joined),
        "same_pixels": bool(same),
        "shape": list(pixels.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts", nargs="*", type=Path)
    parser.add_argument("--format", default="jpeg,png", help="comma-separated: jpeg, png")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = args.prompts or sorted(PROMPTS.glob("*.webp"))[: args.count]
    settings = settings_from_env(PipelineSettings, **parse_overrides(PipelineSettings, args.set))
    textures = baked_textures(paths, settings)
    encode_jpeg(textures[0], settings.jpeg_quality)  # the strips' threads start here
    results = {}
    for kind in args.format.split(","):
        setting = settings.jpeg_quality if kind == "jpeg" else PNG_COMPRESS_LEVEL
        rows = []
        for path, pixels in zip(paths, textures, strict=True):
            row = {"prompt": path.name[:12], **compare(pixels, kind, setting, args.repeat)}
            rows.append(row)
            print(kind, json.dumps(row), flush=True)
        summary = {
            "pillow_ms": statistics.median(r["pillow_ms"] for r in rows),
            "strips_ms": statistics.median(r["strips_ms"] for r in rows),
            "same_pixels": all(r["same_pixels"] for r in rows),
            "size_change": statistics.median(
                r["strips_bytes"] / r["pillow_bytes"] - 1 for r in rows
            ),
        }
        print(kind, "summary", json.dumps(summary), flush=True)
        results[kind] = {"rows": rows, "summary": summary}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
