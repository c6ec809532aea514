"""bake: on an inflated solid whose voxel colours are a known linear function of position, the
texture at texel centres inside faces matches the function at the texel's 3D point (found
here from the UVs alone), every texel is filled, the texels around the coverage that bilinear
sampling reads copy their nearest covered texel (and sampling the surface reads no other), and
the output has the GLB writer's dtypes and shapes. With the fit to bilinear
sampling (step 5), a colour that varies within a few texels is reconstructed better at
surface points between texel centres, texels that no surface sample reads are unchanged, and
running out of GPU memory inside the fit keeps the texel-centre texture."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from kernels.ring_fill import RING_TAPS
from kernels.uv_raster import uv_raster
from perf.quality_metrics import sample_bilinear
from pipeline.atlas import unwrap
from pipeline.bake import bake, bake_texture, fit_enabled, jpeg_fill_enabled, uv_charts
from pipeline.generators.inflate import InflateGenerator
from pipeline.glb import write_glb
from pipeline.mesh import process_mesh
from pipeline.settings import PipelineSettings
from pipeline.texture_fill import sampled_texels
from pipeline.types import Frame, PreparedImage, RawAsset, TexturedMesh, UVMesh

TEXTURE_SIZE = 256
RESOLUTION = 64
# The field's colour: COLOUR_FLOOR + COLOUR_SLOPE * (p + 0.5) per channel, p in the asset frame
# (red follows x, green y, blue z): never black, and any flip of an axis shows.
COLOUR_FLOOR = 0.1
COLOUR_SLOPE = 0.8
# Trilinear sampling renormalised over the surface voxels present blends voxel centres within
# a voxel of the point (the gradient times one voxel), plus uint8 rounding (measured: 0.007).
COLOUR_TOLERANCE = COLOUR_SLOPE / RESOLUTION + 1 / 255


def settings(**overrides) -> PipelineSettings:
    base = {"resolution": RESOLUTION, "face_budget": 3000, "texture_size": TEXTURE_SIZE}
    return dataclasses.replace(PipelineSettings(device="cpu"), **{**base, **overrides})


def colour_of(points: torch.Tensor) -> torch.Tensor:
    """[..., 3] asset-frame points -> [..., 3] RGB of the test field."""
    return COLOUR_FLOOR + COLOUR_SLOPE * (points + 0.5)


def mask(name: str) -> np.ndarray:
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    if name == "ring":
        rho = np.hypot(xs - 64, ys - 64)
        return ((rho < 51) & (rho > 23)).astype(np.float32)
    if name == "l_shape":
        bar = (xs > 20) & (xs < 48) & (ys > 12) & (ys < 116)
        foot = (xs > 20) & (xs < 110) & (ys > 88) & (ys < 116)
        return (bar | foot).astype(np.float32)
    raise KeyError(name)


@functools.cache
def baked(name: str, texture_size: int = TEXTURE_SIZE) -> tuple[RawAsset, UVMesh, TexturedMesh]:
    config = settings(texture_size=texture_size)
    image = PreparedImage(torch.full((128, 128, 3), 0.5), torch.from_numpy(mask(name)), "alpha")
    asset = InflateGenerator(config, torch.device("cpu")).generate(image, 0)
    centres = (asset.coords.double() + 0.5) / asset.resolution - 0.5
    # The generator's tensors are inference tensors: a new attribute tensor, not an edit.
    attrs = torch.cat((colour_of(centres).float(), asset.attrs[:, 3:]), dim=1)
    asset = dataclasses.replace(asset, attrs=attrs)
    uv_mesh = unwrap(process_mesh(asset, config), config)
    return asset, uv_mesh, bake(uv_mesh, asset, config)


def texel_points(uv_mesh: UVMesh, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, asset-frame points) of every texel whose centre lies inside a face: the face
    from a centre-coverage raster, the point from barycentrics solved here from the UVs."""
    raster = uv_raster(uv_mesh.uvs, uv_mesh.faces, size, size, conservative=False)
    rows, cols = torch.nonzero(raster.face_ids >= 0, as_tuple=True)
    faces = uv_mesh.faces[raster.face_ids[rows, cols]]
    corners = uv_mesh.uvs.double()[faces] * size  # [T, 3, 2] texel units
    centre = torch.stack((cols, rows), 1).double() + 0.5
    e1, e2, d = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], centre - corners[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    w1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
    w2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    weights = torch.stack((1 - w1 - w2, w1, w2), 1)  # [T, 3]
    points = (weights[:, :, None] * uv_mesh.positions.double()[faces]).sum(1)
    return rows, cols, uv_mesh.frame.to_asset(points)


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_texels_inside_faces_hold_the_field_colour_at_their_point(name: str) -> None:
    _, uv_mesh, textured = baked(name)
    rows, cols, points = texel_points(uv_mesh, TEXTURE_SIZE)
    assert len(rows) > 0.2 * TEXTURE_SIZE**2
    got = torch.from_numpy(textured.base_color).double()[rows, cols] / 255
    error = (got - colour_of(points)).abs()
    assert float(error.max()) <= COLOUR_TOLERANCE


def test_a_texture_of_another_size_than_the_atlas_raster_is_rasterised_afresh() -> None:
    """The atlas's raster is at 256; a bake at 128 cannot reuse it."""
    asset, uv_mesh, _ = baked("l_shape")
    config = settings(texture_size=128)
    textured = bake(uv_mesh, asset, config)
    assert textured.base_color.shape == (128, 128, 3)
    rows, cols, points = texel_points(uv_mesh, 128)
    got = torch.from_numpy(textured.base_color).double()[rows, cols] / 255
    assert float((got - colour_of(points)).abs().max()) <= COLOUR_TOLERANCE


def test_reusing_the_atlas_raster_changes_nothing() -> None:
    asset, uv_mesh, textured = baked("ring")
    fresh = bake(dataclasses.replace(uv_mesh, raster=None), asset, settings())
    np.testing.assert_array_equal(fresh.base_color, textured.base_color)


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_every_texel_is_filled(name: str) -> None:
    _, _, textured = baked(name)
    floor = int(np.floor(COLOUR_FLOOR * 255))
    assert textured.base_color.min() >= floor  # no black background anywhere


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_the_sampled_ring_holds_its_nearest_covered_colours(name: str) -> None:
    _, uv_mesh, textured = baked(name)
    assert_the_ring_holds_its_nearest_covered_colours(textured.base_color, uv_mesh)


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_sampling_the_surface_reads_no_texel_beyond_the_ring(name: str) -> None:
    """Texels beyond the coverage's one-texel ring hold a fill for JPEG's sake only: zeroing
    them changes no bilinear sample at any point of any face (the judge has no mipmaps)."""
    _, uv_mesh, textured = baked(name)
    covered = uv_mesh.raster.face_ids >= 0
    beyond = ~sampled_texels(covered)
    assert 0 < float(beyond.float().mean()) < 1
    texture = torch.from_numpy(textured.base_color)
    blanked = torch.where(beyond[..., None], 0, texture)
    generator = torch.Generator().manual_seed(0)
    face = torch.randint(0, len(uv_mesh.faces), (20000,), generator=generator)
    weights = torch.rand(20000, 3, generator=generator, dtype=torch.float64)
    weights = weights / weights.sum(1, keepdim=True)
    uv = (weights[:, :, None] * uv_mesh.uvs.double()[uv_mesh.faces[face]]).sum(1)
    assert torch.equal(sample_bilinear(blanked, uv), sample_bilinear(texture, uv))
    # Negative control: blank the ring too, and samples near the charts' edges change.
    ring_too = torch.where(covered[..., None], texture, 0)
    assert not torch.equal(sample_bilinear(ring_too, uv), sample_bilinear(texture, uv))


def test_a_jpeg_texture_moves_only_texels_no_sample_reads() -> None:
    """Step 6: with JPEG_FILL the free texels of mixed blocks are set for the encoder; with a
    PNG texture or without it they keep the fill. The sampled texels are the same bits."""
    asset, uv_mesh, textured = baked("l_shape")  # on the CPU: JPEG_FILL=auto is off
    ready = bake(uv_mesh, asset, settings(jpeg_fill="on")).base_color
    as_png = bake(uv_mesh, asset, settings(jpeg_fill="on", texture_format="png")).base_color
    np.testing.assert_array_equal(as_png, textured.base_color)
    sampled = sampled_texels(uv_mesh.raster.face_ids >= 0).numpy()
    np.testing.assert_array_equal(ready[sampled], textured.base_color[sampled])
    assert (ready != textured.base_color).any(-1)[~sampled].mean() > 0.01


def test_the_jpeg_fill_is_on_by_default_on_cuda_with_a_jpeg_texture_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert jpeg_fill_enabled(settings(), cuda) and not jpeg_fill_enabled(settings(), cpu)
    assert jpeg_fill_enabled(settings(jpeg_fill="on"), cpu)
    assert not jpeg_fill_enabled(settings(jpeg_fill="off"), cuda)
    assert not jpeg_fill_enabled(settings(jpeg_fill="on", texture_format="png"), cuda)


def assert_the_ring_holds_its_nearest_covered_colours(texture: np.ndarray, uv_mesh: UVMesh) -> None:
    """Every texel of the ring around the coverage (pipeline/texture_fill.py's sampled texels)
    holds the mean of its nearest covered texels in the UV chart of the first of them in
    RING_TAPS order (to the uint8 rounding: within one level)."""
    covered = (uv_mesh.raster.face_ids >= 0).numpy()
    assert 0 < covered.mean() < 1
    ring = sampled_texels(torch.from_numpy(covered)).numpy() & ~covered
    chart = uv_charts(uv_mesh).numpy()[uv_mesh.raster.face_ids.clamp(min=0).numpy()]
    distance = distance_transform_edt(~covered)
    image = texture.astype(np.float64)
    covered_at = np.argwhere(covered)
    ties = mixed = 0
    for r, c in np.argwhere(ring):
        d = np.hypot(*(covered_at - [r, c]).T)
        nearest = {tuple(p) for p in covered_at[np.abs(d - distance[r, c]) < 1e-9]}
        ordered = [(r + dy, c + dx) for dy, dx in RING_TAPS if (r + dy, c + dx) in nearest]
        assert len(ordered) == len(nearest), (r, c)  # all among its 8 neighbours
        mean = np.mean([image[p] for p in ordered if chart[p] == chart[ordered[0]]], 0)
        assert np.abs(image[r, c] - mean).max() <= 1, (r, c)
        ties += len(ordered) > 1
        mixed += len({chart[p] for p in ordered}) > 1
    assert ties > 0  # equidistant covered texels occur, so the mean among them is tested
    assert mixed > 0  # and of two charts, so the chart rule is


def test_output_is_what_the_glb_writer_takes() -> None:
    _, uv_mesh, textured = baked("ring")
    V, F = len(uv_mesh.positions), len(uv_mesh.faces)
    assert textured.positions.shape == (V, 3) and textured.positions.dtype == np.float32
    assert textured.normals.shape == (V, 3) and textured.normals.dtype == np.float32
    assert textured.uvs.shape == (V, 2) and textured.uvs.dtype == np.float32
    assert textured.faces.shape == (F, 3) and textured.faces.dtype == np.uint32
    assert textured.base_color.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
    assert textured.base_color.dtype == np.uint8 and textured.base_color.flags.c_contiguous
    np.testing.assert_array_equal(textured.positions, uv_mesh.positions.numpy())
    np.testing.assert_array_equal(textured.uvs, uv_mesh.uvs.numpy())
    np.testing.assert_array_equal(textured.faces, uv_mesh.faces.numpy().astype(np.uint32))
    np.testing.assert_allclose(np.linalg.norm(textured.normals, axis=1), 1.0, atol=1e-5)
    glb = write_glb(textured, settings(texture_format="png"))
    assert glb.to_bytes()[:4] == b"glTF" and glb.size == len(glb.to_bytes())


def test_bake_is_deterministic() -> None:
    asset, uv_mesh, textured = baked("l_shape")
    again = bake(uv_mesh, asset, settings())
    np.testing.assert_array_equal(again.base_color, textured.base_color)


# A steep linear field for the edge tests: a point moved a texel along x changes the colour
# by EDGE_SLOPE / EDGE_TEXTURE_SIZE (~0.03), far above float32 rounding.
EDGE_TEXTURE_SIZE = 32
EDGE_SLOPE = 1.0


def edge_colour(face: torch.Tensor, bary: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Linear in the point (x mostly): exact under extension, and in [0, 1] near the faces."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack((0.5 + EDGE_SLOPE * x, 0.5 + 0.25 * y, 0.5 - 0.5 * EDGE_SLOPE * x), 1)


def flat_mesh(uv_corners: list[list[float]]) -> UVMesh:
    """One face per three uv corners (texels), its 3D points the uvs (x, y in [-0.5, 0.5])."""
    uv = torch.tensor(uv_corners, dtype=torch.float32) / EDGE_TEXTURE_SIZE  # [3F, 2]
    positions = torch.cat((uv - 0.5, torch.zeros(len(uv), 1)), 1)
    faces = torch.arange(len(uv)).reshape(-1, 3)
    normals = torch.tensor([[0.0, 0.0, 1.0]]).expand(len(uv), 3).contiguous()
    return UVMesh(positions, faces, normals, uv, Frame(1.0, (0.0, 0.0, 0.0)))


def test_texels_past_a_face_edge_hold_the_colour_the_face_continues_with() -> None:
    """A conservative texel whose centre lies outside its face takes the colour at its centre
    on the face's plane, so bilinear sampling inside the face follows a linear field up to the
    edge; the clamped edge point (the raster's barycentrics) would differ by ~a texel's slope."""
    mesh = flat_mesh([[4.2, 5.3], [27.6, 9.1], [11.4, 26.8]])
    texture = bake_texture(mesh, EDGE_TEXTURE_SIZE, edge_colour)
    raster = uv_raster(mesh.uvs, mesh.faces, EDGE_TEXTURE_SIZE, EDGE_TEXTURE_SIZE)
    rows, cols = torch.nonzero(raster.face_ids >= 0, as_tuple=True)
    centres = (torch.stack((cols, rows), 1).float() + 0.5) / EDGE_TEXTURE_SIZE - 0.5
    expected = edge_colour(rows, None, torch.cat((centres, torch.zeros(len(rows), 1)), 1))
    clamped = raster.barycentrics[rows, cols]
    clamped_points = (clamped[:, :, None] * mesh.positions[mesh.faces[0]]).sum(1)
    outside = (clamped_points[:, :2] - centres).norm(dim=1) > 0.2 / EDGE_TEXTURE_SIZE
    assert int(outside.sum()) >= 20  # the edge texels this test is about
    torch.testing.assert_close(texture[rows, cols], expected, atol=1e-5, rtol=0)
    clamped_colour = edge_colour(rows, None, clamped_points)
    # Each of those differs from its clamped colour by a hundred times the tolerance above.
    assert float((clamped_colour - expected)[outside].abs().amax(1).min()) > 1e-3


def test_a_sliver_thinner_than_a_texel_keeps_its_clamped_colour() -> None:
    """Beyond EXTRAPOLATION_LIMIT (a face far thinner than a texel) the texel takes the colour
    at the raster's clamped point: nothing is extended far off the face."""
    mesh = flat_mesh([[4.0, 10.0], [28.0, 10.3], [16.0, 10.1]])
    texture = bake_texture(mesh, EDGE_TEXTURE_SIZE, edge_colour)
    raster = uv_raster(mesh.uvs, mesh.faces, EDGE_TEXTURE_SIZE, EDGE_TEXTURE_SIZE)
    rows, cols = torch.nonzero(raster.face_ids >= 0, as_tuple=True)
    points = (raster.barycentrics[rows, cols][:, :, None] * mesh.positions[mesh.faces[0]]).sum(1)
    assert len(rows) >= 20
    torch.testing.assert_close(
        texture[rows, cols], edge_colour(rows, None, points), atol=1e-5, rtol=0
    )


# A colour that turns within a few texels of the 256² atlas on the test solids (period ~0.1 of
# the unit cube): what texel-centre samples flatten between centres.
WAVE = 60.0


def wave_colour(face: torch.Tensor, bary: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    x, y, z = points.float().unbind(1)
    return torch.stack(
        (
            0.5 + 0.4 * torch.sin(WAVE * x),
            0.5 + 0.4 * torch.cos(WAVE * y),
            0.5 + 0.3 * torch.sin(WAVE * z),
        ),
        1,
    )


def sampled(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """texture [S, S, 3] at uv [N, 2], bilinear, clamped at the border (the judge's sampler)."""
    grid = (uv * 2 - 1)[None, None].float()  # [1, 1, N, 2]; uv (0, 0) is texel row 0
    image = texture.permute(2, 0, 1)[None]
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_the_fit_reconstructs_the_surface_colour_better_between_texel_centres(name: str) -> None:
    _, uv_mesh, _ = baked(name)
    centred = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour)
    fitted = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True)
    # Random points on the surface: a seeded face (by area in uv) and barycentrics.
    generator = torch.Generator().manual_seed(0)
    corners = uv_mesh.uvs[uv_mesh.faces]  # [F, 3, 2]
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = 0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs()
    face = torch.multinomial(area, 20_000, replacement=True, generator=generator)
    r = torch.rand(len(face), 2, generator=generator)
    r = torch.where(r.sum(1, keepdim=True) > 1, 1 - r, r)
    bary = torch.stack((1 - r.sum(1), r[:, 0], r[:, 1]), 1)
    uv = (bary[:, :, None] * corners[face]).sum(1)
    points = (bary[:, :, None] * uv_mesh.positions[uv_mesh.faces[face]]).sum(1)
    truth = wave_colour(face, bary, points)
    error_centred = (sampled(centred, uv) - truth).pow(2).mean()
    error_fitted = (sampled(fitted, uv) - truth).pow(2).mean()
    assert error_fitted < 0.7 * error_centred
    assert float(fitted.min()) >= 0 and float(fitted.max()) <= 1


def test_the_fit_leaves_texels_no_surface_sample_reads() -> None:
    _, uv_mesh, _ = baked("l_shape")
    centred = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour)
    fitted = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True)
    quarter = uv_raster(uv_mesh.uvs, uv_mesh.faces, 2 * TEXTURE_SIZE, 2 * TEXTURE_SIZE, False)
    # Quarter point k is read by texels floor(k / 2) - 1 .. floor(k / 2) + 1.
    inside = (quarter.face_ids >= 0).float()[None, None]
    per_texel = F.max_pool2d(inside, 2)  # [1, 1, S, S]
    reached = F.max_pool2d(per_texel, 3, stride=1, padding=1)[0, 0] > 0
    assert 0 < float(reached.float().mean()) < 1
    assert torch.equal(fitted[~reached], centred[~reached])
    assert not torch.equal(fitted[reached], centred[reached])


