"""process_mesh and fit_frame: the output frame (Y up, front +Z, fitted), the face budget
(simplification, through process_mesh: `simplify` itself lives in pipeline/simplify.py),
outward winding and normals, Frame.to_asset as the inverse of the fit, and clean-up of messy
generator output (soups, flips, duplicates, degenerate faces)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
import trimesh

from pipeline.generators.inflate import InflateGenerator
from pipeline.mesh import fit_frame, process_mesh
from pipeline.settings import CPU_FACE_BUDGET, CUDA_FACE_BUDGET, PipelineSettings
from pipeline.types import Frame, Mesh, PreparedImage, RawAsset

FACE_BUDGET = 1000
# Faces the simplifier may leave above the budget (quadric collapse stops near the target).
FACE_BUDGET_SLACK = 4
# Positions are float32: the fit and its inverse agree to a few ulps of the unit cube.
POSITION_TOLERANCE = 1e-6
NORMAL_LENGTH_TOLERANCE = 1e-5
# Vertex normals of a sphere (area-weighted over a few faces) lie within ~14 degrees of radial
# (measured: 11 degrees at 100 faces, where a vertex's fan is far from regular).
SPHERE_NORMAL_MIN_COS = 0.97
# A simplified sphere keeps its radius to within this fraction (1000 faces of 5120).
SIMPLIFIED_RADIUS_TOLERANCE = 0.03


def settings(**overrides) -> PipelineSettings:
    values = {"face_budget": FACE_BUDGET, **overrides}
    return dataclasses.replace(PipelineSettings(device="cpu"), **values)


def raw_asset(vertices: np.ndarray, faces: np.ndarray) -> RawAsset:
    """A RawAsset around a triangle mesh (the voxel field is not read by the mesh stage)."""
    return RawAsset(
        vertices=torch.tensor(np.asarray(vertices), dtype=torch.float32),
        faces=torch.tensor(np.ascontiguousarray(faces), dtype=torch.int64),
        coords=torch.zeros(1, 3, dtype=torch.int32),
        attrs=torch.full((1, 6), 0.5),
        resolution=64,
    )


def icosphere(subdivisions: int, radius: float, centre=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    sphere.apply_translation(centre)
    return sphere


def edge_use(faces: np.ndarray) -> tuple[Counter, Counter]:
    """(directed edge -> uses, undirected edge -> uses)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return Counter(map(tuple, edges.tolist())), Counter(map(tuple, np.sort(edges, 1).tolist()))


def assert_closed_and_outward(mesh: Mesh) -> None:
    faces = mesh.faces.numpy()
    directed, undirected = edge_use(faces)
    assert set(undirected.values()) == {2}, "not closed and manifold"
    assert all(n == 1 for n in directed.values()), "inconsistent winding"
    p = mesh.positions.double().numpy()[faces]
    volume = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6
    assert volume > 0


def assert_well_formed(mesh: Mesh) -> None:
    V, F = len(mesh.positions), len(mesh.faces)
    assert mesh.positions.shape == (V, 3) and mesh.positions.dtype == torch.float32
    assert mesh.faces.shape == (F, 3) and mesh.faces.dtype == torch.int64
    assert mesh.normals.shape == (V, 3) and mesh.normals.dtype == torch.float32
    faces = mesh.faces.numpy()
    assert faces.min() >= 0 and faces.max() < V
    # Every vertex is used; no face repeats a vertex or a vertex triple.
    assert np.array_equal(np.unique(faces), np.arange(V))
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    assert (faces[:, 0] != faces[:, 2]).all()
    assert len(np.unique(np.sort(faces, 1), axis=0)) == F
    lengths = torch.linalg.norm(mesh.normals, dim=1)
    torch.testing.assert_close(lengths, torch.ones(V), atol=NORMAL_LENGTH_TOLERANCE, rtol=0)


def assert_fitted(mesh: Mesh, margin: float) -> None:
    lo, hi = mesh.positions.amin(0), mesh.positions.amax(0)
    assert float((hi - lo).max()) == pytest.approx(1 - margin, abs=POSITION_TOLERANCE)
    torch.testing.assert_close((lo + hi) / 2, torch.zeros(3), atol=POSITION_TOLERANCE, rtol=0)


