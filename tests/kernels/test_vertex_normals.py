"""vertex_normals (torch segment sums, any device) against vertex_normals_reference (numpy
np.add.at), plus meshes whose normals can be written by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from kernels.vertex_normals import vertex_normals, vertex_normals_reference

# Kernel vs reference: both sum in float64 and round once to float32, so they differ by at most
# an ulp or two of a unit vector.
NORMAL_ATOL = 1e-6
# Hand-computed unit normals (float32 output against float64 arithmetic).
KNOWN_ATOL = 1e-6
# |n| - 1 for a float32 unit vector.
UNIT_LENGTH_ATOL = 1e-6

# (vertices, faces): empty, one vertex and no face, one face, odd sizes, and a "large" soup.
RANDOM_CASES = [(0, 0), (1, 0), (3, 1), (4, 3), (50, 97), (2_000, 3_999), (20_000, 40_001)]

PLUS_Z = np.array([0.0, 0.0, 1.0], np.float32)


def random_mesh(seed: int, vertex_count: int, face_count: int) -> tuple[np.ndarray, np.ndarray]:
    """positions [V, 3] float32, faces [F, 3] int64 with three distinct vertices each and no two
    faces on the same vertex set (cancelling pairs have their own test)."""
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(vertex_count, 3)).astype(np.float32)
    if face_count == 0:
        return positions, np.zeros((0, 3), np.int64)
    # Oversample, then keep the first `face_count` rows with distinct corners and vertex sets.
    faces = rng.integers(0, vertex_count, (4 * face_count + 8, 3))
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    ]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)][:face_count]
    assert len(faces) == face_count
    return positions, faces


def regular_tetrahedron() -> tuple[np.ndarray, np.ndarray]:
    """Corners of a cube's alternate vertices, faces wound outward."""
    positions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    corners = positions[faces].astype(np.float64)
    signed = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2]))
    assert (signed > 0).all()  # the builder's own check: every face outward
    return positions, faces


@pytest.mark.parametrize(("vertex_count", "face_count"), RANDOM_CASES)
def test_matches_reference_on_random_meshes(
    device: str, vertex_count: int, face_count: int
) -> None:
    positions, faces = random_mesh(vertex_count + face_count, vertex_count, face_count)
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    assert normals.dtype == torch.float32 and normals.shape == (vertex_count, 3)
    expected = vertex_normals_reference(positions, faces)
    np.testing.assert_allclose(normals.cpu().numpy(), expected, rtol=0, atol=NORMAL_ATOL)


def test_matches_reference_on_an_icosphere(device: str) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=4)
    positions = mesh.vertices.astype(np.float32)
    faces = mesh.faces.astype(np.int64)
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    np.testing.assert_allclose(
        normals.cpu().numpy(), vertex_normals_reference(positions, faces), rtol=0, atol=NORMAL_ATOL
    )
    # On a sphere about the origin the smooth normal is the radial direction, to within the
    # faceting of a 4-times subdivided icosahedron.
    radial = positions / np.linalg.norm(positions, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals.cpu().numpy(), radial).min() > 0.999


def test_unit_length_and_plus_z_for_untouched_vertices(device: str) -> None:
    positions, faces = random_mesh(7, 500, 300)  # 300 faces over 500 vertices: many untouched
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    normals = normals.cpu().numpy()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=0, atol=UNIT_LENGTH_ATOL)
    untouched = np.setdiff1d(np.arange(500), faces)
    assert len(untouched) > 0
    assert np.array_equal(normals[untouched], np.broadcast_to(PLUS_Z, (len(untouched), 3)))


def test_tetrahedron_normals_point_at_the_corners(device: str) -> None:
    positions, faces = regular_tetrahedron()
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    # Three equal faces meet at each corner: their sum points straight out through it.
    expected = positions / np.sqrt(3)
    np.testing.assert_allclose(normals.cpu().numpy(), expected, rtol=0, atol=KNOWN_ATOL)