def test_the_fit_is_on_by_default_on_cuda_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fit_enabled(settings(), cuda) and not fit_enabled(settings(), cpu)
    assert fit_enabled(settings(bake_fit="on"), cpu)
    assert not fit_enabled(settings(bake_fit="off"), cuda)


def test_the_fit_colours_its_points_in_chunks_to_the_same_bits(monkeypatch) -> None:
    _, uv_mesh, _ = baked("ring")
    whole = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True)
    monkeypatch.setattr("pipeline.bake.QUARTER_CHUNK", 1000)
    assert torch.equal(bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True), whole)


def test_the_fit_running_out_of_memory_keeps_the_texel_centre_texture(monkeypatch, caplog) -> None:
    _, uv_mesh, _ = baked("ring")
    centred = bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour)
    calls = []

    def short_of_memory(face: torch.Tensor, bary: torch.Tensor, points: torch.Tensor):
        calls.append(len(face))
        if len(calls) > 1:  # the texel centres pass, the fit's quarter points do not
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return wave_colour(face, bary, points)

    with caplog.at_level("WARNING", logger="pipeline.bake"):
        kept = bake_texture(uv_mesh, TEXTURE_SIZE, short_of_memory, fit=True)
    assert len(calls) == 2 and torch.equal(kept, centred)
    assert "the fit ran out of memory (CUDA out of memory" in caplog.text

    def failing_fit(*args: object) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (the solve)")

    monkeypatch.setattr("pipeline.bake.fit_texture", failing_fit)
    assert torch.equal(bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True), centred)
    # Any other error still fails the bake.
    monkeypatch.setattr("pipeline.bake.fit_texture", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bake_texture(uv_mesh, TEXTURE_SIZE, wave_colour, fit=True)


# ------------------------------------------------------------------------------- material
# A varying material for the field: metallic follows x, roughness falls with z (asset frame).
def material_of(points: torch.Tensor) -> torch.Tensor:
    """[..., 3] asset-frame points -> [..., 2] (metallic, roughness) of the test field."""
    return torch.stack((0.1 + 0.8 * (points[..., 0] + 0.5), 0.9 - 0.7 * (points[..., 2] + 0.5)), -1)


def with_material(asset: RawAsset, material: torch.Tensor) -> RawAsset:
    """The asset with its metallic and roughness channels replaced by material [N, 2]."""
    attrs = torch.cat((asset.attrs[:, :3], material.float(), asset.attrs[:, 5:]), dim=1)
    return dataclasses.replace(asset, attrs=attrs)


def varying(asset: RawAsset) -> RawAsset:
    return with_material(asset, material_of((asset.coords.double() + 0.5) / asset.resolution - 0.5))


@pytest.mark.parametrize("material", ["roughness", "field"])
@pytest.mark.parametrize("fit", ["off", "on"])
def test_a_uniform_field_material_is_written_as_factors_without_a_texture(
    material: str, fit: str
) -> None:
    """Inflate's field is metallic 0, roughness 0.8 everywhere: the factors the GLB always had."""
    asset, uv_mesh, _ = baked("ring")
    textured = bake(uv_mesh, asset, settings(bake_fit=fit, material=material))
    assert (textured.metallic, textured.roughness) == (0.0, 0.8)
    assert textured.metallic_roughness is None
    # Uniform at the uint8 level is uniform: values within half a level round to one factor.
    jitter = torch.linspace(-0.4, 0.4, len(asset.attrs))[:, None] / 255
    near = with_material(asset, torch.tensor([[128.0, 64.0]]) / 255 + jitter)
    config = settings(bake_fit=fit, material=material, metallic=0.25)
    textured = bake(uv_mesh, near, config)
    metallic = 128 / 255 if material == "field" else 0.25
    assert (textured.metallic, textured.roughness) == (metallic, 64 / 255)
    assert textured.metallic_roughness is None


def assert_holds_the_field_material(
    texture: np.ndarray, uv_mesh: UVMesh, channels: dict[int, int]
) -> None:
    """texture's channels (glTF's: 1 G, 2 B; a grey texture's one: 0) hold material_of's
    channels (0 metallic, 1 roughness) at the centres of texels inside faces."""
    assert texture.dtype == np.uint8 and texture.flags.c_contiguous
    if texture.ndim == 2:  # grey: glTF reads it as G and B alike
        assert texture.shape == (TEXTURE_SIZE, TEXTURE_SIZE)
        texture = texture[..., None]
    else:
        assert texture.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
        assert not texture[..., 0].any()  # R unused
    rows, cols, points = texel_points(uv_mesh, TEXTURE_SIZE)
    expected = material_of(points)
    got = torch.from_numpy(texture).double()[rows, cols] / 255
    tolerance = 0.8 / RESOLUTION + 1 / 255  # the field's steepest slope, as for the colour
    for texture_channel, field_channel in channels.items():
        assert float(expected[:, field_channel].std()) > 0.1
        error = (got[:, texture_channel] - expected[:, field_channel]).abs()
        assert float(error.max()) <= tolerance


@pytest.mark.parametrize("fit", ["off", "on"])
def test_a_varying_field_material_is_baked_into_a_metallic_roughness_texture(fit: str) -> None:
    asset, uv_mesh, _ = baked("l_shape")
    plain = bake(uv_mesh, asset, settings(bake_fit=fit))
    textured = bake(uv_mesh, varying(asset), settings(bake_fit=fit, material="field"))
    assert (textured.metallic, textured.roughness) == (1.0, 1.0)
    assert_holds_the_field_material(textured.metallic_roughness, uv_mesh, {1: 1, 2: 0})
    # The colour is the same bits with or without the material beside it.
    np.testing.assert_array_equal(textured.base_color, plain.base_color)


def test_by_default_the_field_gives_the_roughness_and_the_setting_the_metallic() -> None:
    asset, uv_mesh, plain = baked("l_shape")
    assert settings().material == "roughness"
    textured = bake(uv_mesh, varying(asset), settings(metallic=0.3))
    assert (textured.metallic, textured.roughness) == (0.3, 1.0)
    texture = textured.metallic_roughness
    assert_holds_the_field_material(texture, uv_mesh, {1: 1})
    assert (texture[..., 2] == 255).all()  # metallic: 255 x the factor 0.3
    np.testing.assert_array_equal(textured.base_color, plain.base_color)
    # With metallic 0 (the default) B is multiplied by 0: one grey channel, the roughness.
    textured = bake(uv_mesh, varying(asset), settings())
    assert (textured.metallic, textured.roughness) == (0.0, 1.0)
    assert_holds_the_field_material(textured.metallic_roughness, uv_mesh, {0: 1})
    np.testing.assert_array_equal(textured.base_color, plain.base_color)
    # A varying metallic alone makes no texture here: the setting gives it.
    count = len(asset.attrs)
    ramp = torch.stack((torch.linspace(0, 1, count), torch.full((count,), 0.5)), 1)
    metallic_only = with_material(asset, ramp)
    textured = bake(uv_mesh, metallic_only, settings())
    assert (textured.metallic, textured.roughness, textured.metallic_roughness) == (
        0.0,
        128 / 255,
        None,
    )


def test_a_uniform_channel_beside_a_varying_one_is_its_factor_times_255() -> None:
    asset, uv_mesh, _ = baked("ring")
    points = (asset.coords.double() + 0.5) / asset.resolution - 0.5
    material = material_of(points)
    material[:, 0] = 13 / 255  # uniform metallic, varying roughness
    textured = bake(uv_mesh, with_material(asset, material), settings(material="field"))
    assert (textured.metallic, textured.roughness) == (13 / 255, 1.0)
    assert (textured.metallic_roughness[..., 2] == 255).all()
    assert_holds_the_field_material(textured.metallic_roughness, uv_mesh, {1: 1})


@pytest.mark.parametrize("material", ["roughness", "field"])
def test_a_varying_roughness_beside_metallic_0_is_one_grey_channel(material: str) -> None:
    """glTF reads a grey image's value as G and B; B times metallicFactor 0 is 0."""
    asset, uv_mesh, _ = baked("ring")
    points = (asset.coords.double() + 0.5) / asset.resolution - 0.5
    material_values = material_of(points)
    material_values[:, 0] = 0.0  # metallic 0 everywhere: MATERIAL=field's factor 0 too
    grey = bake(uv_mesh, with_material(asset, material_values), settings(material=material))
    assert (grey.metallic, grey.roughness) == (0.0, 1.0)
    assert_holds_the_field_material(grey.metallic_roughness, uv_mesh, {0: 1})
    # A metallic factor above 0 keeps the RGB texture, the same roughness in its G.
    config = settings(material="roughness", metallic=0.5)
    rgb = bake(uv_mesh, with_material(asset, material_values), config)
    assert (rgb.metallic, rgb.roughness) == (0.5, 1.0)
    assert (rgb.metallic_roughness[..., 2] == 255).all()
    np.testing.assert_array_equal(rgb.metallic_roughness[..., 1], grey.metallic_roughness)


def test_the_metallic_roughness_texture_fills_its_ring_from_the_nearest_covered_texels() -> None:
    asset, uv_mesh, _ = baked("ring")
    textured = bake(uv_mesh, varying(asset), settings(material="field"))
    assert_the_ring_holds_its_nearest_covered_colours(textured.metallic_roughness, uv_mesh)
    # No texel is left empty (0): the field's metallic is at least 0.1, its roughness 0.2.
    assert textured.metallic_roughness[..., 2].min() >= round(0.1 * 255)
    assert textured.metallic_roughness[..., 1].min() >= round(0.2 * 255)


def test_a_constant_material_ignores_the_field() -> None:
    asset, uv_mesh, plain = baked("ring")
    config = settings(material="constant", metallic=0.3, roughness=0.45)
    textured = bake(uv_mesh, varying(asset), config)
    assert (textured.metallic, textured.roughness) == (0.3, 0.45)
    assert textured.metallic_roughness is None
    np.testing.assert_array_equal(textured.base_color, plain.base_color)


def test_one_voxel_of_another_material_makes_a_texture() -> None:
    asset, uv_mesh, _ = baked("ring")
    material = asset.attrs[:, 3:5].clone()
    material[len(material) // 2] = torch.tensor([0.9, 0.1])
    textured = bake(uv_mesh, with_material(asset, material), settings(material="field"))
    assert textured.metallic_roughness is not None
    assert (textured.metallic, textured.roughness) == (1.0, 1.0)
    # Away from that voxel the texture holds the rest's levels: metallic 0, roughness 204.
    levels, counts = np.unique(
        textured.metallic_roughness.reshape(-1, 3), axis=0, return_counts=True
    )
    assert levels[np.argmax(counts)].tolist() == [0, 204, 0]
