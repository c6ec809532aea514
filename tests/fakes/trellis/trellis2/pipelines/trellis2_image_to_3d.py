"""Fake Trellis2ImageTo3DPipeline: the real loader's resolution rules and run()'s signature.

Loading follows the real `from_pretrained(path, config_file)`: the config is read from
`{path}/{config_file}`; each model from `{path}/{ref}.json` or else `{ref}.json` (the real one
asks the Hub for anything else: here that raises); the image-conditioning and matting models must
be local folders (transformers would download a Hub name). `low_vram` comes from the config
(default True) and `to(device)` records whether it was turned off first.

`run` checks the pipeline type, seeds with `torch.manual_seed(seed)` as the real one does, and
returns one MeshWithVoxel made from the prompt: an upright (Z up) vase whose proportions depend
on the seed, with the real output's warts (inconsistent winding, an open top, a non-manifold fin,
a float16 surface field at resolution 1024 for the 1024 types, attributes slightly outside
[0, 1]); its colours are the prompt's, seen from the front (-Y), its metallic and roughness
vary with height.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import o_voxel.convert  # noqa: F401  the real shape decoder imports it (and o_voxel's nvdiffrast)
import torch
from PIL import Image

from ..representations import MeshWithVoxel

PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
RESOLUTION = {"512": 512, "1024": 1024, "1024_cascade": 1024, "1536_cascade": 1536}
LAYOUT = {
    "base_color": slice(0, 3),
    "metallic": slice(3, 4),
    "roughness": slice(4, 5),
    "alpha": slice(5, 6),
}
GATE_TIMEOUT_S = 30.0
SEGMENTS, RINGS = 48, 24
# Surface samples per voxel along each direction of the field (enough to leave few gaps).
SAMPLES_PER_VOXEL = 1.3


@dataclass
class Hooks:
    """What a test can make the fake do, and what it saw. Reset by the tests' fixture."""

    delay_s: float = 0.0  # every run sleeps this long
    gate: threading.Event | None = None  # every run waits for it
    failures: list[BaseException] = field(default_factory=list)  # raised by the next runs
    load_failure: BaseException | None = None  # raised by from_pretrained
    started: threading.Event = field(default_factory=threading.Event)
    runs_ended: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)


HOOKS = Hooks()


