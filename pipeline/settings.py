"""Frozen settings for every pipeline stage, read from the environment.

Each field is one setting; its environment variable is the field name in upper case
(`texture_size` -> `TEXTURE_SIZE`). The help text beside each field is what `GET /` shows
(the README's settings table, written by hand, must name every setting). Stages receive the
whole frozen object and read their part.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "CPU_FACE_BUDGET",
    "CUDA_FACE_BUDGET",
    "PipelineSettings",
    "check_choices",
    "describe_settings",
    "parse_overrides",
    "setting",
    "settings_from_env",
]


# FACE_BUDGET=0 (the default) keeps these. With CUDA at TRELLIS.2's density (inflate at the
# 1024 grid, 1.4M-4.6M faces; H100, perf/RESULTS.md) 320k faces cost 26 ms more than 80k after
# generation (the GPU decimation stops sooner, the atlas, bake and GLB take longer) and the
# judge's lit renders come out 5.1-7.5 dB nearer the unsimplified surface's, for a GLB of
# ~10 MiB instead of ~2.6. On a CPU the atlas's time grows with the faces: 80k there.
CUDA_FACE_BUDGET = 320_000
CPU_FACE_BUDGET = 80_000


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class PipelineSettings:
    device: str = setting("auto", "torch device for the GPU stages", ("auto", "cpu", "cuda"))
    # decode / prepare
    max_image_pixels: int = setting(
        40_000_000, "largest decoded image (width x height) accepted; more is a 413"
    )
    image_size: int = setting(512, "side of the square, object-centred prepared image (px)")
    crop_margin: float = setting(
        0.08, "empty border around the object in the prepared image, per side, as a fraction"
    )
    # weights (pipeline/weights.py pins their revisions)
    weights_dir: str = setting(
        "~/.cache/image-to-mesh/weights",
        "folder of the pinned model weights (TRELLIS.2-4B, its decoder, DINOv3, BiRefNet)",
    )
    fetch_weights: bool = setting(
        False,
        "download missing weights at their pinned revisions at start-up (DINOv3: needs HF_TOKEN)",
    )
    # prepare
    matting: str = setting(
        "auto",
        "background removal without alpha: auto = BiRefNet when its weights are found and the "
        "device is CUDA, else classical",
        ("auto", "birefnet", "classical"),
    )
    # generate
    generator: str = setting(
        "auto",
        "the generator: auto = trellis2 when it imports and its weights are found, else inflate",
        ("auto", "trellis2", "inflate"),
    )
    trellis2_pipeline_type: str = setting(
        "1024_cascade",
        "TRELLIS.2 pipeline type (resolution of the shape)",
        ("512", "1024", "1024_cascade", "1536_cascade"),
    )
    trellis2_ss_steps: int = setting(12, "TRELLIS.2 sparse-structure sampler steps")
    trellis2_ss_guidance: float = setting(7.5, "TRELLIS.2 sparse-structure guidance strength")
    trellis2_shape_steps: int = setting(12, "TRELLIS.2 shape sampler steps")
    trellis2_shape_guidance: float = setting(7.5, "TRELLIS.2 shape guidance strength")
    trellis2_tex_steps: int = setting(12, "TRELLIS.2 texture sampler steps")
    trellis2_tex_guidance: float = setting(1.0, "TRELLIS.2 texture guidance strength")
    resolution: int = setting(384, "voxel grid resolution of the inflate generator")
    inflate_depth: float = setting(
        1.0, "depth of the inflated profile relative to a round cross-section"
    )
    # mesh
    face_budget: int = setting(
        0,
        f"faces kept by simplification; 0 = {CUDA_FACE_BUDGET} with CUDA, {CPU_FACE_BUDGET} "
        "elsewhere",
    )
    simplify_method: str = setting(
        "auto",
        "simplification: auto = parallel edge collapse on the GPU with CUDA, fast-simplification "
        "in slabs on the host's worker processes elsewhere; slabs = the host's everywhere",
        ("auto", "slabs"),
    )
    fit_margin: float = setting(0.02, "the largest side of the output is 1 minus this")
    # atlas
    atlas_method: str = setting(
        "charts",
        "UV atlas: our normal-cone chart atlas (torch, on the GPU with CUDA), or xatlas",
        ("charts", "xatlas"),
    )
    atlas_timeout_s: float = setting(
        60.0, "seconds xatlas may take before our chart atlas is used instead"
    )
    # bake
    texture_size: int = setting(2048, "side of the base-colour texture (texels)")
    gutter_texels: int = setting(
        0, "texels between neighbouring charts' boxes; 0 = texture_size / 512, at least 2"
    )
    bake_fit: str = setting(
        "auto",
        "fit the texture to bilinear sampling (least squares at 4 points per texel): auto = on "
        "with CUDA (on a CPU it adds ~36 s at 2048²)",
        ("auto", "on", "off"),
    )
    jpeg_fill: str = setting(
        "auto",
        "with a JPEG texture, set the texels no sample reads so each 8x8 block sits nearer the "
        "encoder's lattice: auto = on with CUDA (on a CPU it adds ~0.2-0.7 s at 2048²)",
        ("auto", "on", "off"),
    )
    # glb
    texture_format: str = setting("jpeg", "base-colour texture encoding", ("jpeg", "png"))
    jpeg_quality: int = setting(90, "JPEG quality of the base-colour texture (1-100)")
    material: str = setting(
        "roughness",
        "where metallic and roughness come from: the generator's voxel field (a metallicRoughness "
        "texture where it varies) or METALLIC / ROUGHNESS; roughness = the field's roughness and "
        "METALLIC, field = both from the field, constant = both from the settings",
        ("roughness", "field", "constant"),
    )
    metallic: float = setting(0.0, "glTF metallicFactor unless MATERIAL=field")
    roughness: float = setting(0.8, "glTF roughnessFactor with MATERIAL=constant")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.image_size < 64 or self.resolution < 16 or self.texture_size < 64:
            raise ValueError("image_size >= 64, resolution >= 16, texture_size >= 64 required")
        if self.face_budget != 0 and self.face_budget < 100:
            budget = self.face_budget
            raise ValueError(f"face_budget must be 0 (auto) or at least 100, got {budget}")
        if not 0.0 <= self.fit_margin < 0.5 or not 0.0 <= self.crop_margin < 0.5:
            raise ValueError("fit_margin and crop_margin must lie in [0, 0.5)")
        if not (0.0 <= self.metallic <= 1.0 and 0.0 <= self.roughness <= 1.0):
            raise ValueError("metallic and roughness must lie in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        steps = (self.trellis2_ss_steps, self.trellis2_shape_steps, self.trellis2_tex_steps)
        if min(steps) < 1:
            raise ValueError(f"TRELLIS.2 sampler steps must be at least 1, got {steps}")
        guidance = (
            self.trellis2_ss_guidance,
            self.trellis2_shape_guidance,
            self.trellis2_tex_guidance,
        )
        if min(guidance) < 0:
            raise ValueError(f"TRELLIS.2 guidance strengths must be >= 0, got {guidance}")

    def faces_kept(self, device_type: str) -> int:
        """The face budget on a device of this type ("cuda", "cpu"): FACE_BUDGET, or where it
        is 0 the default for the device."""
        if self.face_budget:
            return self.face_budget
        return CUDA_FACE_BUDGET if device_type == "cuda" else CPU_FACE_BUDGET

    @property
    def gutter(self) -> int:
        """Texels between charts: scales with the texture so mip-free sampling never bleeds."""
        return self.gutter_texels or max(2, self.texture_size // 512)


S = TypeVar("S")


def check_choices(settings: Any) -> None:
    for f in dataclasses.fields(settings):
        choices = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if choices and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")


def _parse(text: str, kind: Any, name: str) -> Any:
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"{name.upper()}={text!r} is not a valid {kind.__name__}") from None


def settings_from_env(
    cls: type[S], environ: Mapping[str, str] | None = None, **overrides: Any
) -> S:
    """Build `cls` from defaults, then the environment, then explicit overrides."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        text = environ.get(f.name.upper())
        if text is not None and text != "":
            values[f.name] = _parse(text, hints[f.name], f.name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def parse_overrides(cls: type, pairs: list[str]) -> dict[str, Any]:
    """["name=value", ...] (command-line `--set`) -> {field: typed value} for `cls`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().lower().replace("-", "_")
        if name not in names or not sep:
            known = ", ".join(sorted(names))
            raise ValueError(f"expected NAME=VALUE with NAME one of: {known}; got {pair!r}")
        values[name] = _parse(text, hints[name], name)
    return values


def describe_settings(settings: Any) -> dict[str, Any]:
    """The effective value of every setting, keyed by field name."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
