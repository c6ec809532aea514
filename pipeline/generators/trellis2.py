"""TRELLIS.2-4B behind the Generator protocol: prepared image + seed -> RawAsset, no to_glb.

The API used, as read in microsoft/TRELLIS.2 at the commit docker/Dockerfile pins
(trellis2/pipelines/trellis2_image_to_3d.py, trellis2/representations/mesh/base.py):
- `Trellis2ImageTo3DPipeline.from_pretrained(path, config_file)` builds every model named in the
  config, the DINOv3 feature extractor and a background-removal model. We hand it
  `pipeline.weights.PINNED_CONFIG`, where every Hub name is a local pinned folder (see there),
  and the process runs with HF_HUB_OFFLINE=1, so nothing unpinned can be fetched.
- `low_vram` (pipeline.json, default True) moves each model to the GPU for its stage and back;
  we set it False before `.to(device)`, so every model stays on the GPU.
- `run(image, num_samples, seed, sparse_structure_sampler_params, shape_slat_sampler_params,
  tex_slat_sampler_params, preprocess_image, return_latent, pipeline_type, max_num_tokens)`
  seeds with `torch.manual_seed(seed)` and merges each stage's params over pipeline.json's
  (`steps`, `guidance_strength`, and `guidance_rescale`, `guidance_interval`, `rescale_t`, which
  we leave). `pipeline_type` is one of 512, 1024, 1024_cascade, 1536_cascade; a cascade lowers
  its resolution by steps of 128 when the tokens exceed `max_num_tokens`.
- Its `preprocess_image` matts (RMBG-2.0 upstream: non-commercial) and crops a square tight
  around alpha > 0.8, premultiplied on black. We matte in prepare (BiRefNet or classical) and
  make the same tight, premultiplied square here, then call `run(..., preprocess_image=False)`.
- It returns `[MeshWithVoxel]`: `vertices` [V, 3] float32 and `faces` [F, 3] int32 on the GPU
  (triangles from dual-grid quads: Z up, inside [-0.5, 0.5]^3, no normals, inconsistent
  winding, open boundaries and non-manifold edges possible), `origin` (-0.5, -0.5, -0.5),
  `voxel_size` 1 / resolution, `coords` [N, 3] int32 and `attrs` [N, 6] (the texture decoder's
  output * 0.5 + 0.5, not clamped) with `layout` naming the channels: base_color 0:3,
  metallic 3:4, roughness 4:5, alpha 5:6. Voxel i spans origin + [i, i + 1] * voxel_size
  (FlexGEMM's trilinear grid_sample puts the centre at i + 0.5), as RawAsset's do.
`o_voxel.postprocess.to_glb` is never called: our mesh/atlas/bake/glb stages replace it.

Wart handled here: `o_voxel/__init__.py` imports `postprocess`, which imports nvdiffrast (NVIDIA
Source Code License, non-commercial) at its top, and TRELLIS.2's shape decoder imports
`o_voxel.convert`. We ship no nvdiffrast: when it is absent, a placeholder module lets that import
succeed and raises if anything ever uses it.

Not verifiable on the machines this was written on (no GPU build of TRELLIS.2, no Hub): a real
generation, its speed and memory, and bit-for-bit determinism of its CUDA kernels (FlexGEMM's
split-K sparse convolutions may sum in varying order). The adapter itself is deterministic.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset
from pipeline.weights import (
    BIREFNET,
    DINOV3,
    PINNED_CONFIG,
    SS_DECODER,
    TRELLIS2,
    ensure,
    pinned_pipeline_config,
    weights_root,
)

__all__ = [
    "TRELLIS2_REPOS",
    "Trellis2Generator",
    "Trellis2Unavailable",
    "import_trellis2",
    "load_trellis2",
    "raw_asset_from_mesh",
    "trellis_input",
]

log = logging.getLogger("pipeline.generate")

# Every weight a TRELLIS.2 load reads (BiRefNet: the loader builds its matting model).
TRELLIS2_REPOS = (TRELLIS2, SS_DECODER, DINOV3, BIREFNET)
# Upstream's preprocess_image crops around alpha above this.
CROP_ALPHA = 0.8
# Material of channels a layout lacks: a dielectric, fully opaque.
DEFAULT_METALLIC = 0.0
DEFAULT_ROUGHNESS = 1.0
DEFAULT_ALPHA = 1.0
# 1 / voxel_size must be this close to an integer resolution.
RESOLUTION_TOLERANCE = 1e-6


class Trellis2Unavailable(RuntimeError):
    """TRELLIS.2 cannot be used here: the package does not import, or its weights are missing."""


class _Unavailable(types.ModuleType):
    """Stands in for a module we do not ship; any use raises. AttributeError, so that probes
    (`hasattr(module, "__file__")` over sys.modules, as inspect does) see a plain module."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"{self.__name__}.{name}: {self.__name__} is not installed (non-commercial licence); "
            "o_voxel.postprocess.to_glb is not used by this server"
        )


