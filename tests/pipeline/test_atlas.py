"""unwrap and chart_atlas: UVs inside the texture, no texel centre claimed by two faces, charts
at least the gutter apart under conservative coverage, the UV mesh a seam-split copy of the
mesh (same faces in the same order), bounded distortion, determinism, and xatlas falling
back to our chart atlas without hanging; a mesh with non-manifold fins, slivers, degenerate
faces, open boundaries and many components unwraps without overlap."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import numpy as np
import pytest
import torch
import trimesh
from scipy.ndimage import binary_dilation

import kernels.components as components_kernels
import kernels.first_fit as first_fit_kernels
import pipeline.atlas as atlas_module
import pipeline.nesting as nesting
from kernels.uv_raster import uv_raster
from pipeline.atlas import Layout, chart_atlas, unwrap
from pipeline.charts import SMOOTH_MIN_COS
from pipeline.generators.inflate import InflateGenerator
from pipeline.mesh import process_mesh
from pipeline.raster_layout import grid_cells
from pipeline.settings import PipelineSettings
from pipeline.types import Mesh, PreparedImage, RawAsset, UVMesh
from tests.triton_caches import compiled_variants

TEXTURE_SIZE = 256
# UV-space area over surface area is the packing's scale squared times the face's cosine to
# its axis, which the charts keep in [SMOOTH_MIN_COS, 1]: the ratio's spread is bounded.
# Slack for float32 UVs on small faces (a face of ~1 texel: rounding of ~1e-7 in uv).
DENSITY_SPREAD_SLACK = 1.05
# xatlas gets this long in the test where its child fails at once: twice the child's start-up
# (a fresh interpreter importing torch, ~3 s here), so only a missed failure waits it out.
XATLAS_FAILING_TIMEOUT_S = 6.0


def settings(**overrides) -> PipelineSettings:
    base = {"resolution": 64, "face_budget": 3000, "texture_size": TEXTURE_SIZE}
    return dataclasses.replace(PipelineSettings(device="cpu"), **{**base, **overrides})


def mask(name: str) -> np.ndarray:
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    rho = np.hypot(xs - 64, ys - 64)
    if name == "ring":
        return ((rho < 51) & (rho > 23)).astype(np.float32)
    if name == "l_shape":
        bar = (xs > 20) & (xs < 48) & (ys > 12) & (ys < 116)
        foot = (xs > 20) & (xs < 110) & (ys > 88) & (ys < 116)
        return (bar | foot).astype(np.float32)
    if name == "thin_bar":
        return ((xs > 10) & (xs < 118) & (ys > 60) & (ys < 68)).astype(np.float32)
    raise KeyError(name)


@functools.cache
def inflated_mesh(name: str) -> Mesh:
    image = PreparedImage(torch.full((128, 128, 3), 0.5), torch.from_numpy(mask(name)), "alpha")
    asset = InflateGenerator(settings(), torch.device("cpu")).generate(image, 0)
    return process_mesh(asset, settings())


def sphere_mesh(subdivisions: int = 1) -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.4)
    asset = RawAsset(
        torch.tensor(sphere.vertices, dtype=torch.float32),
        torch.tensor(sphere.faces, dtype=torch.int64),
        torch.zeros(1, 3, dtype=torch.int32),
        torch.full((1, 6), 0.5),
        64,
    )
    return process_mesh(asset, settings())


@functools.cache
def unwrapped(name: str, gutter_texels: int = 0, texture_size: int = TEXTURE_SIZE) -> UVMesh:
    config = settings(gutter_texels=gutter_texels, texture_size=texture_size)
    return unwrap(inflated_mesh(name), config)


CASES = [("ring", 0, 256), ("l_shape", 0, 256), ("thin_bar", 3, 300), ("l_shape", 5, 257)]


def assert_seam_split_copy(uv_mesh: UVMesh, mesh: Mesh) -> None:
    """Same faces in the same order; each UV vertex is the mesh vertex at its corner."""
    assert uv_mesh.faces.shape == mesh.faces.shape and uv_mesh.faces.dtype == torch.int64
    V = len(uv_mesh.positions)
    assert uv_mesh.positions.shape == (V, 3) and uv_mesh.normals.shape == (V, 3)
    assert uv_mesh.uvs.shape == (V, 2) and uv_mesh.uvs.dtype == torch.float32
    assert len(mesh.positions) <= V <= 3 * len(mesh.faces)
    assert np.array_equal(np.unique(uv_mesh.faces.cpu().numpy()), np.arange(V))  # all used
    assert torch.equal(uv_mesh.positions[uv_mesh.faces], mesh.positions[mesh.faces])
    assert torch.equal(uv_mesh.normals[uv_mesh.faces], mesh.normals[mesh.faces])
    assert uv_mesh.frame == mesh.frame


# --- the chart atlas -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gutter_texels", "size"), CASES)
def test_the_uv_mesh_is_a_seam_split_copy_of_the_mesh(name, gutter_texels, size) -> None:
    uv_mesh = unwrapped(name, gutter_texels, size)
    assert_seam_split_copy(uv_mesh, inflated_mesh(name))
    uvs = uv_mesh.uvs
    assert float(uvs.min()) >= 0.0 and float(uvs.max()) <= 1.0
    assert uv_mesh.stats["charts"] >= 6 and 0 < uv_mesh.stats["utilisation"] <= 1


@pytest.mark.parametrize(("name", "gutter_texels", "size"), CASES)
def test_no_texel_centre_lies_inside_two_faces(name, gutter_texels, size) -> None:
    uv_mesh = unwrapped(name, gutter_texels, size)
    assert uv_mesh.raster is not None
    assert not bool(uv_mesh.raster.overlapping.any())
    # The raster kept for the bake is the raster of these very UVs and faces.
    again = uv_raster(uv_mesh.uvs, uv_mesh.faces, size, size, conservative=True)
    assert not bool(again.overlapping.any())
    assert torch.equal(again.face_ids, uv_mesh.raster.face_ids)
    assert torch.equal(again.barycentrics, uv_mesh.raster.barycentrics)


@pytest.mark.parametrize(("name", "gutter_texels", "size"), CASES)
def test_charts_are_at_least_the_gutter_apart(name, gutter_texels, size) -> None:
    """Each chart rasterised on its own with conservative coverage (every texel its bilinear
    footprint reads), grown by gutter - 1 texels, meets no other chart: between the texels of
    two charts lie at least gutter - 1 texels that no chart touches."""
    mesh = inflated_mesh(name)
    gutter = settings(gutter_texels=gutter_texels, texture_size=size).gutter
    layout = chart_atlas(mesh.positions, mesh.faces, size, gutter)
    chart = layout.piece_of_face.numpy()
    uvs = layout.corner_uvs.reshape(-1, 2)
    soup = torch.arange(3 * len(chart)).reshape(-1, 3)
    coverage = []
    for label in range(chart.max() + 1):
        mine = soup[torch.from_numpy(np.nonzero(chart == label)[0])]
        raster = uv_raster(uvs, mine, size, size, conservative=True)
        coverage.append(raster.face_ids.numpy() >= 0)
    count = np.sum(coverage, axis=0)
    square = np.ones((2 * gutter - 1, 2 * gutter - 1), bool)
    for covered in coverage:
        grown = binary_dilation(covered, square)
        others = count - covered > 0
        assert not (grown & others).any()


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_texel_density_is_uniform_within_the_charts_cosine_bound(name: str) -> None:
    uv_mesh = unwrapped(name)
    p = uv_mesh.positions.double()[uv_mesh.faces]
    surface = torch.linalg.norm(torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=1), dim=1)
    t = uv_mesh.uvs.double()[uv_mesh.faces]
    u, v = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    uv_area = (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs()
    ratio = uv_area / surface
    assert float(ratio.min()) > 0
    assert float(ratio.max() / ratio.min()) <= DENSITY_SPREAD_SLACK / SMOOTH_MIN_COS


def test_unwrap_is_deterministic() -> None:
    mesh = inflated_mesh("ring")
    first, second = unwrap(mesh, settings()), unwrap(mesh, settings())
    for name in ("positions", "faces", "normals", "uvs"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.stats == second.stats


def test_chart_atlas_returns_corner_uvs_per_face() -> None:
    mesh = inflated_mesh("l_shape")
    positions, faces = mesh.positions.numpy(), mesh.faces.numpy()
    layout = chart_atlas(mesh.positions, mesh.faces, 128, 2)
    chart, corner_uvs, raster = (
        layout.piece_of_face.numpy(),
        layout.corner_uvs.numpy(),
        layout.raster,
    )
    assert chart.shape == (len(faces),) and corner_uvs.shape == (len(faces), 3, 2)
    assert corner_uvs.dtype == np.float32
    assert np.array_equal(np.unique(chart), np.arange(int(layout.stats["pieces"])))
    assert layout.stats["pieces"] >= layout.stats["charts"] >= 1
    assert corner_uvs.min() >= 0 and corner_uvs.max() <= 1
    assert raster.face_ids.shape == (128, 128)
    # A mesh vertex has one UV per chart: its corners agree wherever the chart is the same.
    keys = chart[:, None] * len(positions) + faces  # [F, 3]
    order = np.argsort(keys.reshape(-1), kind="stable")
    sorted_keys, sorted_uvs = keys.reshape(-1)[order], corner_uvs.reshape(-1, 2)[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    np.testing.assert_array_equal(sorted_uvs[1:][same], sorted_uvs[:-1][same])


def test_a_single_triangle_and_an_open_sheet_unwrap() -> None:
    for positions, faces in (
        ([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.1]], [[0, 1, 2]]),
        ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]]),
    ):
        positions_t = torch.tensor(positions, dtype=torch.float32)
        faces_t = torch.tensor(faces, dtype=torch.int64)
        normals = torch.zeros_like(positions_t)
        normals[:, 2] = 1.0
        mesh = Mesh(positions_t, faces_t, normals, sphere_mesh().frame)
        uv_mesh = unwrap(mesh, settings())
        assert_seam_split_copy(uv_mesh, mesh)
        assert float(uv_mesh.uvs.min()) >= 0 and float(uv_mesh.uvs.max()) <= 1
        assert uv_mesh.stats["charts"] == 1


@pytest.mark.parametrize("extents", [(10.0, 1.0, 0.2), (10.0, 0.3, 0.3)])
def test_a_plank_or_a_pole_longer_than_the_texture_is_cut_not_shrunk(extents) -> None:
    # A 10 x 1 x 0.2 plank and a 10 x 0.3 x 0.3 pole: six flat charts, the long ones longer
    # than the texture at the scale the rest would get. Whole, they shrank every chart to
    # their length: utilisation 0.24 and 0.12 (this CPU); cut into tiles, 0.62 and 0.48.
    box = trimesh.creation.box(extents=extents)
    for _ in range(3):
        box = box.subdivide()
    positions = torch.tensor(box.vertices / 10, dtype=torch.float32)
    faces = torch.tensor(box.faces, dtype=torch.int64)
    size = 2 * TEXTURE_SIZE
    layout = chart_atlas(positions, faces, size, 2)
    assert layout.stats["charts"] == 6
    assert layout.stats["utilisation"] > 0.4
    soup = torch.arange(3 * len(faces)).reshape(-1, 3)
    uvs = layout.corner_uvs.reshape(-1, 2)
    assert float(uvs.min()) >= 0 and float(uvs.max()) <= 1
    assert not bool(uv_raster(uvs, soup, size, size, conservative=True).overlapping.any())


# --- xatlas -------------------------------------------------------------------------------------


def test_xatlas_past_its_timeout_falls_back_to_the_chart_atlas(caplog) -> None:
    mesh = sphere_mesh()
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="pipeline.atlas"):
        uv_mesh = unwrap(mesh, settings(atlas_method="xatlas", atlas_timeout_s=0.001))
    assert time.perf_counter() - start < 5.0
    assert "outlasted" in caplog.text
    assert uv_mesh.raster is not None and uv_mesh.stats["charts"] >= 1  # the chart atlas's
    assert_seam_split_copy(uv_mesh, mesh)


def test_xatlas_failing_in_its_child_falls_back_at_once(caplog, monkeypatch, tmp_path) -> None:
    (tmp_path / "xatlas.py").write_text("raise ImportError('xatlas is missing in this test')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned child inherits sys.path
    mesh = sphere_mesh()
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="pipeline.atlas"):
        config = settings(atlas_method="xatlas", atlas_timeout_s=XATLAS_FAILING_TIMEOUT_S)
        uv_mesh = unwrap(mesh, config)
    elapsed = time.perf_counter() - start
    assert uv_mesh.raster is not None  # the chart atlas's
    assert "xatlas failed" in caplog.text
    assert elapsed < XATLAS_FAILING_TIMEOUT_S


def nasty_mesh(seed: int = 0) -> Mesh:
    """What generators emit at their worst: a noisy open sphere with a fin on an edge (three
    faces there), slivers, zero-area faces, and 1500 loose triangles (as many components)."""
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.35)
    vertices = sphere.vertices * (1 + 0.05 * rng.standard_normal((len(sphere.vertices), 1)))
    faces = np.asarray(sphere.faces, np.int64)
    faces = faces[vertices[faces].mean(1)[:, 1] < 0.25]  # a hole: open boundary
    V = len(vertices)
    fin = np.array([[faces[0, 0], faces[0, 1], V]])
    sliver = np.array([[faces[5, 0], faces[5, 1], V + 1]])
    zero = np.array([[faces[9, 0], faces[9, 0], faces[9, 1]]])
    extra = [
        vertices[faces[0, 0]] + [0.0, 0.1, 0.0],
        vertices[faces[5, 0]] * 0.5 + vertices[faces[5, 1]] * 0.5 + 1e-7,
    ]
    loose = rng.uniform(-0.45, 0.45, (1500, 1, 3)) + rng.normal(0, 0.01, (1500, 3, 3))
    positions = np.concatenate([vertices, extra, loose.reshape(-1, 3)])
    loose_faces = V + 2 + np.arange(4500).reshape(-1, 3)
    all_faces = np.concatenate([faces, fin, sliver, zero, loose_faces])
    positions_t = torch.tensor(positions, dtype=torch.float32)
    faces_t = torch.from_numpy(all_faces)
    normals = torch.nn.functional.normalize(positions_t + 1e-6, dim=1)
    return Mesh(positions_t, faces_t, normals, sphere_mesh().frame)


def test_a_nasty_mesh_unwraps_without_overlap_in_bounded_time() -> None:
    mesh = nasty_mesh()
    start = time.perf_counter()
    uv_mesh = unwrap(mesh, settings(texture_size=512))
    assert time.perf_counter() - start < 30.0  # the CPU path; seconds here
    assert_seam_split_copy(uv_mesh, mesh)
    assert float(uv_mesh.uvs.min()) >= 0 and float(uv_mesh.uvs.max()) <= 1
    assert uv_mesh.stats["charts"] >= 1500  # every loose triangle is a chart of its own
    assert not bool(uv_mesh.raster.overlapping.any())
    again = uv_raster(uv_mesh.uvs, uv_mesh.faces, 512, 512, conservative=True)
    assert not bool(again.overlapping.any())


def ramp_mesh(turns: float = 1.25) -> tuple[torch.Tensor, torch.Tensor]:
    """A spiral ramp of `turns` turns around the y axis, rising 0.08 a turn: one chart (every
    face looks up the y axis) whose projection covers its first and last quarter turns twice."""
    around, across = int(120 * turns), 12
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi * turns, around), np.linspace(0.1, 0.4, across))
    positions = np.stack([v * np.cos(u), u / (2 * np.pi) * 0.08, v * np.sin(u)], -1)
    index = np.arange(across * around).reshape(across, around)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = np.concatenate([np.stack(t, -1).reshape(-1, 3) for t in ((a, b, d), (a, d, c))])
    return torch.tensor(positions.reshape(-1, 3), dtype=torch.float32), torch.from_numpy(faces)


def test_the_overlapping_ends_of_a_curled_chart_leave_it_whole_not_face_by_face() -> None:
    positions, faces = ramp_mesh()
    layout = chart_atlas(positions, faces, 256, 2)
    assert layout.stats["charts"] == 1
    # The two overlapping ends are apart on the surface: each leaves as one piece (before,
    # their 1342 faces went alone and the utilisation was 0.20).
    assert layout.stats["isolated_faces"] == 0 and layout.stats["pieces"] <= 4
    assert layout.stats["utilisation"] > 0.4
    soup = torch.arange(3 * len(faces)).reshape(-1, 3)
    uvs = layout.corner_uvs.reshape(-1, 2)
    assert not bool(uv_raster(uvs, soup, 256, 256, conservative=True).overlapping.any())


def test_a_chart_wound_on_itself_all_along_falls_into_single_faces_without_overlap() -> None:
    # Two turns: every face lies over another layer, so the folded faces form one group that
    # still overlaps, and each of its faces goes alone (the documented degrade).
    positions, faces = ramp_mesh(2.0)
    layout = chart_atlas(positions, faces, 512, 2)
    assert layout.stats["isolated_faces"] == len(faces) == layout.stats["pieces"]
    uvs = layout.corner_uvs.reshape(-1, 2)
    assert bool(((uvs >= 0) & (uvs <= 1)).all())
    soup = torch.arange(3 * len(faces)).reshape(-1, 3)
    assert not bool(uv_raster(uvs, soup, 512, 512, conservative=True).overlapping.any())


def loose_triangles(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` small triangles scattered in the unit cube, none sharing a vertex: as many
    pieces as faces."""
    rng = np.random.default_rng(count)
    corners = rng.uniform(-0.5, 0.5, (count, 1, 3)) + rng.normal(0, 0.01, (count, 3, 3))
    positions = torch.tensor(corners.reshape(-1, 3), dtype=torch.float32)
    return positions, torch.arange(3 * count).reshape(-1, 3)


