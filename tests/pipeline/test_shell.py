"""extract_shell: sparse surface nets of the two-sided height field |y - c| < H(x, z).

Checked independently of the module: closure and winding from directed-edge counts (every
directed edge is walked exactly as often as its reverse: closed and consistently wound, pinches
included), outwardness from the signed volume and from stepping off each face along its normal
into the implicit solid (H bilinear between the nodes), and the mirror symmetry about y = c.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from pipeline.generators.shell import extract_shell

# A face's step along its unit normal, in nodes, that must leave the solid (and the opposite
# step enter it): surface nets stays within a fraction of a node of the iso-surface on a
# smooth field, so half a node is well clear of it.
NORMAL_STEP_NODES = 0.5
# A vertex of a sphere's shell lies within this many nodes of the sphere (bilinear H between
# the nodes is steep at the rim; measured 0.31 at radius 10).
SPHERE_SURFACE_NODES = 0.5
# Face normals of a sphere's shell stay within ~37 degrees of the radial direction (measured:
# within 25 degrees at radius 10 on a 32 grid).
SPHERE_MIN_COS = 0.8
# The enclosed volume matches the integral of the two-sided height 2 max(H, 0) within this
# fraction (surface nets rounds the rim; measured < 3 % on the sphere below).
VOLUME_RELATIVE_TOLERANCE = 0.06


def sphere_heights(R: int, radius: float, centre: tuple[float, float]) -> torch.Tensor:
    """[R + 1, R + 1] float32 heights of a sphere of `radius` nodes centred on the mid-plane;
    outside the disc, minus the distance to it."""
    i, k = np.meshgrid(np.arange(R + 1), np.arange(R + 1), indexing="ij")
    rho = np.hypot(i - centre[0], k - centre[1])
    heights = np.where(rho < radius, np.sqrt(np.maximum(radius**2 - rho**2, 0)), radius - rho)
    return torch.from_numpy(heights).float()


def random_heights(R: int, seed: int, integer: bool = False) -> torch.Tensor:
    """Smoothed seeded noise as a height field that keeps clear of the grid's faces: several
    blobs, saddles and thin necks (which make pinched edges)."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(0, 1, (R + 1, R + 1)), 1.5) * R / 4
    if integer:  # heights exactly on node layers: every sign test ties somewhere
        field = np.round(field)
    field[0, :] = field[-1, :] = field[:, 0] = field[:, -1] = -1.0
    return torch.from_numpy(np.minimum(field, R / 2 - 2)).float()


def edges_of(faces: np.ndarray) -> np.ndarray:
    """[3F, 2] the directed edges of the faces, (a, b), (b, c), (c, a) of each."""
    return faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)


def directed_edge_imbalance(faces: np.ndarray) -> int:
    """Directed edges walked a different number of times than their reverse (0: closed and
    consistently wound, also at edges shared by four faces)."""
    directed = Counter(map(tuple, edges_of(faces).tolist()))
    return sum(1 for (a, b), n in directed.items() if directed.get((b, a), 0) != n)


def signed_volume(positions: np.ndarray, faces: np.ndarray) -> float:
    p = positions.astype(np.float64)[faces]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6)


