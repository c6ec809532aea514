"""perf/quality.py and its parts at small sizes: the flat rasterizer against a brute-force ray
test, the synthetic mesh's promises, the atlas metrics on hand-built UVs, the whole measure on
a synthetic mesh, a prompt (inflate) and Duck.glb, the seam cost of two atlases of one mesh,
and negative controls that show each metric catches the failure it is for: overlapping charts,
a wrong texture, a blacked-out seam band."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from kernels.uv_raster import uv_raster
from perf import quality
from perf.flat_render import (
    box_candidates,
    judge_cameras,
    render_face_ids_reference,
    render_view,
    render_views,
)
from perf.quality_inputs import QualityInput, load_input, load_mesh_file
from perf.quality_metrics import (
    fidelity,
    margin_share,
    overlap_texels,
    packing_bound,
    pixel_errors,
    reference_colours,
    sample_bilinear,
    seam_cost_db,
    seam_pixels,
    source_limited_faces,
    utilisation,
    uv_charts,
)
from perf.synthetic import (
    BAND_CELLS,
    FACE_TOLERANCE,
    _field,
    _grid_field,
    _noise_waves,
    synthetic_mesh,
)
from pipeline.atlas import unwrap
from pipeline.bake import bake_texture, quantise
from pipeline.settings import PipelineSettings
from tests.pipeline.conftest import PROMPTS_DIR

MESHES_DIR = PROMPTS_DIR.parent / "meshes"
TEXTURE_SIZE = 256
RENDER_SIZE = 128
SYNTHETIC_FACES = 8000
# Measured with the default atlas at TEXTURE_SIZE / RENDER_SIZE (2026-11-22, the chart atlas
# with relaxed charts, first-fit nesting and the extended bake, 1e3f00e): synthetic 23.0 dB
# (30 stripe periods per unit against ~3 texels per period), the first prompt 42.2 dB, Duck
# 37.0 dB; the floors leave 5.0-8.2 dB.
PSNR_FLOOR_DB = {"synthetic": 18.0, "prompt": 34.0, "Duck.glb": 30.0}
# Measured likewise: a constant mid-grey texture costs 12.7 dB or more; a blacked-out 1-texel
# band around every chart costs the seam pixels 11.7 dB or more and leaves them 9.2 dB or more
# below the other pixels.
WRONG_TEXTURE_DROP_DB = 8.0
SEAM_BAND_DROP_DB = 8.0
SEAM_BELOW_INTERIOR_DB = 6.0
# Measured likewise on the synthetic mesh, the chart atlas against xatlas (2026-11-23): seam
# costs 0.56 and 0.22 dB; with the chart atlas's seam band blacked out, 10.1 dB.
SEAM_COST_BOUND_DB = 3.0
SEAM_COST_DROP_DB = 6.0
PIXEL_TOLERANCE = 1e-3  # a visible point's reprojection lies this close to its pixel centre


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only spins on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_settings() -> PipelineSettings:
    return PipelineSettings(
        device="cpu", texture_size=TEXTURE_SIZE, resolution=96, face_budget=3000
    )


# --- the rasterizer ------------------------------------------------------------------------


def cube_and_occluder(flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A box with a sphere in front of one corner: positions [V, 3] float32, faces [F, 3]."""
    box = trimesh.creation.box((0.6, 0.6, 0.6))
    ball = trimesh.creation.icosphere(1, 0.2)
    ball.apply_translation((0.2, 0.25, 0.35))
    mesh = trimesh.util.concatenate([box, ball])
    faces = np.asarray(mesh.faces, np.int64)
    return np.asarray(mesh.vertices, np.float32), faces[:, ::-1].copy() if flip else faces


