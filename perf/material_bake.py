"""What the metallicRoughness texture costs (pipeline/bake.py): per prompt image, the inflate
asset at `--resolution` with a material put into its voxel field that varies as TRELLIS.2's
may (metallic and roughness smooth functions of position), unwrapped once, then `bake` and
`write_glb` with MATERIAL=constant (the colour texture alone), MATERIAL=roughness (the field's
roughness in a second texture) and MATERIAL=field (both) in alternating runs: their medians,
the GLB sizes, whether the GLBs' base colour is the same bits, and the field texture's error
against the field's material at the centres of texels inside faces (uint8 levels). Then the
default mode's texture (roughness beside metallic 0: one grey channel) against the same values
as the RGB texture it would otherwise be (R 0, G roughness, B 255): encoded bytes, the median
encode time, and the roughness error after the GLB's encoding is decoded (Pillow, as trimesh).

    python -m perf.material_bake PROMPT.webp... [--device cuda] [--resolution 1024]
        [--repeat 9] [--size 2048]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kernels.uv_raster import uv_raster
from perf.bench import sync
from pipeline.atlas import unwrap
from pipeline.bake import bake
from pipeline.decode import decode_image
from pipeline.generators.inflate import InflateGenerator
from pipeline.glb import encode_texture, write_glb
from pipeline.mesh import process_mesh
from pipeline.prepare import prepare_image
from pipeline.settings import PipelineSettings
from pipeline.types import RawAsset, UVMesh

# Waves of about a tenth of the object: far smoother than the colour, but no uniform patch.
WAVE = 12.0


def material_at(points: torch.Tensor) -> torch.Tensor:
    """[N, 3] asset-frame points -> [N, 2] (metallic, roughness) in [0, 1]."""
    x, y, z = points.unbind(1)
    metallic = 0.5 + 0.45 * torch.sin(WAVE * x) * torch.cos(WAVE * y)
    roughness = 0.55 + 0.4 * torch.sin(WAVE * z + 1.0)
    return torch.stack((metallic, roughness), 1)


def with_material(asset: RawAsset) -> RawAsset:
    centres = (asset.coords.double() + 0.5) / asset.resolution - 0.5
    material = material_at(centres).float().to(asset.attrs.device)
    attrs = torch.cat((asset.attrs[:, :3], material, asset.attrs[:, 5:]), dim=1)
    return dataclasses.replace(asset, attrs=attrs)


def texel_error(
    uv_mesh: UVMesh, texture: np.ndarray, channels: tuple[int, ...] = (2, 1)
) -> tuple[float, float]:
    """(mean, max) |texture - field material| in uint8 levels over texels whose centre lies in
    a face; `channels`: the texture's channels holding (metallic, roughness), by default both
    (B, G), or (G,) / (0,) for the roughness alone (RGB / grey)."""
    size = texture.shape[0]
    raster = uv_raster(uv_mesh.uvs, uv_mesh.faces, size, size, conservative=False)
    rows, cols = torch.nonzero(raster.face_ids >= 0, as_tuple=True)
    faces = uv_mesh.faces[raster.face_ids[rows, cols]]
    weights = raster.barycentrics[rows, cols].double()
    points = (weights[:, :, None] * uv_mesh.positions.double()[faces]).sum(1)
    expected = material_at(uv_mesh.frame.to_asset(points)).cpu() * 255
    expected = expected[:, -len(channels) :]  # both, or the roughness alone
    layers = texture.reshape(size, size, -1)
    got = torch.from_numpy(layers).to(rows.device)[rows, cols][:, list(channels)].double().cpu()
    error = (got - expected).abs()
    return float(error.mean()), float(error.max())


def grey_against_rgb(
    uv_mesh: UVMesh, grey: np.ndarray, settings: PipelineSettings, repeat: int
) -> str:
    """The default mode's grey texture beside the RGB one it would otherwise be: bytes, median
    encode ms, the roughness error after a decode of each."""
    rgb = np.stack((np.zeros_like(grey), grey, np.full_like(grey, 255)), 2)
    parts = []
    for name, texture, channels in (("grey", grey, (0,)), ("as RGB", rgb, (1,))):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            data, _ = encode_texture(texture, settings)
            times.append((time.perf_counter() - start) * 1e3)
        decoded = np.array(Image.open(io.BytesIO(data)))
        mean, worst = texel_error(uv_mesh, decoded, channels)
        parts.append(
            f"{name} {len(data) / 2**10:.0f} KiB, {statistics.median(times):.1f} ms,"
            f" error after decode mean {mean:.2f} max {worst:.1f}"
        )
    return "roughness texture " + "; ".join(parts)


def measure(path: Path, settings: PipelineSettings, repeat: int) -> str:
    device = torch.device(settings.device)
    prepared = prepare_image(decode_image(path.read_bytes(), settings), settings)
    plain = InflateGenerator(settings, device).generate(prepared.to(device), seed=0)
    asset = with_material(plain)
    uv_mesh = unwrap(process_mesh(asset, settings), settings)
    names = ("constant", "roughness", "field")
    modes = {name: dataclasses.replace(settings, material=name) for name in names}
    times: dict[str, dict[str, list[float]]] = {name: {"bake": [], "glb": []} for name in modes}
    outputs = {}
    for run in range(repeat + 1):  # the first round warms up (compiles the 5-channel kernels)
        for name, config in modes.items():
            sync(device)
            start = time.perf_counter()
            textured = bake(uv_mesh, asset, config)
            sync(device)
            baked = time.perf_counter()
            glb = write_glb(textured, config).to_bytes()
            done = time.perf_counter()
            if run:
                times[name]["bake"].append((baked - start) * 1e3)
                times[name]["glb"].append((done - baked) * 1e3)
            outputs[name] = (textured, glb)
    constant, field = outputs["constant"][0], outputs["field"][0]
    assert field.metallic_roughness is not None and constant.metallic_roughness is None
    same = all(np.array_equal(constant.base_color, t.base_color) for t, _ in outputs.values())
    mean, worst = texel_error(uv_mesh, field.metallic_roughness)
    medians = {name: {step: statistics.median(t) for step, t in steps.items()}
               for name, steps in times.items()}  # fmt: skip
    parts = [
        f"{name}: bake {m['bake']:.1f} ms, glb {m['glb']:.1f} ms" for name, m in medians.items()
    ]
    return (
        f"{path.stem[:12]} ({len(uv_mesh.faces)} faces, grid {settings.resolution}): "
        + "; ".join(parts)
        + "; GLB MiB "
        + ", ".join(f"{name} {len(glb) / 2**20:.3f}" for name, (_, glb) in outputs.items())
        + f"; base colour same bits: {same}; metallicRoughness error mean {mean:.2f},"
        f" max {worst:.1f} levels; "
        + grey_against_rgb(uv_mesh, outputs["roughness"][0].metallic_roughness, settings, repeat)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompts", nargs="+", type=Path)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (use --device cpu)")
    settings = PipelineSettings(
        device=args.device, resolution=args.resolution, texture_size=args.size
    )
    for path in args.prompts:
        print(measure(path, settings, args.repeat), flush=True)


if __name__ == "__main__":
    main()
