"""clean_faces, manifold_pairs, face_components and orient_outward on hand-built meshes with
known answers and on icospheres with random faces flipped.

Winding is checked independently of the module: on every edge used by exactly two faces, the
two must walk it in opposite directions.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import trimesh

import pipeline.topology as topology
from pipeline.topology import (
    MIN_DOUBLE_AREA,
    clean_faces,
    face_components,
    manifold_pairs,
    orient_outward,
)


def icosphere(subdivisions: int = 2, centre: tuple = (0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    return mesh.vertices + np.asarray(centre, np.float64), mesh.faces.astype(np.int64)


def tetrahedron() -> tuple[np.ndarray, np.ndarray]:
    positions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float64)
    return positions, np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])


def signed_volume(positions: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed, positive when the faces wind counter-clockwise seen from outside."""
    p = positions[faces].astype(np.float64)
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6)


def directed_edges(faces: np.ndarray) -> list[tuple[int, int]]:
    return [(int(f[k]), int(f[(k + 1) % 3])) for f in faces for k in range(3)]


def inconsistent_edges(faces: np.ndarray) -> list[tuple[int, int]]:
    """Edges used by exactly two faces that both walk them the same way."""
    undirected = Counter(tuple(sorted(e)) for e in directed_edges(faces))
    directed = Counter(directed_edges(faces))
    return [e for e, n in undirected.items() if n == 2 and (directed[e] != 1)]


def assert_rewound_rows(out: np.ndarray, faces: np.ndarray) -> None:
    """Row i of out is row i of faces, cyclically rotated and possibly reversed."""
    assert out.shape == faces.shape and out.dtype == faces.dtype
    for got, face in zip(out.tolist(), faces.tolist(), strict=True):
        windings = [face[k:] + face[:k] for k in range(3)]
        windings += [w[::-1] for w in windings]
        assert got in windings, (got, face)


def flip_some(faces: np.ndarray, seed: int, fraction: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(faces)) < fraction
    return np.where(flipped[:, None], faces[:, ::-1], faces)


# --- clean_faces ----------------------------------------------------------------------------


def test_clean_faces_drops_degenerate_and_repeated_faces_keeping_first_in_order() -> None:
    positions = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [2, 0, 0], [0, 0, 0]], np.float64
    )
    faces = np.array(
        [
            [0, 1, 2],  # kept
            [1, 1, 2],  # repeated index
            [2, 1, 3],  # kept
            [1, 2, 0],  # a rotation of face 0
            [0, 1, 4],  # zero area: 0, 1, 4 collinear
            [5, 1, 2],  # kept: vertex 5 sits on vertex 0, but it is a real triangle
            [2, 0, 1],  # another rotation of face 0
            [3, 1, 2],  # face 2 reversed (a permutation)
            [0, 5, 1],  # zero area: 0 and 5 coincide
            [3, 3, 3],  # all repeated
            [0, 2, 1],  # face 0 reversed
            [4, 3, 1],  # kept
        ],
        dtype=np.int32,
    )
    out = clean_faces(positions, faces)
    assert out.dtype == np.int32
    assert out.tolist() == [[0, 1, 2], [2, 1, 3], [5, 1, 2], [4, 3, 1]]