@pytest.mark.parametrize("flip", [False, True], ids=["outward", "inward"])
def test_rasterizer_matches_brute_force_rays(flip: bool) -> None:
    positions, faces = cube_and_occluder(flip)
    for camera in judge_cameras(48):
        view = render_view(torch.from_numpy(positions), torch.from_numpy(faces), camera)
        expected = render_face_ids_reference(positions, faces, camera)
        np.testing.assert_array_equal(view.face_ids.numpy(), expected)
        # Each visible point lies on its pixel's ray, and the barycentrics rebuild it.
        fg = view.foreground
        rows, columns = torch.nonzero(fg, as_tuple=True)
        eye, axes = camera.axes(torch.device("cpu"))
        local = (view.points[fg].double() - eye) @ axes.T
        x = camera.size / 2 + camera.focal * local[:, 0] / local[:, 2]
        y = camera.size / 2 - camera.focal * local[:, 1] / local[:, 2]
        assert (x - (columns + 0.5)).abs().max() < PIXEL_TOLERANCE
        assert (y - (rows + 0.5)).abs().max() < PIXEL_TOLERANCE
        corners = torch.from_numpy(positions)[torch.from_numpy(faces)[view.face_ids[fg]]]
        rebuilt = (view.barycentrics[fg][:, :, None] * corners).sum(1)
        torch.testing.assert_close(rebuilt, view.points[fg], atol=1e-5, rtol=0)


def test_back_faces_are_culled() -> None:
    """Seen from outside, the inward-wound box shows its far walls, the outward one its near."""
    camera = judge_cameras(48)[0]
    near, far = (
        render_view(*(torch.from_numpy(a) for a in cube_and_occluder(flip)), camera)
        for flip in (False, True)
    )
    both = near.foreground & far.foreground
    assert both.sum() > 100
    assert (far.depth[both] > near.depth[both] + 0.1).float().mean() > 0.5


def test_box_candidates_cover_every_texel_once_across_chunks() -> None:
    x0, y0 = torch.tensor([0, 5, 2]), torch.tensor([0, 1, 3])
    nx, ny = torch.tensor([7, 0, 3]), torch.tensor([5, 4, 1])
    pairs = [
        (int(b), int(x), int(y))
        for box, xs, ys in box_candidates(x0, y0, nx, ny, chunk=4)
        for b, x, y in zip(box, xs, ys, strict=True)
    ]
    expected = [(0, x, y) for y in range(5) for x in range(7)] + [(2, x, 3) for x in range(2, 5)]
    assert pairs == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rasterizer_is_the_same_on_cuda() -> None:
    mesh = synthetic_mesh(20_000)
    cpu = render_views(mesh.positions, mesh.faces, RENDER_SIZE)
    gpu = render_views(mesh.positions.cuda(), mesh.faces.cuda(), RENDER_SIZE)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a.face_ids, b.face_ids.cpu())


# --- the synthetic mesh ----------------------------------------------------------------------


def test_synthetic_mesh_is_trellis_like_and_deterministic() -> None:
    mesh = synthetic_mesh(SYNTHETIC_FACES)
    faces = mesh.faces.numpy()
    assert abs(len(faces) / SYNTHETIC_FACES - 1) <= FACE_TOLERANCE
    assert mesh.positions.abs().max() <= 0.5
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    assert (uses == 1).sum() > 0  # open boundaries
    assert (uses > 2).sum() > 0  # non-manifold edges (the fin)
    again = synthetic_mesh(SYNTHETIC_FACES)
    assert torch.equal(mesh.positions, again.positions) and torch.equal(mesh.faces, again.faces)


def test_synthetic_band_matches_the_full_grid() -> None:
    """The field evaluated only near the surface gives the marching cubes of the whole grid."""
    from skimage.measure import marching_cubes

    N = 40
    values, band = _grid_field(N, seed=0, device=torch.device("cpu"))
    axis = torch.linspace(-0.5, 0.5, N)
    nodes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    full = _field(nodes, *_noise_waves(0, torch.device("cpu"))).numpy()
    np.testing.assert_allclose(values[band], full[band], atol=1e-6)
    assert (np.sign(values) == np.sign(full))[np.abs(full) > 1e-6].all()
    np.testing.assert_array_equal(band, np.abs(values) < BAND_CELLS / (N - 1))
    everywhere = marching_cubes(full, 0.0)[1]
    banded = marching_cubes(values, 0.0, mask=band)[1]
    assert len(banded) == len(everywhere) > 0


# --- the atlas metrics on hand-built UVs -----------------------------------------------------


