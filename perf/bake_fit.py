"""What the bake's fit to bilinear sampling costs and buys (pipeline/texture_fit.py): per input
(perf/quality.py's inputs: a mesh file, a prompt image or `synthetic:FACES`), unwrapped by
the default atlas, the medians of the bake without and with the fit, of the fit's parts (the
quarter-point raster, the colour there, the conjugate-gradient steps: 0 is the right-hand side
alone) and, per step count, the mean squared error at the quarter points on the surface
(after clamping to [0, 1]), against the texel-centre bake's.

    python -m perf.bake_fit PROMPT.webp Duck.glb synthetic:1000000 [--device cuda]
        [--steps 0,4,8,16] [--repeat 5] [--size 2048]
"""

from __future__ import annotations

import argparse
import sys

import torch

from kernels.quarter_normal import quarter_samples
from kernels.uv_raster import uv_raster
from perf.bench import median_ms
from perf.quality_inputs import load_input
from pipeline.atlas import unwrap
from pipeline.bake import bake_texture, quarter_colours
from pipeline.settings import PipelineSettings
from pipeline.texture_fit import fit_texture


def measure(spec: str, settings: PipelineSettings, steps: list[int], repeat: int) -> str:
    device = torch.device(settings.device)
    size = settings.texture_size
    item = load_input(spec, settings, device)
    mesh = unwrap(item.mesh, settings)
    times = {
        "bake": median_ms(lambda: bake_texture(mesh, size, item.colour), device, 1, repeat),
        "bake+fit": median_ms(
            lambda: bake_texture(mesh, size, item.colour, fit=True), device, 1, repeat
        ),
    }
    quarter = uv_raster(mesh.uvs, mesh.faces, 2 * size, 2 * size, conservative=False)
    times["raster"] = median_ms(
        lambda: uv_raster(mesh.uvs, mesh.faces, 2 * size, 2 * size, conservative=False),
        device,
        1,
        repeat,
    )
    inside = quarter.face_ids >= 0
    face, barycentrics = quarter.face_ids[inside], quarter.barycentrics[inside]
    points = (barycentrics[:, :, None] * mesh.positions[mesh.faces[face]]).sum(1)
    times["colour"] = median_ms(lambda: item.colour(face, barycentrics, points), device, 1, repeat)
    colours, inside = quarter_colours(mesh, size, item.colour)  # what the bake fits to
    centred = bake_texture(mesh, size, item.colour)

    def error(texture: torch.Tensor) -> float:
        return float((quarter_samples(texture.clamp(0, 1)) - colours)[inside].pow(2).mean())

    parts = [f"{name} {ms:.1f}" for name, ms in times.items()]
    fits = [f"centres {error(centred):.3e}"]
    for count in steps:
        ms = median_ms(lambda n=count: fit_texture(centred, colours, inside, n), device, 1, repeat)
        fits.append(
            f"{count} steps {ms:.1f} ms {error(fit_texture(centred, colours, inside, count)):.3e}"
        )
    return (
        f"{item.name} ({len(mesh.faces)} faces, {int(inside.sum())} quarter points): ms "
        + ", ".join(parts)
        + "; error "
        + ", ".join(fits)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--steps", default="0,4,8,16")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (use --device cpu)")
    settings = PipelineSettings(device=args.device, texture_size=args.size)
    steps = [int(s) for s in args.steps.split(",") if s]
    for spec in args.inputs:
        print(measure(spec, settings, steps, args.repeat), flush=True)


if __name__ == "__main__":
    main()
