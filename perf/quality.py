"""Quality and speed of the UV atlas and of the texture baked into it, per input and method.

    python perf/quality.py INPUT... --json OUT.json [--atlas METHODS] [--texture-size 2048]
                           [--render-size 518] [--repeat 3] [--device cuda|cpu]
                           [--xatlas-timeout 300] [--markdown] [--set NAME=VALUE ...]

INPUT: a mesh file (.glb, .obj, .ply, ...), an image (a prompt) or a folder of them, or
`synthetic:FACES` (perf/quality_inputs.py says what each becomes). METHODS: a comma list of
atlas methods (`PipelineSettings.atlas_method`'s choices, or "default" for the pipeline's
default, which is also what runs without --atlas).

Recipe, per input:
  1. the mesh and its reference colour source (perf/quality_inputs.py);
  2. the judge's four flat views of it (perf/flat_render.py) and the reference colour at every
     foreground pixel: the atlas keeps the faces' order, so these serve every method;
then per method:
  3. unwrap: one warm-up and --repeat timed runs, the median reported (xatlas: one run, with
     --xatlas-timeout as its time limit; when `unwrap` fell back to the default atlas the
     record says atlas_ok false and carries no quality numbers; its atlas_ms then includes the
     wait and the fallback);
  4. the UV mesh's faces checked against the mesh's (same corners, same order), its charts,
     overlap_texels, utilisation, margin_share and packing_bound (perf/quality_metrics.py:
     the utilisation a perfect piece-shaped packing of the same pieces would reach, an
     estimate that tells packing waste from the pieces' own outlines);
  5. bake (`pipeline.bake.bake_texture` as the server bakes: fitted where it fits, its free texels
     set for the settings' JPEG where `jpeg_fill_enabled`, and the uint8 quantisation the GLB
     stores): one warm-up and --repeat timed runs;
  6. psnr_db and seam_psnr_db of the baked texture against the reference, over the views;
then, with two or more methods that worked:
  7. seam_cost_db of each against each other (perf/quality_metrics.py): how much worse it
     renders the pixels beside its own seams than the other does, beyond their difference
     elsewhere; seam PSNR alone also counts where the seams lie (creases, where colour changes).
     seam_cost_pixels: the pixels it rests on, [beside its seams only, beside neither's]; a
     few thousand make it noisy (prompt 1 at the 1024 grid: 1820 beside neither).
And for a mesh file with a texture:
  8. source_limited_faces and source_limited_pixels: the faces whose own texture gives them
     more texels per unit area than the baked texture could give every face
     (perf/quality_metrics.py), and their pixels; resolvable_psnr_db and
     resolvable_seam_psnr_db: psnr_db and seam_psnr_db over the other pixels, where a layout's
     losses are its own.
And per method that worked:
  9. unrounded_psnr_db and unrounded_seam_psnr_db: psnr_db and seam_psnr_db of the baked float
     texture before the uint8 rounding, sampled the same way: the layout's and bake's losses
     without the rounding's. Near the rounding's floor (~62.4 dB for a smooth source) the
     rounding decides psnr_db, and it can cost a denser texture more: neighbouring texels of
     a slowly varying colour round the same way, so bilinear sampling averages their errors
     away less (perf/RESULTS.md, 2026-11-24: the sword).
 10. stored_psnr_db and stored_seam_psnr_db: psnr_db and seam_psnr_db of the texture as the GLB
     stores it: the uint8 texture encoded as `pipeline.glb.encode_texture` encodes it
     (TEXTURE_FORMAT, JPEG_QUALITY: by default JPEG at quality 90) and decoded again by Pillow
     (as trimesh, which the judge loads GLBs with, decodes it); texture_format and
     texture_bytes, what it was stored as and in how many bytes. With PNG these equal psnr_db
     and seam_psnr_db (lossless); with JPEG its loss comes on top of the rounding's.
Times are wall milliseconds with the device synchronised before and after the timed call, and
nothing else inside it. The JSON holds one record per (input, method) and the device, torch
version, date and commit (COMMIT in the environment, else git).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.bench import sync
from perf.flat_render import VIEW_SIZE, render_views
from perf.quality_inputs import QualityInput, expand_inputs, load_input
from perf.quality_metrics import (
    face_pixels,
    fidelity_of,
    margin_share,
    overlap_texels,
    packing_bound,
    pixel_errors,
    reference_colours,
    seam_cost_db,
    seam_pixels,
    source_limited_faces,
    utilisation,
    uv_charts,
)
from perf.stages import commit
from pipeline.atlas import unwrap
from pipeline.bake import bake_texture, fit_enabled, jpeg_fill_enabled, quantise
from pipeline.glb import encode_texture
from pipeline.settings import PipelineSettings, parse_overrides, settings_from_env
from pipeline.types import UVMesh

__all__ = [
    "Pixels",
    "add_seam_costs",
    "main",
    "markdown_table",
    "measure_input",
    "measure_method",
    "parse_methods",
    "stored_format",
    "stored_texture",
    "timed",
]

log = logging.getLogger("perf.quality")

XATLAS = "xatlas"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Pixels:
    errors: torch.Tensor  # [P] float64, `pixel_errors` of the baked texture
    seams: torch.Tensor  # [P] bool, `seam_pixels` of the layout


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """fn() and its wall milliseconds, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, (time.perf_counter() - start) * 1e3