def test_more_pieces_than_the_gutter_leaves_room_for_get_a_narrower_gutter() -> None:
    # 600 boxes of at least 3 x 3 texels (a 2-texel gutter) do not fit 64^2; of 2 x 2 they do.
    positions, faces = loose_triangles(600)
    layout = chart_atlas(positions, faces, 64, 2)
    assert layout.stats["pieces"] == 600 and layout.stats["gutter"] == 1
    assert not bool(layout.raster.overlapping.any())
    assert_pieces_a_gutter_apart(layout, 64, 1)
    # Within the room the asked gutter leaves, it is kept.
    assert chart_atlas(*loose_triangles(300), 64, 2).stats["gutter"] == 2


def test_a_gutter_of_zero_asked_is_packed_on_shelves_not_in_cells(monkeypatch) -> None:
    def no_cells(*args, **kwargs):
        raise AssertionError("the cells are the last resort")

    monkeypatch.setattr(atlas_module, "cell_corners", no_cells)
    layout = chart_atlas(*loose_triangles(300), 64, 0)
    assert layout.stats["gutter"] == 0 and not bool(layout.raster.overlapping.any())


def test_more_pieces_than_the_texture_has_texels_still_get_a_layout() -> None:
    # 5000 pieces in 64^2 = 4096 texels: each gets a cell of its own (the last resort).
    positions, faces = loose_triangles(5000)
    layout = chart_atlas(positions, faces, 64, 2)
    assert layout.stats["pieces"] == 5000 and layout.stats["gutter"] == 0
    uvs = layout.corner_uvs.numpy().astype(np.float64)
    assert uvs.min() >= 0 and uvs.max() <= 1
    across = int(np.ceil(np.sqrt(5000)))
    cell = np.floor(uvs.mean(1) * across).astype(np.int64)  # [F, 2] each face's cell
    piece = layout.piece_of_face.numpy()
    assert np.array_equal(cell[:, 1] * across + cell[:, 0], piece)  # piece c in cell c
    slack = 1e-6
    assert (uvs >= (cell / across)[:, None, :] - slack).all()
    assert (uvs <= ((cell + 1) / across)[:, None, :] + slack).all()