def test_clean_faces_keeps_tiny_real_faces_and_empty_input() -> None:
    # A right triangle 1/4096 of a unit on a side: doubled area 6e-8, far above the threshold.
    side = 1 / 4096
    positions = np.array([[0, 0, 0], [side, 0, 0], [0, side, 0], [0, 0, 1e-9]])
    assert side * side > 1e4 * MIN_DOUBLE_AREA
    assert clean_faces(positions, np.array([[0, 1, 2]])).tolist() == [[0, 1, 2]]
    # Doubled area 1e-9 * 1e-9: below it.
    positions[1] = [1e-9, 0, 0]
    assert clean_faces(positions, np.array([[0, 1, 3]])).shape == (0, 3)
    assert clean_faces(positions, np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_clean_faces_matches_a_plain_loop_on_random_soups() -> None:
    rng = np.random.default_rng(0)
    positions = np.round(rng.uniform(size=(12, 3)), 1)  # coarse: some coincide or line up
    faces = rng.integers(0, 12, (3000, 3))
    out = clean_faces(positions, faces)
    expected, seen = [], set()
    for face in faces.tolist():
        a, b, c = (positions[i] for i in face)
        if len(set(face)) < 3 or np.linalg.norm(np.cross(b - a, c - a)) <= MIN_DOUBLE_AREA:
            continue
        if frozenset(face) not in seen:
            seen.add(frozenset(face))
            expected.append(face)
    assert out.tolist() == expected
    assert 0 < len(expected) < len(faces)


@pytest.mark.parametrize("largest", [5, 40_000, 2**40])
def test_rows_are_ordered_as_lexsort_orders_them(
    largest: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stable sort of packed rows where they fit in an int64, lexsort where not: the
    same order either way (first column first, ties by index)."""
    rng = np.random.default_rng(largest)
    for columns in (2, 3):
        keys = rng.integers(0, largest, (5000, columns))
        keys[::7] = keys[3]  # many equal rows: ties keep index order
        expected = np.lexsort(keys.T[::-1])
        packs = largest**columns < 1 << 62
        if packs:  # the packed path must not fall back
            monkeypatch.setattr(topology.np, "lexsort", None)
        assert np.array_equal(topology._stable_order(keys), expected)
        monkeypatch.undo()


# --- manifold_pairs and face_components -------------------------------------------------------


def test_manifold_pairs_on_a_tetrahedron() -> None:
    _, faces = tetrahedron()
    a, b, flip = manifold_pairs(faces)
    assert len(a) == 6 and not flip.any()
    assert sorted(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), strict=True)) == [
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3),
    ]  # fmt: skip
    # Reverse face 3: exactly its three edges now disagree.
    faces[3] = faces[3][::-1].copy()
    a, b, flip = manifold_pairs(faces)
    assert sorted(np.maximum(a, b)[flip].tolist()) == [3, 3, 3]
    assert flip.sum() == 3


def test_manifold_pairs_skip_open_and_non_manifold_edges() -> None:
    # Three fins on edge (0, 1), plus face 3 sharing edge (1, 2) with fin 0 only.
    faces = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5]])
    a, b, flip = manifold_pairs(faces)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) in ([(0, 3)], [(3, 0)])
    assert flip.tolist() == [False]
    assert face_components(faces).tolist() == [0, 1, 2, 0]


def test_face_components_split_disjoint_pieces() -> None:
    _, faces = tetrahedron()
    two = np.concatenate((faces, faces + 4, [[8, 9, 10]]))
    labels = face_components(two)
    assert labels.dtype == np.int64 and labels.shape == (9,)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2]


# --- orient_outward -------------------------------------------------------------------------


def test_inward_tetrahedron_comes_back_reversed() -> None:
    positions, faces = tetrahedron()
    out = orient_outward(positions, faces[:, ::-1].copy())
    assert signed_volume(positions, out) > 0 and not inconsistent_edges(out)
    assert_rewound_rows(out, faces)


@pytest.mark.parametrize(("subdivisions", "seed"), [(0, 0), (1, 1), (2, 2), (4, 3)])
def test_sphere_with_random_faces_flipped_comes_back_outward(subdivisions: int, seed: int) -> None:
    positions, faces = icosphere(subdivisions)
    rng = np.random.default_rng(seed)
    scrambled = flip_some(faces, seed)[rng.permutation(len(faces))]
    out = orient_outward(positions, scrambled)
    assert_rewound_rows(out, scrambled)
    assert not inconsistent_edges(out)
    assert signed_volume(positions, out) == pytest.approx(signed_volume(positions, faces))
    assert signed_volume(positions, faces) > 0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_consistent_spheres_only_turn_when_inside_out(fraction: float) -> None:
    positions, faces = icosphere(2)
    out = orient_outward(positions, flip_some(faces, 0, fraction))
    # Every row wound as the original outward sphere (up to where its cycle starts).
    for got, face in zip(out.tolist(), faces.tolist(), strict=True):
        assert got in [face[k:] + face[:k] for k in range(3)]


def test_cube_with_flipped_faces_comes_back_outward() -> None:
    box = trimesh.creation.box()
    scrambled = flip_some(box.faces.astype(np.int64), 4, 0.4)
    out = orient_outward(box.vertices, scrambled)
    assert not inconsistent_edges(out)
    assert signed_volume(box.vertices, out) == pytest.approx(1.0)


def test_two_disjoint_spheres_one_inside_out_both_come_back_outward() -> None:
    left_positions, left = icosphere(2, (-2, 0, 0))
    right_positions, right = icosphere(1, (2, 0.5, 0))
    positions = np.concatenate((left_positions, right_positions))
    right = right[:, ::-1] + len(left_positions)  # inside out
    faces = np.concatenate((flip_some(left, 5, 0.3), right))
    out = orient_outward(positions, faces)
    assert_rewound_rows(out, faces)
    assert not inconsistent_edges(out)
    assert signed_volume(positions, out[: len(left)]) > 0
    assert signed_volume(positions, out[len(left) :]) > 0


def test_non_manifold_edge_and_open_strip_keep_shape_and_consistent_winding() -> None:
    # Three fins on edge (0, 1) (non-manifold), and an open strip 4..9 with its third face
    # flipped; the strip's interior edges are manifold and must come back consistent.
    positions = np.array(
        [[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0.2], [0.5, 0, 1],
         [0, 0, 3], [1, 0, 3], [0, 1, 3], [1, 1, 3], [0, 2, 3], [1, 2, 3]],
        np.float64,
    )  # fmt: skip
    faces = np.array(
        [[0, 1, 2], [1, 0, 3], [0, 1, 4],
         [5, 6, 8], [5, 8, 7], [8, 7, 9], [8, 10, 9]],
        dtype=np.int32,
    )  # fmt: skip
    assert len(inconsistent_edges(faces)) == 2  # the flipped face's two interior edges
    out = orient_outward(positions, faces)
    assert_rewound_rows(out, faces)
    assert not inconsistent_edges(out)
    # The strip is one piece: its four faces end up all turned the same way.
    normals = np.cross(
        positions[out[3:, 1]] - positions[out[3:, 0]], positions[out[3:, 2]] - positions[out[3:, 0]]
    )
    assert len({np.sign(n[2]) for n in normals}) == 1


def test_empty_faces_come_back_empty() -> None:
    positions, _ = tetrahedron()
    assert orient_outward(positions, np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_orient_outward_is_deterministic() -> None:
    positions, faces = icosphere(3)
    scrambled = flip_some(faces, 9)
    assert np.array_equal(
        orient_outward(positions, scrambled), orient_outward(positions, scrambled)
    )


def test_a_face_and_its_reverse_stay_consistent() -> None:
    # A closed two-face "pillow": each of its three edges is walked both ways already.
    # Regression: the face graph once summed the three shared edges' "agree" weights into one
    # "disagree" entry and returned [[0, 1, 2], [1, 2, 0]].
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 1]])
    assert not inconsistent_edges(faces)
    out = orient_outward(positions, faces)
    assert not inconsistent_edges(out)
