"""The TRELLIS.2 adapter on the fake trellis2 package (tests/fakes/trellis): loading at pinned local
paths with every model on the device, the call it makes, MeshWithVoxel -> RawAsset, determinism,
and the real output's warts through the whole pipeline to a clean GLB."""

from __future__ import annotations

import dataclasses
import io
import json
import sys

import numpy as np
import pytest
import torch
import trimesh

from pipeline.generators.trellis2 import (
    Trellis2Generator,
    Trellis2Unavailable,
    load_trellis2,
    raw_asset_from_mesh,
    trellis_input,
)
from pipeline.run import Pipeline
from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage
from pipeline.weights import PINNED_CONFIG, TRELLIS2
from tests.pipeline.test_run import png_bytes

SMALL = {
    "device": "cpu",
    "matting": "classical",
    "image_size": 128,
    "resolution": 48,
    "face_budget": 1500,
    "texture_size": 128,
    "texture_format": "png",
}


def settings(fake, **overrides) -> PipelineSettings:
    values = {**SMALL, "weights_dir": str(fake.weights), **overrides}
    return dataclasses.replace(PipelineSettings(), **values)


def prepared_box(side: int = 64) -> PreparedImage:
    """A red box 20 wide, 40 tall at rows 10..50, columns 30..50; its top half half-opaque."""
    rgb = torch.zeros(side, side, 3)
    rgb[..., 0] = 1.0
    mask = torch.zeros(side, side)
    mask[10:50, 30:50] = 1.0
    mask[10:30, 30:50] = 0.9
    return PreparedImage(rgb, mask, "alpha")


def fake_mesh(**changes):
    from trellis2.representations import MeshWithVoxel

    values = {
        "vertices": torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.2]]),
        "faces": torch.tensor([[0, 1, 2]], dtype=torch.int32),
        "origin": [-0.5, -0.5, -0.5],
        "voxel_size": 1 / 1024,
        "coords": torch.tensor([[512, 512, 512], [1024, 0, 0], [3, -1, 7], [0, 1023, 5]]).int(),
        # alpha first, then base colour, roughness, metallic: a layout in another order
        "attrs": torch.tensor(
            [
                [1.0, 0.2, 0.4, 0.6, 0.9, 0.1],
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [0.5, 1.2, -0.1, 0.3, 0.8, 0.0],
            ]
        ).half(),
        "voxel_shape": torch.Size([1, 6, 1024, 1024, 1024]),
        "layout": {
            "alpha": slice(0, 1),
            "base_color": slice(1, 4),
            "roughness": slice(4, 5),
            "metallic": slice(5, 6),
        },
    }
    values.update(changes)
    return MeshWithVoxel(**values)


# --- MeshWithVoxel -> RawAsset ------------------------------------------------------------------


def test_raw_asset_reorders_channels_drops_outside_voxels_and_clamps(fake_trellis2):
    asset = raw_asset_from_mesh(fake_mesh())
    assert asset.resolution == 1024
    assert asset.vertices.dtype == torch.float32 and asset.faces.dtype == torch.int64
    assert asset.coords.dtype == torch.int32 and asset.attrs.dtype == torch.float32
    # Voxels outside [0, 1024) are dropped; the others keep their order.
    assert asset.coords.tolist() == [[512, 512, 512], [0, 1023, 5]]
    # RawAsset's order: base colour, metallic, roughness, alpha; clamped to [0, 1].
    expected = [[0.2, 0.4, 0.6, 0.1, 0.9, 1.0], [1.0, 0.0, 0.3, 0.0, 0.8, 0.5]]
    assert torch.allclose(asset.attrs, torch.tensor(expected), atol=1e-3)


