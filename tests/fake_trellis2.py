"""The fake TRELLIS.2 stack for the tests: its weights on disk, and a fixture that imports it.

`write_fake_weights(root)` lays out WEIGHTS_DIR as `pipeline.weights` expects it (every pinned
folder, complete with its marker): TRELLIS.2-4B with a pipeline.json shaped like the real one
(eight models, one of them in microsoft/TRELLIS-image-large, the DINOv3 and RMBG-2.0 Hub names,
the samplers' parameters), tiny checkpoint files, and folders for DINOv3 and BiRefNet.
`fake_trellis2` (a fixture, tests/conftest.py) puts tests/fakes/trellis on sys.path and removes
every module it brought (and the nvdiffrast placeholder) afterwards.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.weights import BIREFNET, DINOV3, PINNED, SS_DECODER, TRELLIS2, write_marker

__all__ = ["FAKES", "FakeTrellis", "fake_trellis2", "write_fake_weights", "write_repo_files"]

FAKES = Path(__file__).resolve().parent / "fakes"
_FAKE_MODULES = ("trellis2", "o_voxel", "nvdiffrast")

MODELS = {
    "sparse_structure_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
}


def _sampler(guidance: float, rescale: float, rescale_t: float) -> dict[str, Any]:
    return {
        "name": "FlowEulerGuidanceIntervalSampler",
        "args": {"sigma_min": 1e-5},
        "params": {
            "steps": 12,
            "guidance_strength": guidance,
            "guidance_rescale": rescale,
            "guidance_interval": [0.6, 1.0],
            "rescale_t": rescale_t,
        },
    }


PIPELINE_JSON = {
    "name": "Trellis2ImageTo3DPipeline",
    "args": {
        "models": MODELS,
        "sparse_structure_sampler": _sampler(7.5, 0.7, 5.0),
        "shape_slat_sampler": _sampler(7.5, 0.5, 3.0),
        "tex_slat_sampler": _sampler(1.0, 0.0, 3.0),
        "shape_slat_normalization": {"mean": [0.0] * 32, "std": [1.0] * 32},
        "tex_slat_normalization": {"mean": [0.0] * 32, "std": [1.0] * 32},
        "image_cond_model": {
            "name": "DinoV3FeatureExtractor",
            "args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"},
        },
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
        "default_pipeline_type": "1024_cascade",
    },
}


def _checkpoint(folder: Path, reference: str) -> None:
    path = folder / reference
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".json").write_text(json.dumps({"name": path.name, "args": {}}))
    path.with_name(path.name + ".safetensors").write_bytes(b"\0" * 8)


def write_repo_files(folder: Path, name: str) -> None:
    """The files of pinned repo `name` (trellis2, ss_decoder, dinov3, birefnet) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == TRELLIS2.name:
        (folder / "pipeline.json").write_text(json.dumps(PIPELINE_JSON, indent=1))
        for reference in MODELS.values():
            if reference.startswith("ckpts/"):
                _checkpoint(folder, reference)
    elif name == SS_DECODER.name:
        _checkpoint(folder, "ckpts/ss_dec_conv3d_16l8_fp16")
    elif name in (DINOV3.name, BIREFNET.name):
        (folder / "config.json").write_text(json.dumps({"fake": name}))
    else:
        raise KeyError(name)


def write_fake_weights(root: Path, repos: tuple = PINNED) -> Path:
    for repo in repos:
        write_repo_files(repo.path(root), repo.name)
        write_marker(root, repo)
    return root


@dataclass
class FakeTrellis:
    weights: Path  # a complete WEIGHTS_DIR
    hooks: Any  # trellis2.pipelines.trellis2_image_to_3d.HOOKS


def _forget_fake_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _FAKE_MODULES:
            del sys.modules[name]


@pytest.fixture
def fake_trellis2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeTrellis]:
    """The fake trellis2 and o_voxel importable, fake weights in tmp_path / "weights"."""
    monkeypatch.syspath_prepend(str(FAKES / "trellis"))
    # The adapter sets HF_HUB_OFFLINE for the process: give it back as it was.
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _forget_fake_modules()
    weights = write_fake_weights(tmp_path / "weights")
    from pipeline.generators.trellis2 import import_trellis2

    import_trellis2()  # the shim, then the fake's modules, so HOOKS is the one the adapter sees
    hooks = importlib.import_module("trellis2.pipelines.trellis2_image_to_3d").HOOKS
    try:
        yield FakeTrellis(weights, hooks)
    finally:
        if hooks.gate is not None:
            hooks.gate.set()  # never leave a worker thread waiting
        _forget_fake_modules()