def unit_face_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = positions.astype(np.float64)[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def inside_solid(heights: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[P] bool: |y - c| < H(x, z), H bilinear between the nodes (node units)."""
    R = heights.shape[0] - 1
    x = np.clip(points[:, 0], 0, R - 1e-9)
    z = np.clip(points[:, 2], 0, R - 1e-9)
    i, k = np.floor(x).astype(int), np.floor(z).astype(int)
    tx, tz = x - i, z - k
    h = (
        heights[i, k] * (1 - tx) * (1 - tz)
        + heights[i + 1, k] * tx * (1 - tz)
        + heights[i, k + 1] * (1 - tx) * tz
        + heights[i + 1, k + 1] * tx * tz
    )
    return np.abs(points[:, 1] - R / 2) < h


def canonical(face: tuple[int, ...]) -> tuple[int, int, int]:
    """The face rotated to start at its lowest index, winding kept."""
    k = face.index(min(face))
    return (face[k], face[(k + 1) % 3], face[(k + 2) % 3])


def canonical_faces(faces: np.ndarray) -> set[tuple[int, int, int]]:
    return {canonical(tuple(face)) for face in faces.tolist()}


def flip_tied_diagonals(
    faces: set[tuple[int, int, int]], positions: np.ndarray
) -> set[tuple[int, int, int]]:
    """Pair the faces across a shared edge whose quad has equally long diagonals, and replace
    each pair by the quad cut along its other diagonal (every face must find its pair)."""
    by_edge = {}
    for face in faces:
        for k in range(3):
            by_edge[(face[k], face[(k + 1) % 3])] = face
    flipped: set[tuple[int, int, int]] = set()
    for face in faces:
        for k in range(3):
            a, b, w = face[k], face[(k + 1) % 3], face[(k + 2) % 3]
            partner = by_edge.get((b, a))
            if partner is None:
                continue
            x = next(v for v in partner if v not in (a, b))
            ab = np.linalg.norm(positions[a] - positions[b])
            wx = np.linalg.norm(positions[w] - positions[x])
            if ab == pytest.approx(wx, rel=1e-6):
                flipped |= {canonical((a, x, w)), canonical((x, b, w))}
                break
        else:
            raise AssertionError(f"face {face} differs from its mirror image, and not by a tie")
    return flipped


# --- closure and winding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("R", "seed", "integer"),
    [
        (4, 0, False),
        (16, 1, False),
        (18, 2, False),
        (34, 3, False),
        (64, 4, False),
        (32, 5, True),
        (64, 6, True),
    ],
)
def test_random_fields_give_closed_consistently_wound_outward_shells(
    R: int, seed: int, integer: bool
) -> None:
    heights = random_heights(R, seed, integer)
    shell = extract_shell(heights)
    faces = shell.faces.numpy()
    positions = shell.vertices.numpy()
    # R = 4 leaves no room: the heights clamp to R / 2 - 2 = 0, and nothing is inside.
    assert (len(faces) == 0) == (R == 4)
    assert shell.faces.dtype == torch.int64 and shell.vertices.dtype == torch.float32
    assert faces.min(initial=0) >= 0 and faces.max(initial=-1) < len(positions)
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    assert (faces[:, 0] != faces[:, 2]).all()
    assert directed_edge_imbalance(faces) == 0
    # Each undirected edge is used by an even number of faces: 2, or 4 at a pinch.
    undirected = Counter(map(tuple, np.sort(edges_of(faces), axis=1).tolist()))
    assert set(undirected.values()) <= {2, 4}
    if len(faces):
        assert signed_volume(positions, faces) > 0


def test_all_outside_gives_an_empty_shell() -> None:
    shell = extract_shell(torch.full((17, 17), -1.0))
    assert shell.vertices.shape == (0, 3) and shell.faces.shape == (0, 3)
    assert shell.cells.shape == (0, 3)


def test_sphere_faces_point_away_from_the_solid() -> None:
    R, radius, centre = 32, 10.3, (15.6, 16.2)
    heights = sphere_heights(R, radius, centre)
    shell = extract_shell(heights)
    positions = shell.vertices.numpy().astype(np.float64)
    faces = shell.faces.numpy()
    normals = unit_face_normals(positions, faces)
    centroids = positions[faces].mean(1)
    h = heights.numpy().astype(np.float64)
    assert not inside_solid(h, centroids + NORMAL_STEP_NODES * normals).any()
    assert inside_solid(h, centroids - NORMAL_STEP_NODES * normals).all()
    radial = centroids - np.array([centre[0], R / 2, centre[1]])
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals, radial).min() >= SPHERE_MIN_COS
    distance = np.linalg.norm(positions - np.array([centre[0], R / 2, centre[1]]), axis=1)
    assert np.abs(distance - radius).max() <= SPHERE_SURFACE_NODES
    expected = 4 / 3 * np.pi * radius**3
    assert signed_volume(positions, faces) == pytest.approx(expected, rel=VOLUME_RELATIVE_TOLERANCE)


# --- vertices and cells -----------------------------------------------------------------------


@pytest.mark.parametrize(("R", "seed"), [(16, 7), (34, 8), (64, 9)])
def test_one_vertex_per_unique_cell_inside_its_box(R: int, seed: int) -> None:
    shell = extract_shell(random_heights(R, seed))
    cells = shell.cells.numpy()
    positions = shell.vertices.numpy()
    assert len(positions) == len(cells) > 0
    assert shell.cells.dtype == torch.int64
    assert (cells >= 0).all() and (cells < R).all()
    assert len(np.unique(cells, axis=0)) == len(cells)
    assert ((positions >= cells) & (positions <= cells + 1)).all()
    # Every vertex is used by some face (no stray active cells).
    assert np.array_equal(np.unique(shell.faces.numpy()), np.arange(len(positions)))


@pytest.mark.parametrize(("R", "seed"), [(16, 10), (64, 11)])
def test_shell_is_mirror_symmetric_about_the_mid_plane(R: int, seed: int) -> None:
    shell = extract_shell(random_heights(R, seed))
    c = R // 2
    cells = shell.cells.numpy()
    positions = shell.vertices.numpy().astype(np.float64)
    index_of_cell = {tuple(cell): n for n, cell in enumerate(cells.tolist())}
    mirror = np.array([index_of_cell[(i, 2 * c - 1 - j, k)] for i, j, k in cells.tolist()])
    expected = positions * [1, -1, 1] + [0, 2 * c, 0]
    np.testing.assert_array_equal(positions[mirror], expected)
    # The mirrored faces, wound the other way (a reflection turns orientation), are the faces,
    # up to the diagonal that splits a quad whose two diagonals are equally long (a rectangle,
    # or a quad across the mid-plane, which is its own mirror image): there the tie is broken
    # by the quad's corner order, which the mirror reverses.
    faces = shell.faces.numpy()
    mirrored = canonical_faces(mirror[faces][:, ::-1])
    original = canonical_faces(faces)
    assert len(mirrored) == len(original) == len(faces)
    only_mirrored, only_original = mirrored - original, original - mirrored
    assert flip_tied_diagonals(only_mirrored, positions) == only_original


def test_rejects_odd_or_non_square_heights() -> None:
    with pytest.raises(ValueError, match="R even"):
        extract_shell(torch.full((16, 16), -1.0))  # R = 15
    with pytest.raises(ValueError, match=r"\[R \+ 1, R \+ 1\]"):
        extract_shell(torch.full((17, 19), -1.0))