def _shim_nvdiffrast() -> None:
    if "nvdiffrast" in sys.modules or importlib.util.find_spec("nvdiffrast") is not None:
        return
    package = _Unavailable("nvdiffrast")
    package.__path__ = []  # a package, so "nvdiffrast.torch" resolves
    package.torch = _Unavailable("nvdiffrast.torch")
    sys.modules["nvdiffrast"] = package
    sys.modules["nvdiffrast.torch"] = package.torch


def import_trellis2() -> type:
    """TRELLIS.2's `Trellis2ImageTo3DPipeline` (imports o_voxel and the native extensions).

    Raises ImportError (or whatever a broken native extension raises) when it cannot load.
    """
    _shim_nvdiffrast()
    from trellis2.pipelines import Trellis2ImageTo3DPipeline

    importlib.import_module("o_voxel")  # the shape decoder's, imported when the models load
    return Trellis2ImageTo3DPipeline


def load_trellis2(settings: PipelineSettings, device: torch.device) -> Trellis2Generator:
    """Import, find (or fetch, with FETCH_WEIGHTS) the pinned weights, load onto `device`.

    Raises Trellis2Unavailable when the package does not import or weights are missing; any
    other exception is a failed load.
    """
    # 1. The package and its native extensions. From here on the Hub is never asked: every name
    #    the loader reads is a pinned local folder. Set before transformers imports
    #    huggingface_hub, which reads it once (downloads run in a child process: weights.ensure).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        pipeline_class = import_trellis2()
    except Exception as error:
        raise Trellis2Unavailable(
            f"trellis2 does not import ({type(error).__name__}: {error})"
        ) from None
    # 2. The pinned weights, fetched in a child process when allowed.
    root = weights_root(settings.weights_dir)
    still_missing = ensure(root, TRELLIS2_REPOS, settings.fetch_weights)
    if still_missing:
        names = ", ".join(repo.describe() for repo in still_missing)
        how = "download failed" if settings.fetch_weights else "FETCH_WEIGHTS=false"
        raise Trellis2Unavailable(f"weights missing in {root}: {names} ({how})")
    # 3. Load.
    return Trellis2Generator(settings, device, root, pipeline_class)


def trellis_input(image: PreparedImage) -> Image.Image:
    """The prompt as upstream's preprocess_image leaves it: the square tight around
    mask > CROP_ALPHA (centred; outside the image is black), colour premultiplied by the mask.

    rgb [S, S, 3] and mask [S, S] on any device -> an RGB PIL image (side = the box's long side).
    """
    mask = image.mask.float()
    inside = mask > CROP_ALPHA
    if not bool(inside.any()):
        inside = mask > 0
    if not bool(inside.any()):
        inside = torch.ones_like(inside)
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    columns = torch.nonzero(inside.any(dim=0)).flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    side = max(bottom - top, right - left)
    y0, x0 = (top + bottom - side) // 2, (left + right - side) // 2
    premultiplied = (image.rgb.float() * mask[..., None]).permute(2, 0, 1)  # [3, S, S]
    padded = F.pad(premultiplied, (side, side, side, side))
    crop = padded[:, y0 + side : y0 + 2 * side, x0 + side : x0 + 2 * side]
    pixels = (crop.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return Image.fromarray(pixels.cpu().numpy(), "RGB")


def _channels(attrs: torch.Tensor, layout: dict[str, slice], name: str, default: float | None):
    if name in layout:
        return attrs[:, layout[name]].float()
    if default is None:
        raise ValueError(f"MeshWithVoxel.layout has no {name!r}: {sorted(layout)}")
    return torch.full((len(attrs), 1), default, dtype=torch.float32, device=attrs.device)


def raw_asset_from_mesh(mesh: Any) -> RawAsset:
    """A TRELLIS.2 MeshWithVoxel -> RawAsset (same frame, channels in RawAsset's order).

    Checks what the conversion relies on: origin at -0.5, an integer resolution; drops voxels
    outside the grid; clamps attributes to [0, 1] (the decoder's output is not clamped).
    """
    voxel_size = float(torch.as_tensor(mesh.voxel_size).reshape(-1)[0])
    resolution = round(1.0 / voxel_size)
    if abs(resolution * voxel_size - 1.0) > RESOLUTION_TOLERANCE:
        raise ValueError(f"voxel_size {voxel_size} is not 1 / an integer resolution")
    origin = torch.as_tensor(mesh.origin, dtype=torch.float32).reshape(-1).cpu()
    if not torch.allclose(origin, torch.full((3,), -0.5)):
        raise ValueError(f"origin {origin.tolist()} is not (-0.5, -0.5, -0.5)")
    coords = mesh.coords.to(torch.int32)
    attrs = torch.cat(
        (
            _channels(mesh.attrs, mesh.layout, "base_color", None),
            _channels(mesh.attrs, mesh.layout, "metallic", DEFAULT_METALLIC),
            _channels(mesh.attrs, mesh.layout, "roughness", DEFAULT_ROUGHNESS),
            _channels(mesh.attrs, mesh.layout, "alpha", DEFAULT_ALPHA),
        ),
        dim=1,
    )
    inside = ((coords >= 0) & (coords < resolution)).all(dim=1)
    return RawAsset(
        vertices=mesh.vertices.float().contiguous(),
        faces=mesh.faces.long().contiguous(),
        coords=coords[inside].contiguous(),
        attrs=attrs[inside].clamp(0.0, 1.0).contiguous(),
        resolution=resolution,
    )


def _write_pinned_config(root: Path) -> None:
    """pipeline.json with local pinned paths, beside it (rewritten only when it changed)."""
    text = json.dumps(pinned_pipeline_config(root), indent=1, sort_keys=True) + "\n"
    target = TRELLIS2.path(root) / PINNED_CONFIG
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)