class Trellis2ImageTo3DPipeline:
    def __init__(self, models: dict[str, Any] | None = None) -> None:
        self.models = models or {}
        self._device = torch.device("cpu")
        self.moves: list[dict[str, Any]] = []

    @classmethod
    def from_pretrained(
        cls, path: str, config_file: str = "pipeline.json"
    ) -> Trellis2ImageTo3DPipeline:
        if HOOKS.load_failure is not None:
            raise HOOKS.load_failure
        config_path = f"{path}/{config_file}"
        if not os.path.exists(config_path):
            raise RuntimeError(f"{config_path} is missing: the real loader would ask the Hub")
        with open(config_path) as file:
            args = json.load(file)["args"]
        models = {}
        for name, reference in args["models"].items():
            for candidate in (f"{path}/{reference}", reference):
                if os.path.exists(f"{candidate}.json") and os.path.exists(
                    f"{candidate}.safetensors"
                ):
                    with open(f"{candidate}.json") as file:
                        models[name] = json.load(file)
                    break
            else:
                raise RuntimeError(f"{name}={reference!r} is not local: it would be downloaded")
        for key in ("image_cond_model", "rembg_model"):
            model_name = args[key]["args"]["model_name"]
            if not os.path.isdir(model_name):
                raise RuntimeError(f"{key} {model_name!r} is not a local folder")
        pipeline = cls(models)
        pipeline._pretrained_args = args
        for stage in ("sparse_structure", "shape_slat", "tex_slat"):
            params = args[f"{stage}_sampler"]["params"]
            setattr(pipeline, f"{stage}_sampler_params", params)
        pipeline.image_cond_model = ("DinoV3FeatureExtractor", args["image_cond_model"]["args"])
        pipeline.rembg_model = (args["rembg_model"]["name"], args["rembg_model"]["args"])
        pipeline.low_vram = args.get("low_vram", True)
        pipeline.default_pipeline_type = args.get("default_pipeline_type", "1024_cascade")
        HOOKS.loads.append(
            {
                "path": path,
                "config_file": config_file,
                "args": args,
                "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
            }
        )
        return pipeline

    def to(self, device: torch.device) -> None:
        self._device = torch.device(device)
        self.moves.append(
            {"device": self._device, "low_vram": self.low_vram, "rembg_model": self.rembg_model}
        )

    @torch.no_grad()
    def run(
        self,
        image: Image.Image,
        num_samples: int = 1,
        seed: int = 42,
        sparse_structure_sampler_params: dict | None = None,
        shape_slat_sampler_params: dict | None = None,
        tex_slat_sampler_params: dict | None = None,
        preprocess_image: bool = True,
        return_latent: bool = False,
        pipeline_type: str | None = None,
        max_num_tokens: int = 49152,
    ) -> list[MeshWithVoxel]:
        pipeline_type = pipeline_type or self.default_pipeline_type
        if pipeline_type not in PIPELINE_TYPES:
            raise ValueError(f"Invalid pipeline type: {pipeline_type}")
        if preprocess_image:
            raise AssertionError("the fake has no matting model: preprocess_image must be False")
        HOOKS.calls.append(
            {
                "seed": seed,
                "num_samples": num_samples,
                "pipeline_type": pipeline_type,
                "image_size": image.size,
                "image_mode": image.mode,
                "sparse_structure": {
                    **self.sparse_structure_sampler_params,
                    **(sparse_structure_sampler_params or {}),
                },
                "shape_slat": {
                    **self.shape_slat_sampler_params,
                    **(shape_slat_sampler_params or {}),
                },
                "tex_slat": {**self.tex_slat_sampler_params, **(tex_slat_sampler_params or {})},
            }
        )
        HOOKS.started.set()
        try:
            if HOOKS.gate is not None and not HOOKS.gate.wait(GATE_TIMEOUT_S):
                raise TimeoutError("the test never opened the fake's gate")
            time.sleep(HOOKS.delay_s)
            if HOOKS.failures:
                raise HOOKS.failures.pop(0)
            torch.manual_seed(seed)
            pixels = np.array(image.convert("RGB"))
            mesh = _vase(pixels, RESOLUTION[pipeline_type], self._device)
        finally:
            HOOKS.runs_ended += 1
        return [mesh]