def test_strip_with_one_flipped_triangle(device: str) -> None:
    # A planar strip in z = 0 of four triangles, all counter-clockwise seen from +Z except the
    # last. Doubled areas (the weights): f0 1, f1 1, f2 1, f3 3 (flipped, so -3 at its corners).
    #   3 ---- 4 -------------- 5        row y = 1: x = 0, 1, 4
    #   0 ---- 1 ---- 2                  row y = 0: x = 0, 1, 2
    positions = np.array(
        [[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 0], [4, 1, 0]], np.float32
    )
    faces = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 4, 5]])  # f3 should be (1, 5, 4)
    # Sums of signed doubled areas per vertex: 0: 1+1, 1: 1+1-3, 2: 1, 3: 1, 4: 1+1-3, 5: 1-3.
    expected = np.array([[0, 0, s] for s in (1, -1, 1, 1, -1, -1)], np.float32)
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    assert np.array_equal(normals.cpu().numpy(), expected)
    assert np.array_equal(vertex_normals_reference(positions, faces), expected)


def test_degenerate_faces_add_nothing(device: str) -> None:
    # A real face plus a face with a repeated index and a zero-area (collinear) face on the same
    # vertices: the normals are those of the real face; vertex 3 only sees nothing-faces: +Z.
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    faces = np.array([[0, 2, 1], [0, 0, 1], [0, 1, 3]])
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    expected = np.array([[0, 0, -1], [0, 0, -1], [0, 0, -1], [0, 0, 1]], np.float32)
    assert np.array_equal(normals.cpu().numpy(), expected)


def test_cancelling_faces_give_plus_z_like_the_reference(device: str) -> None:
    # One ordinary face on vertices 0-2, then a face and its reverse on vertices 3-5.
    positions = np.array(
        [
            [0.2, -0.5, -0.4],
            [-2.4, 1.8, 1.1],
            [-0.3, 0.8, 0.3],
            [-0.6, 1.0, -0.3],
            [-0.3, -0.8, 0.5],
            [-0.1, 0.5, -0.6],
        ],
        np.float32,
    )
    faces = np.array([[0, 1, 2], [3, 4, 5], [3, 5, 4]])
    expected = vertex_normals_reference(positions, faces)
    assert np.array_equal(expected[3:], np.broadcast_to(PLUS_Z, (3, 3)))
    normals = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    # Regression: sums once taken as differences of one running sum over all corners left
    # vertex 3 the rounding residue of vertices 0-2, normalised to [0, 0, -1].
    np.testing.assert_allclose(normals.cpu().numpy(), expected, rtol=0, atol=NORMAL_ATOL)


def test_accepts_int32_faces_and_float64_positions(device: str) -> None:
    positions, faces = random_mesh(3, 200, 301)
    expected = vertex_normals(
        torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    )
    normals = vertex_normals(
        torch.from_numpy(positions.astype(np.float64)).to(device),
        torch.from_numpy(faces.astype(np.int32)).to(device),
    )
    assert normals.dtype == torch.float32
    np.testing.assert_allclose(
        normals.cpu().numpy(), expected.cpu().numpy(), rtol=0, atol=NORMAL_ATOL
    )


def test_is_deterministic(device: str) -> None:
    positions, faces = random_mesh(5, 5_000, 9_999)
    args = torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
    assert torch.equal(vertex_normals(*args), vertex_normals(*args))


@pytest.mark.parametrize(
    ("positions_shape", "faces_shape", "expected"),
    [
        ((4, 2), (1, 3), r"\[V, 3\]"),
        ((4,), (1, 3), r"\[V, 3\]"),
        ((4, 3), (1, 4), r"\[F, 3\]"),
        ((4, 3), (3,), r"\[F, 3\]"),
    ],
)
def test_rejects_bad_shapes(
    positions_shape: tuple[int, ...], faces_shape: tuple[int, ...], expected: str
) -> None:
    positions, faces = torch.zeros(positions_shape), torch.zeros(faces_shape, dtype=torch.long)
    with pytest.raises(ValueError, match=expected):
        vertex_normals(positions, faces)
    with pytest.raises(ValueError, match=expected):
        vertex_normals_reference(positions.numpy(), faces.numpy())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rejects_tensors_on_different_devices() -> None:
    with pytest.raises(ValueError, match="same device"):
        vertex_normals(torch.zeros(3, 3, device="cuda"), torch.zeros(1, 3, dtype=torch.long))