class Trellis2Generator:
    name = "trellis2"

    def __init__(
        self,
        settings: PipelineSettings,
        device: torch.device,
        root: Path,
        pipeline_class: type | None = None,
    ) -> None:
        pipeline_class = pipeline_class or import_trellis2()
        _write_pinned_config(root)
        start = time.perf_counter()
        pipeline = pipeline_class.from_pretrained(
            str(TRELLIS2.path(root)), config_file=PINNED_CONFIG
        )
        pipeline.rembg_model = None  # built by the loader; our matting runs in prepare
        pipeline.low_vram = False  # every model stays on the GPU between stages
        pipeline.to(device)
        self._pipeline = pipeline
        self.device = device
        self.pipeline_type = settings.trellis2_pipeline_type
        self.sampler_params = {
            "sparse_structure_sampler_params": {
                "steps": settings.trellis2_ss_steps,
                "guidance_strength": settings.trellis2_ss_guidance,
            },
            "shape_slat_sampler_params": {
                "steps": settings.trellis2_shape_steps,
                "guidance_strength": settings.trellis2_shape_guidance,
            },
            "tex_slat_sampler_params": {
                "steps": settings.trellis2_tex_steps,
                "guidance_strength": settings.trellis2_tex_guidance,
            },
        }
        log.info(
            "trellis2 loaded from %s (%s), all models on %s, %.1f s",
            TRELLIS2.path(root),
            TRELLIS2.describe(),
            device,
            time.perf_counter() - start,
        )

    def preprocess(self, image: PreparedImage) -> Image.Image:
        """The tight, premultiplied square TRELLIS.2 conditions on (thread-safe, no state)."""
        return trellis_input(image)

    def generate(
        self, image: PreparedImage, seed: int, features: Image.Image | None = None
    ) -> RawAsset:
        """Same image + seed -> same call into TRELLIS.2, seeded by `seed`."""
        start = time.perf_counter()
        prompt = features if features is not None else self.preprocess(image)
        meshes = self._pipeline.run(
            prompt,
            num_samples=1,
            seed=seed,
            preprocess_image=False,
            pipeline_type=self.pipeline_type,
            **{name: dict(params) for name, params in self.sampler_params.items()},
        )
        asset = raw_asset_from_mesh(meshes[0])
        del meshes  # the decoder's tensors: only the asset's stay
        log.info(
            "generate trellis2 %s seed=%d: %dx%d prompt -> %d faces, %d voxels at %d^3, %.0f ms",
            self.pipeline_type,
            seed,
            prompt.width,
            prompt.height,
            len(asset.faces),
            len(asset.coords),
            asset.resolution,
            (time.perf_counter() - start) * 1e3,
        )
        return asset