def _vase(pixels: np.ndarray, R: int, device: torch.device) -> MeshWithVoxel:
    """An open-topped, Z-up vase coloured from `pixels` [H, W, 3] uint8 (front view)."""
    # 1. Proportions from the seeded generator: taller than wide, so Z is the long axis.
    radius, half_height, wobble = (torch.tensor([0.10, 0.22, 0.0]) + torch.rand(3) * 0.04).tolist()

    def radius_at(theta: torch.Tensor) -> torch.Tensor:
        return radius * (1 + (0.05 + wobble) * torch.sin(3 * theta))

    # 2. Side rings, a bottom fan, no top; every third face flipped; one non-manifold fin.
    theta = torch.arange(SEGMENTS) * (2 * math.pi / SEGMENTS)
    z = torch.linspace(-half_height, half_height, RINGS + 1)
    r = radius_at(theta)
    ring = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=1)  # [S, 2]
    side = torch.cat(
        (ring[None].expand(RINGS + 1, -1, -1), z[:, None, None].expand(-1, SEGMENTS, 1)), dim=2
    ).reshape(-1, 3)
    bottom_centre, fin_tip = len(side), len(side) + 1
    # The fin's tip: just inside the wall, half a segment on and half a ring up from its edge.
    tip_angle = torch.tensor(math.pi / SEGMENTS)
    tip_radius = float(radius_at(tip_angle)) - 1.5 / R
    tip = [tip_radius * math.cos(tip_angle), tip_radius * math.sin(tip_angle), half_height / RINGS]
    vertices = torch.cat((side, torch.tensor([[0.0, 0.0, -half_height], tip])))
    i, j = torch.meshgrid(torch.arange(RINGS), torch.arange(SEGMENTS), indexing="ij")
    a, b = i * SEGMENTS + j, i * SEGMENTS + (j + 1) % SEGMENTS
    c, d = a + SEGMENTS, b + SEGMENTS
    quads = torch.cat((torch.stack((a, b, d), -1), torch.stack((a, d, c), -1))).reshape(-1, 3)
    fan = torch.stack(
        (
            torch.full((SEGMENTS,), bottom_centre),
            (torch.arange(SEGMENTS) + 1) % SEGMENTS,
            torch.arange(SEGMENTS),
        ),
        dim=1,
    )
    middle = (RINGS // 2) * SEGMENTS
    fin = torch.tensor([[middle, middle + 1, fin_tip]])  # a third face on an edge of two
    faces = torch.cat((quads, fan, fin))
    faces[::3] = faces[::3][:, [0, 2, 1]]
    # 3. The surface field: voxels under dense samples of the side and the bottom.
    n_theta = math.ceil(2 * math.pi * radius * 1.2 * R * SAMPLES_PER_VOXEL)
    n_z = math.ceil(2 * half_height * R * SAMPLES_PER_VOXEL)
    t = torch.arange(n_theta) * (2 * math.pi / n_theta)
    zs = torch.linspace(-half_height, half_height, n_z)
    rt = radius_at(t)
    side_points = torch.stack(
        (
            (rt * torch.cos(t))[None].expand(n_z, -1),
            (rt * torch.sin(t))[None].expand(n_z, -1),
            zs[:, None].expand(-1, n_theta),
        ),
        dim=-1,
    ).reshape(-1, 3)
    span = torch.linspace(-radius * 1.2, radius * 1.2, math.ceil(2.4 * radius * R))
    gx, gy = torch.meshgrid(span, span, indexing="ij")
    disc = (gx**2 + gy**2) <= radius_at(torch.atan2(gy, gx)) ** 2
    bottom_points = torch.stack((gx[disc], gy[disc], torch.full_like(gx[disc], -half_height)), 1)
    points = torch.cat((side_points, bottom_points))
    cells = ((points + 0.5) * R).floor().long().clamp(0, R - 1)
    keys = torch.unique((cells[:, 0] * R + cells[:, 1]) * R + cells[:, 2])
    coords = torch.stack((keys // (R * R), keys // R % R, keys % R), dim=1)
    # 4. Colours: the prompt seen from -Y (image right = +x, image up = +z), nearest pixel.
    centres = (coords.float() + 0.5) / R - 0.5
    extent = max(radius * 1.1, half_height)
    height, width = pixels.shape[:2]
    u = ((centres[:, 0] / extent) * 0.5 + 0.5).clamp(0, 1) * (width - 1)
    v = (0.5 - (centres[:, 2] / extent) * 0.5).clamp(0, 1) * (height - 1)
    colour = torch.from_numpy(pixels)[v.round().long(), u.round().long()].float() / 255
    attrs = torch.cat(
        (
            colour * 1.04 - 0.02,  # the decoder's output is not clamped to [0, 1]
            # Metallic and roughness vary with height, as a real asset's material may.
            0.05 + 0.5 * (centres[:, 2:] + 0.5),
            0.7 - 0.4 * (centres[:, 2:] + 0.5),
            torch.full((len(coords), 1), 1.01),
        ),
        dim=1,
    )
    return MeshWithVoxel(
        vertices.to(device),
        faces.to(device),
        origin=[-0.5, -0.5, -0.5],
        voxel_size=1 / R,
        coords=coords.int().to(device),
        attrs=attrs.half().to(device),
        voxel_shape=torch.Size([1, 6, R, R, R]),
        layout=dict(LAYOUT),
    )