def _repeated(
    fn: Callable[[], T], device: torch.device, repeat: int, warm_up: bool = True
) -> tuple[list[T], list[float]]:
    if warm_up:
        fn()
    runs = [timed(fn, device) for _ in range(repeat)]
    return [result for result, _ in runs], [ms for _, ms in runs]


def _check_face_order(item: QualityInput, uv_mesh: UVMesh) -> None:
    """The atlas must keep the faces and their corners in order: face ids index both."""
    mesh = item.mesh
    same = len(uv_mesh.faces) == len(mesh.faces) and torch.equal(
        uv_mesh.positions[uv_mesh.faces], mesh.positions[mesh.faces]
    )
    if not same:
        raise RuntimeError(f"{item.name}: the atlas changed the faces or their corner order")


def measure_method(
    item: QualityInput,
    method: str,
    views: list,
    reference: list[torch.Tensor],
    settings: PipelineSettings,
    repeat: int,
) -> tuple[dict[str, Any], Pixels | None]:
    """One (input, method) record (see the module docstring, steps 3-6), and its pixels'
    errors and seams (None when the atlas failed)."""
    device = item.mesh.positions.device
    size = settings.texture_size
    record: dict[str, Any] = {"input": item.name, "kind": item.kind, "method": method}
    record["faces"] = len(item.mesh.faces)
    # 3. Unwrap.
    settings = dataclasses.replace(settings, atlas_method=method)
    if method == XATLAS:
        uv_mesh, atlas_ms = timed(lambda: unwrap(item.mesh, settings), device)
        record.update(atlas_ms=atlas_ms, atlas_runs=1)
        record["atlas_ok"] = uv_mesh.stats.get("xatlas") == 1.0
        record["repeatable"] = None
    else:
        uv_meshes, times = _repeated(lambda: unwrap(item.mesh, settings), device, repeat)
        uv_mesh = uv_meshes[-1]
        record.update(atlas_ms=statistics.median(times), atlas_runs=len(times), atlas_ok=True)
        record["repeatable"] = all(
            torch.equal(m.uvs, uv_mesh.uvs) and torch.equal(m.faces, uv_mesh.faces)
            for m in uv_meshes
        )
    if not record["atlas_ok"]:
        log.warning("%s: %s failed or timed out; no quality numbers", item.name, method)
        return record, None
    # 4. Layout.
    _check_face_order(item, uv_mesh)
    chart_of_face, charts = uv_charts(uv_mesh.faces)
    record.update(
        uv_vertices=len(uv_mesh.uvs),
        charts=charts,
        overlap_texels=overlap_texels(uv_mesh.uvs, uv_mesh.faces, chart_of_face, size),
        utilisation=utilisation(uv_mesh.uvs, uv_mesh.faces),
        margin_share=margin_share(uv_mesh.uvs, uv_mesh.faces, size, settings.gutter),
    )
    record["packing_bound"] = packing_bound(record["utilisation"], record["margin_share"])
    # 5. Bake.
    fit = fit_enabled(settings, device)
    jpeg_quality = settings.jpeg_quality if jpeg_fill_enabled(settings, device) else None
    unrounded: list[torch.Tensor] = []  # the last run's float texture (9. below)

    def baked() -> torch.Tensor:
        texture = bake_texture(uv_mesh, size, item.colour, fit, jpeg_quality)
        unrounded[:] = [texture]
        return quantise(texture)

    textures, times = _repeated(baked, device, repeat)
    record.update(bake_ms=statistics.median(times), bake_runs=len(times), bake_fit=fit)
    # 6. Fidelity, of the uint8 texture and (9.) of the float one before rounding.
    pixels = Pixels(
        pixel_errors(views, reference, uv_mesh.uvs, uv_mesh.faces, textures[-1]),
        seam_pixels(views, chart_of_face),
    )
    record.update(dataclasses.asdict(fidelity_of(pixels.errors, pixels.seams)))
    errors = pixel_errors(views, reference, uv_mesh.uvs, uv_mesh.faces, unrounded[0] * 255)
    before = fidelity_of(errors, pixels.seams)
    record.update(unrounded_psnr_db=before.psnr_db, unrounded_seam_psnr_db=before.seam_psnr_db)
    # 10. The texture as the GLB stores it, decoded again.
    stored, encoded_bytes = stored_texture(textures[-1], settings)
    errors = pixel_errors(views, reference, uv_mesh.uvs, uv_mesh.faces, stored)
    kept = fidelity_of(errors, pixels.seams)
    record.update(texture_format=stored_format(settings), texture_bytes=encoded_bytes)
    record.update(stored_psnr_db=kept.psnr_db, stored_seam_psnr_db=kept.seam_psnr_db)
    return record, pixels


