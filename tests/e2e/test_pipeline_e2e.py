"""The whole pipeline on real prompts, at production settings, checked as the judge sees it.

Per output: one mesh geometry as trimesh loads it; every vertex in [-0.5, 0.5]; Y up with the
front towards +Z (the silhouette seen from +Z matches the input's matte); UVs, normals and a
base-colour texture present; explicit, non-metal material factors; outward winding; no black
texels beyond the image's own; the Khronos validator reports no error. Same bytes for the same
image and seed, in this process and across processes.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.run import Generation, Pipeline
from pipeline.settings import PipelineSettings
from tests.e2e.glb_checks import (
    base_color_image,
    black_fraction,
    covered_texels,
    gltf_json,
    load_single_mesh,
    signed_volume,
    silhouette_iou,
)
from tests.gltf_validator import validate_glb
from tests.pipeline.conftest import PROMPTS_DIR, make_variant

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Prompts with thin parts and holes (crown, plant, wagon wheels, tree), a compact object
# (typewriter), glass (fishbowl) and a black robot (for the black-texel check).
PROMPT_INDICES = (0, 1, 8, 16, 19, 20, 23)
# Silhouette IoU against the file's own alpha: the voxel grid (256) and simplification blur
# thin parts; measured 0.9+ on these prompts, so 0.8 (the bar) leaves margin.
MIN_IOU_ALPHA = 0.8
# Against the true alpha when the matte had to be found on an RGB background.
MIN_IOU_MATTED = {"white": 0.8, "grey": 0.8, "cluttered": 0.6}
# Black texels may exceed the image's own black share by this much (texture filtering).
BLACK_MARGIN = 0.01
# The chart atlas covers 45-65 % of the texture on the prompts in perf/RESULTS.md (1e3f00e:
# ragged many-chart meshes pack worst); below this floor the layout would be broken.
MIN_COVERAGE = 0.25


def prompt_path(index: int) -> Path:
    paths = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    return paths[index]


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))


@pytest.fixture(scope="module", params=DEVICES)
def pipeline(request: pytest.FixtureRequest) -> Pipeline:
    """The CPU path everywhere; the CUDA path too where a GPU is present (`-m gpu` there)."""
    pipe = Pipeline(
        PipelineSettings(device=request.param, generator="inflate", matting="classical")
    )
    pipe.load()
    return pipe


def check_judge_ready(result: Generation, truth_rgba: np.ndarray, min_iou: float) -> None:
    data = result.glb.to_bytes()
    assert len(data) == result.glb.size
    mesh = load_single_mesh(data)
    vertices = np.asarray(mesh.vertices)
    assert np.abs(vertices).max() <= 0.5, "a vertex is outside the unit cube"
    # Y up, front +Z: the view from +Z reproduces the matte (a flip or tilt would not).
    iou = silhouette_iou(mesh, truth_rgba[..., 3] / 255.0)
    assert iou >= min_iou, f"silhouette IoU {iou:.3f} < {min_iou}"
    # Attributes and material.
    document = gltf_json(data)
    primitive = document["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(primitive["attributes"])
    pbr = document["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and 0.0 < pbr["roughnessFactor"] <= 1.0
    assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(vertices)
    # Outward winding.
    assert signed_volume(mesh) > 0, "the mesh is wound inward"
    # No black texels for lack of data: no more black than the object itself shows.
    texture = base_color_image(mesh)
    covered = covered_texels(mesh, texture.shape[:2])
    assert covered.mean() > MIN_COVERAGE, "the charts cover too little of the texture"
    object_pixels = truth_rgba[..., :3][truth_rgba[..., 3] > 127]
    assert black_fraction(texture[covered]) <= black_fraction(object_pixels) + BLACK_MARGIN
    report = validate_glb(data)
    assert report["numErrors"] == 0, report


@pytest.mark.parametrize("index", PROMPT_INDICES)
def test_rgba_prompt(pipeline: Pipeline, index: int) -> None:
    path = prompt_path(index)
    truth = np.asarray(Image.open(path).convert("RGBA"))
    result = pipeline.run(path.read_bytes(), seed=42)
    assert result.matte_source == "alpha"
    check_judge_ready(result, truth, MIN_IOU_ALPHA)


@pytest.mark.parametrize("variant", sorted(MIN_IOU_MATTED))
@pytest.mark.parametrize("index", (8, 19))
def test_rgb_variant(pipeline: Pipeline, index: int, variant: str) -> None:
    truth = np.asarray(Image.open(prompt_path(index)).convert("RGBA"))
    data = png_bytes(make_variant(truth, variant, seed=index))
    result = pipeline.run(data, seed=7)
    assert result.matte_source == "matting"
    check_judge_ready(result, truth, MIN_IOU_MATTED[variant])


def test_same_image_and_seed_give_the_same_bytes(pipeline: Pipeline) -> None:
    data = prompt_path(19).read_bytes()
    first = pipeline.run(data, seed=123).glb.to_bytes()
    second = pipeline.run(data, seed=123).glb.to_bytes()
    assert first == second


def test_same_bytes_across_processes(tmp_path: Path) -> None:
    """Two fresh interpreters (new hash seeds, new allocator state) write identical GLBs."""
    image = prompt_path(20)
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}.glb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                str(image),
                "-o",
                str(out),
                "--seed",
                "5",
                "-q",
                "--set",
                "texture_size=1024",
                "--set",
                "face_budget=20000",
                "--set",
                "device=cpu",
            ],
            cwd=REPO,
            check=True,
            timeout=300,
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_fully_transparent_image_still_gives_a_valid_glb(pipeline: Pipeline) -> None:
    pixels = np.zeros((300, 400, 4), np.uint8)
    pixels[..., :3] = (30, 140, 200)
    result = pipeline.run(png_bytes(pixels), seed=0)
    assert result.matte_source == "full-frame"
    data = result.glb.to_bytes()
    mesh = load_single_mesh(data)
    assert np.abs(np.asarray(mesh.vertices)).max() <= 0.5
    assert signed_volume(mesh) > 0
    assert validate_glb(data)["numErrors"] == 0