def test_raw_asset_fills_missing_material_channels_and_refuses_other_frames(fake_trellis2):
    only_colour = fake_mesh(attrs=torch.rand(4, 3), layout={"base_color": slice(0, 3)})
    attrs = raw_asset_from_mesh(only_colour).attrs
    assert attrs[:, 3:].tolist() == [[0.0, 1.0, 1.0]] * 2
    with pytest.raises(ValueError, match="origin"):
        raw_asset_from_mesh(fake_mesh(origin=[0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="voxel_size"):
        raw_asset_from_mesh(fake_mesh(voxel_size=1 / 1000.5))
    with pytest.raises(ValueError, match="base_color"):
        raw_asset_from_mesh(fake_mesh(layout={"alpha": slice(0, 1)}))


# --- the prompt TRELLIS.2 sees ------------------------------------------------------------------


def test_trellis_input_is_the_tight_square_premultiplied_on_black():
    image = trellis_input(prepared_box())
    pixels = np.asarray(image)
    # The box's long side (40 rows) is the square's side; the 20 columns sit in its middle.
    assert image.mode == "RGB" and image.size == (40, 40)
    assert (pixels[:, :10] == 0).all() and (pixels[:, 30:] == 0).all()
    assert (pixels[20:, 10:30, 0] == 255).all()  # opaque red
    assert (pixels[:20, 10:30, 0] == 230).all()  # 0.9 alpha: premultiplied
    assert (pixels[..., 1:] == 0).all()


def test_trellis_input_of_an_empty_matte_is_the_whole_frame():
    image = prepared_box()
    empty = PreparedImage(image.rgb, torch.zeros_like(image.mask), "full-frame")
    assert trellis_input(empty).size == (64, 64)


# --- loading ------------------------------------------------------------------------------------


def test_load_reads_only_pinned_local_paths_and_keeps_every_model_on_the_device(fake_trellis2):
    generator = load_trellis2(settings(fake_trellis2), torch.device("cpu"))
    assert isinstance(generator, Trellis2Generator)
    load = fake_trellis2.hooks.loads[-1]
    # The loader read our pinned config, offline.
    assert load["config_file"] == PINNED_CONFIG and load["hf_hub_offline"] == "1"
    pinned = json.loads((TRELLIS2.path(fake_trellis2.weights) / PINNED_CONFIG).read_text())
    assert pinned["args"] == load["args"]
    text = json.dumps(pinned)
    assert "briaai" not in text and "RMBG" not in text and "facebook/" not in text
    decoder = pinned["args"]["models"]["sparse_structure_decoder"]
    assert decoder.startswith(str(fake_trellis2.weights / "TRELLIS-image-large" / "ckpts"))
    # Every model on the device: low_vram off before the move; the matting model dropped.
    assert generator._pipeline.moves == [
        {"device": torch.device("cpu"), "low_vram": False, "rembg_model": None}
    ]


def test_no_package_no_weights_each_say_so(fake_trellis2, monkeypatch, tmp_path):
    with pytest.raises(Trellis2Unavailable, match=r"weights missing .*TRELLIS.2-4B.*FETCH_WEIGHTS"):
        load_trellis2(settings(fake_trellis2, weights_dir=str(tmp_path)), torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "trellis2.pipelines", None)  # as if not installed
    with pytest.raises(Trellis2Unavailable, match="trellis2 does not import"):
        load_trellis2(settings(fake_trellis2), torch.device("cpu"))


def test_o_voxel_imports_without_nvdiffrast_and_nothing_can_use_it(fake_trellis2):
    import nvdiffrast.torch as dr
    import o_voxel

    assert o_voxel.postprocess.dr is dr
    with pytest.raises(AttributeError, match="not installed"):
        dr.RasterizeCudaContext()
    assert getattr(dr, "__file__", None) is None  # probes over sys.modules do not break


# --- generating ---------------------------------------------------------------------------------


def test_generate_passes_the_seed_type_and_each_stages_steps_and_guidance(fake_trellis2):
    chosen = settings(
        fake_trellis2,
        trellis2_pipeline_type="1536_cascade",
        trellis2_ss_steps=3,
        trellis2_ss_guidance=5.0,
        trellis2_shape_steps=4,
        trellis2_shape_guidance=6.0,
        trellis2_tex_steps=5,
        trellis2_tex_guidance=2.0,
    )
    generator = load_trellis2(chosen, torch.device("cpu"))
    image = prepared_box()
    asset = generator.generate(image, 4294967295)
    call = fake_trellis2.hooks.calls[-1]
    assert (call["seed"], call["pipeline_type"], call["num_samples"]) == (
        4294967295,
        "1536_cascade",
        1,
    )
    assert (call["image_mode"], call["image_size"]) == ("RGB", (40, 40))
    # Ours override steps and guidance; the rest of each stage stays pipeline.json's.
    assert call["sparse_structure"] == {
        "steps": 3,
        "guidance_strength": 5.0,
        "guidance_rescale": 0.7,
        "guidance_interval": [0.6, 1.0],
        "rescale_t": 5.0,
    }
    assert (call["shape_slat"]["steps"], call["shape_slat"]["guidance_strength"]) == (4, 6.0)
    assert (call["tex_slat"]["steps"], call["tex_slat"]["guidance_strength"]) == (5, 2.0)
    assert call["tex_slat"]["rescale_t"] == 3.0
    assert asset.resolution == 1536
    # The staged features are what generate would make itself.
    assert generator.generate(image, 1, generator.preprocess(image)).coords.equal(
        generator.generate(image, 1).coords
    )


def test_same_image_and_seed_same_asset_another_seed_another(fake_trellis2):
    generator = load_trellis2(settings(fake_trellis2), torch.device("cpu"))
    image = prepared_box()
    first, again, other = (generator.generate(image, seed) for seed in (7, 7, 8))
    assert first.resolution == 1024 and len(first.coords) > 100_000  # a sparse field at 1024
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.vertices, other.vertices)


def test_the_warts_come_out_as_a_clean_y_up_glb(fake_trellis2):
    """Z up, every third face flipped, an open top, a non-manifold fin: the pipeline's output is
    one Y-up mesh inside the unit cube whose side faces all face outward."""
    pipeline = Pipeline(settings(fake_trellis2, generator="trellis2", trellis2_pipeline_type="512"))
    pipeline.load()
    result = pipeline.run(png_bytes(), seed=3)
    assert result.generator == "trellis2"
    scene = trimesh.load(io.BytesIO(result.glb.to_bytes()), file_type="glb", force=None)
    meshes = list(scene.geometry.values())
    assert len(meshes) == 1
    mesh = meshes[0]
    vertices = np.asarray(mesh.vertices)
    assert np.abs(vertices).max() <= 0.5
    extent = vertices.max(0) - vertices.min(0)
    assert extent[1] == extent.max()  # the vase's height, Z in the asset, is Y in the GLB
    # Side faces (normal mostly horizontal) point away from the vertical axis.
    normals, centres = mesh.face_normals, mesh.triangles_center
    side = np.abs(normals[:, 1]) < 0.5
    radial = centres[:, [0, 2]] - np.median(vertices[:, [0, 2]], axis=0)
    outward = (normals[side][:, [0, 2]] * radial[side]).sum(1) > 0
    assert outward.mean() > 0.97, outward.mean()
    # The texture has the prompt's red (left) and blue (right).
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    assert texture[..., 0].max() > 150 and texture[..., 2].max() > 150