def stored_format(settings: PipelineSettings) -> str:
    """What the GLB stores the texture as: "png", or "jpeg 90" (with its quality)."""
    if settings.texture_format == "jpeg":
        return f"jpeg {settings.jpeg_quality}"
    return settings.texture_format


def stored_texture(texture: torch.Tensor, settings: PipelineSettings) -> tuple[torch.Tensor, int]:
    """texture: [S, S, 3] uint8 -> the same texture after the GLB's encoding (on its device)
    and decoding by Pillow, and the encoded size in bytes."""
    data, _ = encode_texture(texture.cpu().numpy(), settings)
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.array(image.convert("RGB"))
    return torch.from_numpy(pixels).to(texture.device), len(data)


def measure_input(
    item: QualityInput,
    methods: list[str],
    settings: PipelineSettings,
    render_size: int,
    repeat: int,
) -> list[dict[str, Any]]:
    """Every method's record for one input (steps 2-6)."""
    # 2. Views and the reference colour there.
    start = time.perf_counter()
    views = render_views(item.mesh.positions, item.mesh.faces, render_size)
    reference = reference_colours(views, item.colour)
    log.info(
        "%s: %d faces, four %d px views in %.0f ms",
        item.name,
        len(item.mesh.faces),
        render_size,
        (time.perf_counter() - start) * 1e3,
    )
    records, measured = [], []
    for method in methods:
        record, pixels = measure_method(item, method, views, reference, settings, repeat)
        record.update(texture_size=settings.texture_size, render_size=render_size)
        records.append(record)
        measured.append(pixels)
    add_seam_costs(records, measured)
    if item.source_texels is not None:
        limited = source_limited_faces(
            item.mesh.positions, item.mesh.faces, item.source_texels, settings.texture_size
        )
        add_resolvable(records, measured, limited, face_pixels(views, limited))
    for record in records:
        log.info("%s", record)
    return records


def add_seam_costs(records: list[dict[str, Any]], measured: list[Pixels | None]) -> None:
    """Step 7: into each record of a method that worked, its seam cost against every other
    that worked (seam_cost_db) and the pixels it rests on (seam_cost_pixels)."""
    worked = [(r, p) for r, p in zip(records, measured, strict=True) if p is not None]
    for record, pixels in worked:
        for other, theirs in worked:
            if theirs is pixels:
                continue
            cost = seam_cost_db(pixels.errors, pixels.seams, theirs.errors, theirs.seams)
            own, neither = pixels.seams & ~theirs.seams, ~(pixels.seams | theirs.seams)
            record.setdefault("seam_cost_db", {})[other["method"]] = cost
            counts = [int(own.sum()), int(neither.sum())]
            record.setdefault("seam_cost_pixels", {})[other["method"]] = counts