# --- frame ----------------------------------------------------------------------------------


def test_an_object_tall_along_asset_z_comes_out_tall_along_y() -> None:
    box = trimesh.creation.box(extents=(0.2, 0.3, 0.8))  # x, y, z in the Z-up asset frame
    box.apply_translation((0.05, -0.1, 0.02))
    mesh = process_mesh(raw_asset(box.vertices, box.faces), settings(fit_margin=0.02))
    extent = (mesh.positions.amax(0) - mesh.positions.amin(0)).numpy()
    scale = 0.98 / 0.8
    np.testing.assert_allclose(extent, np.array([0.2, 0.8, 0.3]) * scale, atol=1e-5)
    assert_fitted(mesh, 0.02)
    assert_well_formed(mesh)
    assert_closed_and_outward(mesh)


def test_a_tall_inflated_bar_stands_up_along_y() -> None:
    """The inflate generator's output of a bar tall in the image stands along the output's y."""
    mask = torch.zeros(128, 128)
    mask[8:120, 52:76] = 1.0  # tall and narrow in the image
    image = PreparedImage(torch.full((128, 128, 3), 0.5), mask, "alpha")
    asset = InflateGenerator(settings(resolution=64), torch.device("cpu")).generate(image, 0)
    mesh = process_mesh(asset, settings(face_budget=800))
    extent = (mesh.positions.amax(0) - mesh.positions.amin(0)).numpy()
    assert extent[1] == pytest.approx(0.98, abs=POSITION_TOLERANCE)
    assert extent[0] < 0.35 and extent[2] < 0.35
    assert len(mesh.faces) <= 800 + FACE_BUDGET_SLACK
    assert_well_formed(mesh)
    assert_closed_and_outward(mesh)