def squares(*corners: tuple[float, float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One two-triangle chart per (u0, v0, u1, v1): uvs [4n, 2], faces [2n, 3]."""
    uvs, faces = [], []
    for i, (u0, v0, u1, v1) in enumerate(corners):
        uvs += [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
        faces += [(4 * i, 4 * i + 1, 4 * i + 2), (4 * i, 4 * i + 2, 4 * i + 3)]
    return torch.tensor(uvs, dtype=torch.float32), torch.tensor(faces)


def overlap_texels_brute_force(uvs: np.ndarray, faces: np.ndarray, chart: np.ndarray, size: int):
    """Every texel centre against every face, strictly inside (by 1e-4 texels)."""
    centres = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2) + 0.5
    charts_at = [set() for _ in range(len(centres))]
    for face, corners in enumerate(uvs.astype(np.float64)[faces] * size):
        inside = np.ones(len(centres), bool)
        (ax, ay), (bx, by) = corners[1] - corners[0], corners[2] - corners[0]
        orientation = np.sign(ax * by - ay * bx)
        for i in range(3):
            edge, offset = corners[(i + 1) % 3] - corners[i], centres - corners[i]
            cross = (edge[0] * offset[:, 1] - edge[1] * offset[:, 0]) * orientation
            inside &= cross / np.linalg.norm(edge) > 1e-4
        for texel in np.flatnonzero(inside):
            charts_at[texel].add(chart[face])
    return sum(len(found) > 1 for found in charts_at)


def test_overlapping_charts_are_counted() -> None:
    uvs, faces = squares((0.1, 0.1, 0.52, 0.5), (0.3, 0.33, 0.7, 0.7))
    chart, count = uv_charts(faces)
    assert count == 2 and chart.tolist() == [0, 0, 1, 1]
    found = overlap_texels(uvs, faces, chart, 64)
    expected = overlap_texels_brute_force(uvs.numpy(), faces.numpy(), chart.numpy(), 64)
    assert found == expected > 100


def test_touching_charts_and_folds_are_not_overlaps() -> None:
    # Two charts sharing an edge's position (not its vertices), and a third folded onto itself.
    uvs, faces = squares((0.0, 0.0, 0.25, 0.5), (0.25, 0.0, 0.5, 0.5), (0.6, 0.6, 0.9, 0.9))
    folded = torch.cat((faces, faces[4:5]))  # chart 2's first face twice
    chart, count = uv_charts(folded)
    assert count == 3
    assert overlap_texels(uvs, folded, chart, 64) == 0
    assert utilisation(uvs, faces) == pytest.approx(0.125 + 0.125 + 0.09)


def test_margin_share_is_the_covered_texels_grown_by_half_the_gutter() -> None:
    # Squares of 8 x 8 texels well inside a 64² atlas (texel edges on their sides), 16 apart.
    uvs, faces = squares((0.125, 0.125, 0.25, 0.25), (0.5, 0.5, 0.625, 0.625))
    covered = uv_raster(uvs, faces, 64, 64, conservative=True).face_ids >= 0
    rows = torch.nonzero(covered[:, :24].any(1)).squeeze(1)  # the first square's rows
    side = int(rows.max() - rows.min()) + 1  # conservative: 8 to 10 texels a side
    assert 8 <= side <= 10 and int(covered.sum()) == 2 * side * side
    for gutter, grown in ((4, side + 4), (8, side + 8), (0, side)):
        assert margin_share(uvs, faces, 64, gutter) == pytest.approx(2 * grown**2 / 64**2)


def test_packing_bound() -> None:
    # No margin: the pieces alone scale up until they fill the atlas.
    assert packing_bound(0.25, 0.25) == pytest.approx(1.0)
    # Margins filling the atlas already: no larger scale fits.
    assert packing_bound(0.4, 1.0) == pytest.approx(0.4)
    # u s^2 + (m - u) s = 1 at the bound's scale, and more margin means a lower bound.
    u, m = 0.45, 0.72
    s = (packing_bound(u, m) / u) ** 0.5
    assert u * s * s + (m - u) * s == pytest.approx(1.0)
    assert packing_bound(u, 0.8) < packing_bound(u, m) < packing_bound(u, 0.6)
    assert packing_bound(0.0, 0.5) == 0.0


def test_charts_join_through_edges_not_vertices() -> None:
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 5]])  # the third shares one vertex only
    chart, count = uv_charts(faces)
    assert count == 2 and chart.tolist() == [0, 0, 1]


def test_bilinear_sampling_is_gl_linear() -> None:
    texture = torch.tensor([[[0], [100]], [[200], [255]]], dtype=torch.uint8)  # [2, 2, 1]
    uv = torch.tensor([[0.25, 0.25], [0.5, 0.25], [0.5, 0.5], [0.0, 0.0], [1.0, 0.75]])
    clamp = sample_bilinear(texture, uv)[:, 0].tolist()
    assert clamp == pytest.approx([0.0, 50.0, 138.75, 0.0, 255.0])
    repeat = sample_bilinear(texture, uv[3:4], wrap="repeat")[0, 0]  # all four texels
    assert float(repeat) == pytest.approx(138.75)


# --- the whole measure on real inputs, and the negative controls -----------------------------


def first_prompt() -> str:
    prompts = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not prompts:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    return str(prompts[0])


def duck() -> str:
    path = MESHES_DIR / "Duck.glb"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return str(path)


INPUTS = {
    "synthetic": lambda: f"synthetic:{SYNTHETIC_FACES}",
    "prompt": first_prompt,
    "Duck.glb": duck,
}


@functools.cache
def loaded(name: str) -> QualityInput:
    return load_input(INPUTS[name](), small_settings(), torch.device("cpu"))


@pytest.mark.parametrize("name", list(INPUTS))
def test_default_atlas_quality(name: str) -> None:
    item = loaded(name)
    (record,) = quality.measure_input(
        item, quality.parse_methods(None), small_settings(), RENDER_SIZE, repeat=1
    )
    assert record["atlas_ok"] and record["repeatable"]
    assert record["faces"] == len(item.mesh.faces)
    assert record["overlap_texels"] == 0
    assert 0 < record["utilisation"] <= 1
    assert record["utilisation"] < record["margin_share"] <= 1
    assert record["utilisation"] <= record["packing_bound"] <= 1
    assert record["charts"] >= 1
    assert record["psnr_db"] >= PSNR_FLOOR_DB[name]
    assert record["seam_pixels"] > 0 and math.isfinite(record["seam_psnr_db"])
    assert record["atlas_ms"] > 0 and record["bake_ms"] > 0


def seam_band(uv_mesh, chart: torch.Tensor) -> torch.Tensor:
    """[S, S] bool: every texel with a texel of another chart (or none) among its 8 neighbours:
    the gutters and each chart's outermost texels, which bilinear sampling reads at seams."""
    raster = uv_raster(uv_mesh.uvs, uv_mesh.faces, TEXTURE_SIZE, TEXTURE_SIZE)
    texel_chart = torch.where(raster.face_ids >= 0, chart[raster.face_ids.clamp(min=0)], -1)
    padded = torch.nn.functional.pad(texel_chart, (1, 1, 1, 1), value=-1)
    band = torch.zeros_like(texel_chart, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            band |= padded[dy : dy + TEXTURE_SIZE, dx : dx + TEXTURE_SIZE] != texel_chart
    return band


@pytest.mark.parametrize("name", list(INPUTS))
def test_wrong_texture_and_blacked_out_seams_lower_the_psnr(name: str) -> None:
    item, settings = loaded(name), small_settings()
    views = render_views(item.mesh.positions, item.mesh.faces, RENDER_SIZE)
    reference = reference_colours(views, item.colour)
    uv_mesh = unwrap(item.mesh, settings)
    chart, _ = uv_charts(uv_mesh.faces)
    texture = quantise(bake_texture(uv_mesh, TEXTURE_SIZE, item.colour))

    def measure(candidate: torch.Tensor):
        return fidelity(views, reference, uv_mesh.uvs, uv_mesh.faces, candidate, chart)

    good = measure(texture)
    wrong = measure(torch.full_like(texture, 128))
    assert wrong.psnr_db <= good.psnr_db - WRONG_TEXTURE_DROP_DB
    blacked = measure(torch.where(seam_band(uv_mesh, chart)[..., None], 0, texture))
    assert blacked.seam_psnr_db <= good.seam_psnr_db - SEAM_BAND_DROP_DB
    assert blacked.seam_psnr_db <= blacked.interior_psnr_db - SEAM_BELOW_INTERIOR_DB


def test_seam_cost_tells_lossy_seams_from_hard_content() -> None:
    base = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seams_a = torch.zeros(1000, dtype=torch.bool)
    seams_a[:200] = True
    seams_b = torch.zeros_like(seams_a)
    seams_b[100:300] = True
    hard = torch.where(seams_a, 10.0, 1.0) * (base + 0.1)  # A's seams lie on hard content
    # The same errors from both layouts: no cost, however hard the pixels beside A's seams;
    # nor when A is twice as bad everywhere.
    assert seam_cost_db(hard, seams_a, hard, seams_b) == pytest.approx(0.0, abs=1e-9)
    assert seam_cost_db(2 * hard, seams_a, hard, seams_b) == pytest.approx(0.0, abs=1e-9)
    # A four times as bad beside its own seams: 6.02 dB for A, nothing for B.
    lossy = torch.where(seams_a, 4.0, 1.0) * hard
    assert seam_cost_db(lossy, seams_a, hard, seams_b) == pytest.approx(10 * math.log10(4))
    assert seam_cost_db(hard, seams_b, lossy, seams_a) == pytest.approx(0.0, abs=1e-9)
    # No pixel beside A's seams only, or none beside neither's: no number.
    assert seam_cost_db(hard, seams_a, hard, seams_a) is None
    assert seam_cost_db(hard, seams_a, hard, torch.ones_like(seams_a)) is None


def test_two_methods_report_each_ones_seam_cost() -> None:
    item, settings = loaded("synthetic"), small_settings()
    views = render_views(item.mesh.positions, item.mesh.faces, RENDER_SIZE)
    reference = reference_colours(views, item.colour)
    (ours, our_pixels), (theirs, their_pixels) = (
        quality.measure_method(item, method, views, reference, settings, repeat=1)
        for method in ("charts", "xatlas")
    )
    assert ours["atlas_ok"] and theirs["atlas_ok"]
    quality.add_seam_costs([ours, theirs], [our_pixels, their_pixels])
    assert list(ours["seam_cost_db"]) == ["xatlas"] and list(theirs["seam_cost_db"]) == ["charts"]
    measured = [ours["seam_cost_db"]["xatlas"], theirs["seam_cost_db"]["charts"]]
    assert all(math.isfinite(cost) and abs(cost) < SEAM_COST_BOUND_DB for cost in measured)
    own, neither = ours["seam_cost_pixels"]["xatlas"]
    own_other, neither_again = theirs["seam_cost_pixels"]["charts"]
    assert neither == neither_again > 0 and 0 < own <= ours["seam_pixels"]
    assert own + own_other + neither <= ours["foreground_pixels"]
    assert "vs xatlas" in quality.markdown_table([ours, theirs])
    # Negative control: the chart atlas's texture with its seam band blacked out (the same
    # layout and bake as measure_method's: both are deterministic).
    uv_mesh = unwrap(item.mesh, dataclasses.replace(settings, atlas_method="charts"))
    chart, _ = uv_charts(uv_mesh.faces)
    texture = quantise(bake_texture(uv_mesh, TEXTURE_SIZE, item.colour))
    blacked = torch.where(seam_band(uv_mesh, chart)[..., None], 0, texture)
    errors = pixel_errors(views, reference, uv_mesh.uvs, uv_mesh.faces, blacked)
    assert torch.equal(seam_pixels(views, chart), our_pixels.seams)
    cost = seam_cost_db(errors, our_pixels.seams, their_pixels.errors, their_pixels.seams)
    assert cost >= measured[0] + SEAM_COST_DROP_DB


def test_one_method_reports_no_seam_cost() -> None:
    item = loaded("synthetic")
    (record,) = quality.measure_input(item, ["charts"], small_settings(), 32, repeat=1)
    assert record["atlas_ok"]
    assert "seam_cost_db" not in record and "seam_cost_pixels" not in record
    # A field's colour has no texels of its own: nothing is source-limited.
    assert item.source_texels is None and "source_limited_pixels" not in record


def test_unrounded_psnr_sees_past_the_uint8_rounding() -> None:
    """A constant colour half a level off every uint8 level: the stored texture errs by half
    a level everywhere (20 log10(255 / 0.5) = 54.15 dB), the float texture before rounding
    not at all."""
    item = loaded("synthetic")

    def constant(levels: list[float]):
        colour = torch.tensor(levels, dtype=torch.float64) / 255
        return lambda face_ids, _bary, _points: colour.to(face_ids.device).expand(len(face_ids), 3)

    def record(levels: list[float]) -> dict:
        flat = dataclasses.replace(item, colour=constant(levels))
        return quality.measure_input(flat, ["charts"], small_settings(), 64, repeat=1)[0]

    half_off = record([100.5, 20.5, 200.5])
    half_level_db = 20 * math.log10(255 / 0.5)
    assert half_off["psnr_db"] == pytest.approx(half_level_db, abs=0.01)
    assert half_off["seam_psnr_db"] == pytest.approx(half_level_db, abs=0.01)
    assert half_off["unrounded_psnr_db"] > 100 and half_off["unrounded_seam_psnr_db"] > 100
    # Levels the uint8 texture holds: nothing lost to the rounding either.
    on_levels = record([100, 20, 200])
    assert on_levels["psnr_db"] > 100 and on_levels["unrounded_psnr_db"] > 100
    assert "unrounded PSNR / seam dB" in quality.markdown_table([half_off])


def test_stored_psnr_is_the_glb_textures_after_its_encoding() -> None:
    """PNG keeps the uint8 texture (the stored PSNRs are the rounded ones, to the bit); JPEG
    loses more the lower its quality, and its decoded texture is what the PSNR is of."""
    item = loaded("synthetic")

    def record(**changes) -> dict:
        settings = dataclasses.replace(small_settings(), **changes)
        return quality.measure_input(item, ["charts"], settings, 64, repeat=1)[0]

    png = record(texture_format="png")
    assert png["texture_format"] == "png" and png["texture_bytes"] > 0
    assert png["stored_psnr_db"] == png["psnr_db"]
    assert png["stored_seam_psnr_db"] == png["seam_psnr_db"]
    fine, coarse = record(jpeg_quality=95), record(jpeg_quality=20)
    assert fine["texture_format"] == "jpeg 95" and coarse["texture_format"] == "jpeg 20"
    assert fine["psnr_db"] == png["psnr_db"]  # the same uint8 texture before its encoding
    assert coarse["stored_psnr_db"] < fine["stored_psnr_db"] < png["stored_psnr_db"]
    assert coarse["stored_seam_psnr_db"] < fine["stored_seam_psnr_db"]
    assert coarse["texture_bytes"] < fine["texture_bytes"]
    assert "stored PSNR / seam dB" in quality.markdown_table([png, fine])
    # The round trip itself: PNG returns the texels, JPEG near them.
    texture = torch.randint(
        0, 256, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    smooth = torch.arange(32, dtype=torch.uint8)[:, None, None].expand(32, 32, 3) * 4
    decoded, _ = quality.stored_texture(texture, PipelineSettings(texture_format="png"))
    assert torch.equal(decoded, texture)
    decoded, _ = quality.stored_texture(smooth.contiguous(), PipelineSettings(jpeg_quality=90))
    assert decoded.shape == smooth.shape and decoded.dtype == torch.uint8
    assert (decoded.int() - smooth.int()).abs().max() <= 4


def test_an_xatlas_fallback_is_reported_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """unwrap answers a failed or late xatlas with the default atlas: no numbers for it."""
    item = loaded("synthetic")
    default = dataclasses.replace(small_settings(), atlas_method=quality.parse_methods(None)[0])
    fallback = unwrap(item.mesh, default)
    assert fallback.stats.get("xatlas") != 1.0
    monkeypatch.setattr(quality, "unwrap", lambda mesh, settings: fallback)
    views = render_views(item.mesh.positions, item.mesh.faces, 32)
    record, pixels = quality.measure_method(
        item, "xatlas", views, reference_colours(views, item.colour), small_settings(), repeat=1
    )
    assert pixels is None
    assert record["atlas_ok"] is False and record["atlas_runs"] == 1
    assert "psnr_db" not in record and "overlap_texels" not in record


def test_source_limited_faces_against_a_whole_texture_spread_evenly() -> None:
    # Two triangles of area 1/2: a 4 x 4 texture spread over both gives each 8 texels.
    positions = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    source = torch.tensor([8.0, 8.001], dtype=torch.float64)
    assert source_limited_faces(positions, faces, source, 4).tolist() == [False, True]
    assert source_limited_faces(positions, faces, source, 8).tolist() == [False, False]
    flat = torch.zeros_like(positions)  # no area at all: nothing to compare with
    assert not source_limited_faces(flat, faces, source, 4).any()


def dense_front_cube(path: Path) -> None:
    """A unit cube GLB whose +Z side maps over most of a 256² one-texel checker and whose other
    sides map into a few texels of one flat colour."""
    from PIL import Image

    box = trimesh.creation.box((1.0, 1.0, 1.0))
    box.unmerge_vertices()
    corners = box.vertices[box.faces]  # [F, 3, 3]
    front = box.face_normals[:, 2] > 0.9
    uv = np.empty((len(box.faces), 3, 2))
    uv[front] = 0.05 + 0.85 * (corners[front][..., :2] + 0.5)
    side = np.argmax(np.abs(box.face_normals[~front]), axis=1)
    plane = np.stack([np.delete(c, a, axis=1) for c, a in zip(corners[~front], side, strict=True)])
    uv[~front] = 0.97 + 0.02 * (plane + 0.5)
    texels = np.indices((256, 256)).sum(0) % 2 * 255
    image = np.stack([texels] * 3, axis=-1).astype(np.uint8)
    image[240:, :] = image[:, 240:] = (200, 80, 40)
    visual = trimesh.visual.TextureVisuals(uv=uv.reshape(-1, 2), image=Image.fromarray(image))
    box.visual = visual
    box.export(str(path))


def test_a_source_denser_than_the_texture_is_reported_apart(tmp_path) -> None:
    path = tmp_path / "dense_front.glb"
    dense_front_cube(path)
    item = load_mesh_file(path, torch.device("cpu"))
    settings = dataclasses.replace(small_settings(), texture_size=64)
    (record,) = quality.measure_input(item, ["charts"], settings, 64, repeat=1)
    # The +Z side (two triangles) holds ~23.7k source texels each; 64² spread over the cube
    # gives each triangle ~340: those two are limited, the flat sides (~13 texels) are not.
    assert record["source_limited_faces"] == 2 == int((item.source_texels > 1000).sum())
    assert 0 < record["source_limited_pixels"] < record["foreground_pixels"]
    # The checker cannot survive a 64² bake; the flat sides can (this CPU, 2026-11-24: 27.1
    # and 27.6 dB over all pixels and the seams', 163.0 and 162.3 without the +Z side's).
    assert record["psnr_db"] < 35 and record["seam_psnr_db"] < 35
    assert record["resolvable_psnr_db"] > 60 and record["resolvable_seam_psnr_db"] > 60


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_source_limited_pixels_are_the_same_on_cuda(tmp_path) -> None:
    path = tmp_path / "dense_front.glb"
    dense_front_cube(path)
    settings = dataclasses.replace(small_settings(), texture_size=64)
    records = []
    for device in ("cpu", "cuda"):
        item = load_mesh_file(path, torch.device(device))
        assert item.source_texels.device == item.mesh.positions.device
        on = dataclasses.replace(settings, device=device)
        (record,) = quality.measure_input(item, ["charts"], on, 64, repeat=1)
        records.append(record)
    keys = ("source_limited_faces", "source_limited_pixels", "foreground_pixels")
    assert [records[0][k] for k in keys] == [records[1][k] for k in keys]
    assert records[1]["resolvable_psnr_db"] > 60


def test_command_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "quality.json"
    argv = ["synthetic:3000", "--json", str(out), "--device", "cpu", "--markdown"]
    argv += ["--texture-size", "128", "--render-size", "64", "--repeat", "1"]
    assert quality.main(argv) == 0
    report = json.loads(out.read_text())
    assert {"device", "torch", "date", "commit", "records"} <= set(report)
    (record,) = report["records"]
    assert record["input"] == "synthetic:3000" and record["overlap_texels"] == 0
    table = capsys.readouterr().out
    assert "| synthetic:3000 |" in table and "seam PSNR dB" in table
    with pytest.raises(ValueError, match="atlas_method"):
        quality.parse_methods("box,nonsense")


def test_no_timed_run_is_refused_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "quality.json"
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["synthetic:3000", "--json", str(out), "--repeat", "0"])
    assert exit_info.value.code == 2 and not out.exists()
    assert "--repeat must be at least 1" in capsys.readouterr().err