def add_resolvable(
    records: list[dict[str, Any]],
    measured: list[Pixels | None],
    limited_faces: torch.Tensor,
    limited_pixels: torch.Tensor,
) -> None:
    """Step 8: the source-limited faces' and pixels' counts into every record, and into each
    of a method that worked its PSNR and seam PSNR over the other pixels."""
    for record, pixels in zip(records, measured, strict=True):
        record["source_limited_faces"] = int(limited_faces.sum())
        record["source_limited_pixels"] = int(limited_pixels.sum())
        if pixels is not None:
            rest = fidelity_of(pixels.errors[~limited_pixels], pixels.seams[~limited_pixels])
            record["resolvable_psnr_db"] = rest.psnr_db
            record["resolvable_seam_psnr_db"] = rest.seam_psnr_db


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return "; ".join(f"{_cell(v, digits)} vs {k}" for k, v in value.items()) or "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _value(record: dict[str, Any], key: str) -> Any:
    if key not in ("unrounded", "stored"):
        return record.get(key)
    pair = record.get(f"{key}_psnr_db"), record.get(f"{key}_seam_psnr_db")
    return None if pair[0] is None else " / ".join(_cell(v, 2) for v in pair)


def markdown_table(records: list[dict[str, Any]]) -> str:
    columns = (
        ("input", "input", 0),
        ("method", "method", 0),
        ("faces", "faces", 0),
        ("atlas ok", "atlas_ok", 0),
        ("charts", "charts", 0),
        ("overlap texels", "overlap_texels", 0),
        ("utilisation", "utilisation", 3),
        ("packing bound", "packing_bound", 3),
        ("PSNR dB", "psnr_db", 2),
        ("seam PSNR dB", "seam_psnr_db", 2),
        ("interior PSNR dB", "interior_psnr_db", 2),
        ("seam px", "seam_pixels", 0),
        ("seam cost dB", "seam_cost_db", 2),
        ("source-limited px", "source_limited_pixels", 0),
        ("resolvable PSNR dB", "resolvable_psnr_db", 2),
        ("resolvable seam PSNR dB", "resolvable_seam_psnr_db", 2),
        ("unrounded PSNR / seam dB", "unrounded", 2),
        ("stored as", "texture_format", 0),
        ("stored PSNR / seam dB", "stored", 2),
        ("texture bytes", "texture_bytes", 0),
        ("atlas ms", "atlas_ms", 1),
        ("bake ms", "bake_ms", 1),
    )
    lines = [
        "| " + " | ".join(title for title, _, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for record in records:
        cells = (_cell(_value(record, key), digits) for _, key, digits in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parse_methods(text: str | None) -> list[str]:
    """The names in a comma list ("charts,xatlas"); None or "default" is the pipeline's default
    method (`PipelineSettings().atlas_method`). Unknown names raise ValueError."""
    default = PipelineSettings().atlas_method
    names = [m.strip() for m in (text or "default").split(",") if m.strip()]
    methods = [default if name == "default" else name for name in names]
    for method in methods:
        PipelineSettings(atlas_method=method)  # validates against the setting's choices
    return methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--json", type=Path, required=True, help="write the records here")
    parser.add_argument("--atlas", help='comma list of atlas methods, e.g. "default,xatlas"')
    parser.add_argument("--texture-size", type=int, default=2048)
    parser.add_argument("--render-size", type=int, default=VIEW_SIZE)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after a warm-up")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default_device)
    parser.add_argument("--xatlas-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--markdown", action="store_true", help="print a table on stdout")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("pipeline", "kernels"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.repeat < 1:
        parser.error("--repeat must be at least 1 (the timed runs give the measured atlas)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    methods = parse_methods(args.atlas)
    device = torch.device(args.device)
    settings = settings_from_env(
        PipelineSettings,
        **{
            **parse_overrides(PipelineSettings, args.set),
            "device": args.device,
            "texture_size": args.texture_size,
            "atlas_timeout_s": args.xatlas_timeout,
        },
    )
    report: dict[str, Any] = {
        "device": _device_name(device),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "texture_size": args.texture_size,
        "render_size": args.render_size,
        "repeat": args.repeat,
        "records": [],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    records = report["records"]
    for spec in expand_inputs(args.inputs):
        item = load_input(spec, settings, device)
        records.extend(measure_input(item, methods, settings, args.render_size, args.repeat))
        # Rewritten after every input: a run cut short keeps what it measured.
        args.json.write_text(json.dumps(report, indent=1))
        del item
        if device.type == "cuda":
            torch.cuda.empty_cache()
    args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        print(f"device: {report['device']}  torch {report['torch']}  commit {report['commit']}")
        print(f"texture {args.texture_size}², views {args.render_size}², repeat {args.repeat}\n")
        print(markdown_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