# --- on CUDA (the GPU machine: pytest -m gpu) ----------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.gpu
def test_on_cuda_the_atlas_is_deterministic_and_overlap_free() -> None:
    mesh = nasty_mesh()
    on_gpu = Mesh(
        mesh.positions.cuda(), mesh.faces.cuda(), mesh.normals.cuda(), mesh.frame, mesh.stats
    )
    first, second = (unwrap(on_gpu, settings(texture_size=1024)) for _ in range(2))
    for name in ("positions", "faces", "normals", "uvs"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.uvs.is_cuda and not bool(first.raster.overlapping.any())
    assert_seam_split_copy(first, on_gpu)
    # The charts are the CPU's (labels are decided in float64; tiles and packing may differ
    # only through float rounding of the projected corners).
    on_cpu = unwrap(mesh, settings(texture_size=1024))
    assert first.stats["charts"] == on_cpu.stats["charts"]


@cuda
@pytest.mark.gpu
def test_on_cuda_the_kernels_warm_up_leaves_the_atlas_nothing_to_compile() -> None:
    """After `warm_up_kernels`, layouts of few and many pieces at the settings' grid and the
    fold grouping's components compile nothing more (each new variant cost a request ~0.4 s)."""

    def compiled() -> int:
        kernels = (first_fit_kernels._first_fit_kernel, components_kernels._components_kernel)
        return compiled_variants(*kernels)

    config = settings(texture_size=1024)
    device = torch.device("cuda")
    atlas_module.warm_up_kernels(config, device)
    before = compiled()
    grid = grid_cells(config.texture_size, config.gutter)[1]
    for count in (17, first_fit_kernels.MANY_SHAPES + 5):
        ones = torch.ones((1, count), dtype=torch.int32, device=device)
        start = torch.arange(count + 1, dtype=torch.int32, device=device)[None]
        placed = first_fit_kernels.first_fit(0 * ones, 2 * ones, start, 2 * ones, grid)
        assert bool((placed >= 0).all())
    for n in (3, 48):
        a = torch.arange(n - 1, device=device)
        labels = components_kernels.components_one_program(n, a, a + 1)
        assert bool((labels == 0).all())
    assert compiled() == before


def assert_pieces_a_gutter_apart(layout: Layout, size: int, gutter: int) -> None:
    """Any two faces of different pieces have boxes that, grown by half the gutter, do not
    overlap."""
    piece, texels = layout.piece_of_face.numpy(), layout.corner_uvs.numpy().astype(np.float64)
    texels = texels * size
    lo, hi = texels.min(1) - gutter / 2, texels.max(1) + gutter / 2
    slack = 1e-3  # float32 uvs
    for start in range(0, len(piece), 1024):
        part = slice(start, start + 1024)
        apart = (lo[part, None, :] >= hi[None, :, :] - slack) | (
            hi[part, None, :] <= lo[None, :, :] + slack
        )
        clash = ~apart.any(2) & (piece[part, None] != piece[None, :])
        assert not clash.any(), np.argwhere(clash)[:5]


def test_faces_of_different_pieces_of_a_nasty_mesh_are_a_gutter_apart() -> None:
    """The pieces reported are the pieces laid out, a gutter apart (nested small pieces sit
    in other pieces' boxes, never near their faces; a layout's piece numbers once went stale
    when the last round still split faces off)."""
    mesh = nasty_mesh()
    assert_pieces_a_gutter_apart(chart_atlas(mesh.positions, mesh.faces, 512, 2), 512, 2)


@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_the_raster_layout_is_denser_overlap_free_and_a_gutter_apart(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout CUDA takes (every piece laid by its shape, pipeline/raster_layout.py), here
    on the first fit's numpy reference: more of the texture used than the shelves and the
    nesting use, no texel centre in two faces, pieces a gutter apart."""
    mesh = inflated_mesh(name)
    shelved = chart_atlas(mesh.positions, mesh.faces, 256, 2)
    monkeypatch.setattr(nesting, "RASTER_ON_CPU", True)
    layout = chart_atlas(mesh.positions, mesh.faces, 256, 2)
    # Measured here at the default 32 trial scales: ring 0.511 -> 0.559, L 0.437 -> 0.578. At
    # 8 the scale steps are coarse: the ring's 0.558 on one CI host was 0.519 on another
    # (an AMD EPYC, whose CPU float work gave the ring a slightly different atlas).
    assert layout.stats["utilisation"] > shelved.stats["utilisation"] + 0.02
    assert not bool(layout.raster.overlapping.any())
    assert_pieces_a_gutter_apart(layout, 256, 2)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ring", "l_shape"])
def test_on_cuda_the_raster_layout_is_denser_overlap_free_and_a_gutter_apart(name: str) -> None:
    """The Triton first fit's layout: as on the CPU's reference, and deterministic."""
    mesh = inflated_mesh(name)
    shelved = chart_atlas(mesh.positions, mesh.faces, 256, 2)  # the CPU: shelves and nesting
    positions, faces = mesh.positions.cuda(), mesh.faces.cuda()
    first, second = (chart_atlas(positions, faces, 256, 2) for _ in range(2))
    assert torch.equal(first.corner_uvs, second.corner_uvs)
    assert first.stats["utilisation"] > shelved.stats["utilisation"] + 0.02
    assert not bool(first.raster.overlapping.any())
    on_host = Layout(first.piece_of_face.cpu(), first.corner_uvs.cpu(), first.raster, first.stats)
    assert_pieces_a_gutter_apart(on_host, 256, 2)


def test_the_raster_layout_reads_only_the_outline_faces_to_the_same_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each row's first and last cell of a piece come from faces on its outline (the rest
    lie between them), so reading only those (the speed-up at 1M faces) changes nothing."""
    mesh = inflated_mesh("l_shape")
    monkeypatch.setattr(nesting, "RASTER_ON_CPU", True)
    monkeypatch.setattr(nesting, "RASTER_TRIALS", 8)
    outline_only = chart_atlas(mesh.positions, mesh.faces, 256, 2)
    monkeypatch.setattr(atlas_module, "_outline", lambda pairs, piece: torch.ones_like(piece) > 0)
    every_face = chart_atlas(mesh.positions, mesh.faces, 256, 2)
    assert torch.equal(outline_only.corner_uvs, every_face.corner_uvs)
    assert outline_only.stats["utilisation"] > 0.5


@pytest.mark.parametrize("batch", [1, 5, 1 << 20])
def test_each_piece_turns_to_its_smallest_box(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batched or one turn at a time, every piece keeps the first of ORIENTATIONS turns whose
    box is smallest (checked per piece in numpy), turned rigidly; the same bits either way."""
    rng = np.random.default_rng(3)
    count, faces = 40, 300
    piece = torch.from_numpy(np.sort(rng.integers(0, count, faces)))
    piece[:count] = torch.arange(count)  # every piece has a face
    piece = torch.sort(piece).values
    corners = torch.from_numpy(rng.normal(size=(faces, 3, 2)) * [3.0, 1.0])
    monkeypatch.setattr(atlas_module, "ORIENT_BATCH", batch * faces)
    turned = atlas_module._oriented(corners, piece, count)
    monkeypatch.setattr(atlas_module, "ORIENT_BATCH", faces)  # one turn per batch
    assert torch.equal(turned, atlas_module._oriented(corners, piece, count))
    angles = np.arange(atlas_module.ORIENTATIONS) * (np.pi / 2 / atlas_module.ORIENTATIONS)
    for p in range(count):
        points = corners[piece == p].reshape(-1, 2).numpy()
        areas = []
        for angle in angles:
            c, s = np.cos(angle), np.sin(angle)
            spun = points @ np.array([[c, -s], [s, c]]).T
            areas.append(np.prod(spun.max(0) - spun.min(0)))
        c, s = np.cos(angles[np.argmin(areas)]), np.sin(angles[np.argmin(areas)])
        expected = points @ np.array([[c, -s], [s, c]]).T
        np.testing.assert_allclose(turned[piece == p].reshape(-1, 2).numpy(), expected, atol=1e-12)


def test_piece_neighbours_grow_flags_across_edges_within_a_piece() -> None:
    rng = np.random.default_rng(11)
    for trial in range(20):
        F, E = int(rng.integers(1, 60)), int(rng.integers(0, 120))
        a, b = rng.integers(0, F, E), rng.integers(0, F, E)
        piece = rng.integers(0, 4, F)
        flagged = rng.random(F) < 0.2
        expected = flagged.copy()
        for x, y in zip(a, b, strict=True):  # an edge inside a piece passes a flag both ways
            if piece[x] == piece[y]:
                expected[x] |= flagged[y]
                expected[y] |= flagged[x]
        pairs = (torch.from_numpy(a), torch.from_numpy(b))
        grown = atlas_module._with_piece_neighbours(
            pairs, torch.from_numpy(piece), torch.from_numpy(flagged)
        )
        assert np.array_equal(grown.numpy(), expected), trial