def test_the_camera_side_becomes_the_front_plus_z() -> None:
    """A tetrahedron with its apex towards the camera (-y in the asset): the apex is +z out."""
    vertices = np.array([[0, -0.4, 0], [-0.2, 0.1, -0.2], [0.2, 0.1, -0.2], [0, 0.1, 0.25]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    mesh = process_mesh(raw_asset(vertices, faces), settings(fit_margin=0.0))
    apex = int(torch.argmax(mesh.positions[:, 2]))
    back = mesh.frame.to_asset(mesh.positions[apex : apex + 1])[0]
    torch.testing.assert_close(back, torch.tensor([0, -0.4, 0.0]), atol=1e-6, rtol=0)
    # Asset z (up) is output y: the top vertex (z = 0.25) is the highest.
    top = int(torch.argmax(mesh.positions[:, 1]))
    torch.testing.assert_close(
        mesh.frame.to_asset(mesh.positions[top : top + 1])[0],
        torch.tensor([0.0, 0.1, 0.25]),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("margin", [0.0, 0.02, 0.3])
def test_fit_frame_fits_and_to_asset_inverts_it(margin: float) -> None:
    rng = np.random.default_rng(1)
    positions_zup = torch.from_numpy(rng.uniform(-0.5, 0.3, (777, 3))).float()
    positions_zup[:, 2] *= 0.4  # the largest side is not the up axis
    fitted, frame = fit_frame(positions_zup, margin)
    assert fitted.dtype == torch.float32 and fitted.shape == positions_zup.shape
    extent = fitted.amax(0) - fitted.amin(0)
    assert float(extent.max()) == pytest.approx(1 - margin, abs=POSITION_TOLERANCE)
    torch.testing.assert_close(
        (fitted.amax(0) + fitted.amin(0)) / 2, torch.zeros(3), atol=POSITION_TOLERANCE, rtol=0
    )
    # glTF (x, y, z) = asset (x, z, -y), up to the fit's scale.
    asset_extent = positions_zup.amax(0) - positions_zup.amin(0)
    torch.testing.assert_close(
        extent / frame.scale, asset_extent[[0, 2, 1]], atol=POSITION_TOLERANCE, rtol=1e-5
    )
    torch.testing.assert_close(frame.to_asset(fitted), positions_zup, atol=1e-6, rtol=0)
    # to_asset keeps leading dimensions and dtype.
    batch = frame.to_asset(fitted.double().reshape(7, 111, 3))
    assert batch.shape == (7, 111, 3) and batch.dtype == torch.float64


def test_fit_frame_of_a_single_point_does_not_divide_by_zero() -> None:
    fitted, frame = fit_frame(torch.tensor([[0.1, 0.2, 0.3]]), 0.02)
    assert torch.isfinite(fitted).all() and np.isfinite(frame.scale)
    torch.testing.assert_close(frame.to_asset(fitted), torch.tensor([[0.1, 0.2, 0.3]]))


def test_frame_to_asset_maps_the_output_onto_the_asset_vertices() -> None:
    sphere = icosphere(3, 0.3, centre=(0.1, -0.05, 0.12))  # 1280 faces
    asset = raw_asset(sphere.vertices, sphere.faces)
    mesh = process_mesh(asset, settings(face_budget=5000))  # under budget: not simplified
    back = mesh.frame.to_asset(mesh.positions)
    # Every output vertex is an asset vertex, and every asset vertex is used.
    distance = torch.cdist(back.double(), asset.vertices.double()).amin(1)
    assert float(distance.max()) <= 1e-6
    assert len(mesh.positions) == len(asset.vertices)
    torch.testing.assert_close(back.amin(0), asset.vertices.amin(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(back.amax(0), asset.vertices.amax(0), atol=1e-6, rtol=0)


# --- budget, winding, normals -------------------------------------------------------------------


@pytest.mark.parametrize("budget", [100, 137, 1000])
def test_a_sphere_is_simplified_to_the_budget_closed_and_outward(budget: int) -> None:
    sphere = icosphere(4, 0.4)  # 5120 faces
    mesh = process_mesh(raw_asset(sphere.vertices, sphere.faces), settings(face_budget=budget))
    assert len(mesh.faces) <= budget + FACE_BUDGET_SLACK
    assert len(mesh.faces) >= budget // 2
    assert mesh.stats == {"faces_in": 5120.0, "faces_out": float(len(mesh.faces))}
    assert_well_formed(mesh)
    assert_closed_and_outward(mesh)
    assert_fitted(mesh, settings().fit_margin)
    radial = mesh.positions / torch.linalg.norm(mesh.positions, dim=1, keepdim=True)
    assert float((mesh.normals * radial).sum(1).min()) >= SPHERE_NORMAL_MIN_COS
    radius = torch.linalg.norm(mesh.positions, dim=1)
    fitted_radius = (1 - settings().fit_margin) / 2
    assert float((radius / fitted_radius - 1).abs().max()) <= SIMPLIFIED_RADIUS_TOLERANCE


def test_an_inside_out_asset_comes_out_outward() -> None:
    sphere = icosphere(2, 0.35)
    mesh = process_mesh(raw_asset(sphere.vertices, sphere.faces[:, ::-1]), settings())
    assert_closed_and_outward(mesh)
    radial = mesh.positions / torch.linalg.norm(mesh.positions, dim=1, keepdim=True)
    assert float((mesh.normals * radial).sum(1).min()) >= SPHERE_NORMAL_MIN_COS


def test_a_messy_soup_gives_a_clean_consistent_mesh() -> None:
    """An unwelded soup of a sphere's faces, half of them flipped, plus exact and reversed
    duplicates, faces with a repeated vertex and zero-area faces."""
    rng = np.random.default_rng(7)
    sphere = icosphere(2, 0.4)  # 320 faces, 162 vertices
    faces = np.asarray(sphere.faces)
    flipped = rng.random(len(faces)) < 0.5
    faces = np.where(flipped[:, None], faces[:, ::-1], faces)
    soup_vertices = np.asarray(sphere.vertices)[faces].reshape(-1, 3)  # 3 vertices per face
    soup_faces = np.arange(3 * len(faces)).reshape(-1, 3)
    duplicates = soup_faces[rng.choice(len(faces), 40, replace=False)]
    reversed_duplicates = soup_faces[rng.choice(len(faces), 40, replace=False)][:, ::-1]
    repeated_vertex = np.stack([soup_faces[:20, 0], soup_faces[:20, 0], soup_faces[:20, 1]], 1)
    # Zero area: three new vertices exactly collinear in float32.
    line = np.array([[0.125, 0.0, 0.0], [0.25, 0.0, 0.0], [0.375, 0.0, 0.0]])
    collinear = np.array([[0, 1, 2]]) + len(soup_vertices)
    all_vertices = np.concatenate([soup_vertices, line])
    all_faces = np.concatenate(
        [soup_faces, duplicates, reversed_duplicates, repeated_vertex, collinear]
    )
    order = rng.permutation(len(all_faces))
    mesh = process_mesh(raw_asset(all_vertices, all_faces[order]), settings())
    assert len(mesh.faces) == 320 and len(mesh.positions) == 162
    assert_well_formed(mesh)
    assert_closed_and_outward(mesh)
    assert_fitted(mesh, settings().fit_margin)


def test_separate_pieces_are_each_turned_outward() -> None:
    """Two spheres side by side, one inside out, one nested inside the other's bounds."""
    outer = icosphere(2, 0.2, centre=(-0.25, 0.0, 0.0))
    other = icosphere(1, 0.1, centre=(0.25, 0.05, 0.1))
    vertices = np.concatenate([outer.vertices, other.vertices])
    faces = np.concatenate([outer.faces, other.faces[:, ::-1] + len(outer.vertices)])
    mesh = process_mesh(raw_asset(vertices, faces), settings())
    assert_well_formed(mesh)
    faces_out = mesh.faces.numpy()
    p = mesh.positions.double().numpy()
    # Label the pieces by which side of x = 0 they sit, and check each one's volume.
    for piece in (p[faces_out[:, 0], 0] < 0, p[faces_out[:, 0], 0] > 0):
        q = p[faces_out[piece]]
        assert np.einsum("ij,ij->i", q[:, 0], np.cross(q[:, 1], q[:, 2])).sum() > 0
    assert_closed_and_outward(mesh)


def test_an_asset_with_no_valid_face_is_refused() -> None:
    vertices = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]])
    with pytest.raises(ValueError, match="no valid face"):
        process_mesh(raw_asset(vertices, np.array([[0, 1, 2], [0, 0, 1]])), settings())


def test_the_frame_is_a_frame() -> None:
    sphere = icosphere(1, 0.3)
    mesh = process_mesh(raw_asset(sphere.vertices, sphere.faces), settings())
    assert isinstance(mesh.frame, Frame)
    assert mesh.frame.scale == pytest.approx(0.98 / 0.6, rel=1e-3)


@pytest.mark.parametrize(
    ("face_budget", "device_type", "expected"),
    [
        (0, "cpu", CPU_FACE_BUDGET),
        (0, "cuda", CUDA_FACE_BUDGET),
        (1234, "cpu", 1234),
        (1234, "cuda", 1234),
    ],
)
def test_a_zero_face_budget_is_the_device_default(face_budget, device_type, expected) -> None:
    settings_ = dataclasses.replace(PipelineSettings(), face_budget=face_budget)
    assert settings_.faces_kept(device_type) == expected


def test_process_mesh_simplifies_to_the_budget_its_device_keeps(monkeypatch) -> None:
    """FACE_BUDGET=0 on the CPU: the mesh stage asks simplification for CPU_FACE_BUDGET."""
    import pipeline.mesh as mesh_module

    asked: list[int] = []
    real = mesh_module.simplify

    def spy(positions, faces, budget, method="auto"):
        asked.append(budget)
        return real(positions, faces, budget, method)

    monkeypatch.setattr(mesh_module, "simplify", spy)
    sphere = icosphere(3, 0.4)
    process_mesh(raw_asset(sphere.vertices, sphere.faces), settings(face_budget=0))
    process_mesh(raw_asset(sphere.vertices, sphere.faces), settings(face_budget=300))
    assert asked == [CPU_FACE_BUDGET, 300]


@pytest.mark.parametrize("face_budget", [-1, 1, 99])
def test_a_face_budget_under_100_other_than_0_is_refused(face_budget) -> None:
    with pytest.raises(ValueError, match="face_budget"):
        PipelineSettings(face_budget=face_budget)
