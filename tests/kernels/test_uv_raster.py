"""uv_raster (torch, any device) against uv_raster_reference (numpy) and against an exact
integer oracle of the docstring's rules, plus grids small enough to write out by hand; then the
Triton path (`triton_device`: natively on CUDA, or on the CPU under TRITON_INTERPRET=1) against
the torch path on the same device, exactly, and on hand-built grids.

Rules under test: centre coverage = the closed triangle contains the texel centre; conservative
coverage = the closed triangle meets the closed texel square; a texel goes to the lowest face
whose triangle contains its centre, else to the lowest face touching it; a face overlaps when a
texel centre lies strictly inside it and strictly inside another face. Row y = 0 is v = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import kernels.uv_raster as uv_raster_module
from kernels.uv_raster import (
    FACE_BLOCK,
    UVRaster,
    _uv_raster_torch,
    _uv_raster_triton,
    uv_overlaps,
    uv_raster,
    uv_raster_reference,
)

# Kernel vs reference: the same float32 edge functions in the same order, so in practice equal.
BARY_ATOL = 1e-6
# Barycentrics against values worked out by hand or in float64 (float32 edge functions).
KNOWN_BARY_ATOL = 1e-5

# (faces, width, height, triangle size in uv): empty, one texel, one face, odd non-square grids,
# and a "large" 1823 x 781 grid with small mesh-like triangles.
RANDOM_CASES = [
    (0, 4, 4, 0.3),
    (1, 1, 1, 0.3),
    (1, 5, 3, 0.4),
    (2, 7, 3, 0.3),
    (17, 31, 17, 0.2),
    (100, 64, 48, 0.05),
    (600, 257, 129, 0.02),
    (300, 1823, 781, 0.004),
]


def random_soup(seed: int, face_count: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """uvs [3F, 2] float32 (some a little outside [0, 1], to exercise clipping), faces [F, 3]
    int64 with shuffled vertex ids, both windings and some slivers."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.05, 1.05, (face_count, 1, 2))
    spread = rng.normal(0, size, (face_count, 3, 2)) * rng.uniform(0.05, 1, (face_count, 1, 1))
    corners = (centres + spread).reshape(-1, 2).astype(np.float32)
    faces = rng.permutation(3 * face_count).reshape(face_count, 3)
    uvs = np.empty_like(corners)
    uvs[faces.reshape(-1)] = corners
    return uvs, faces


def snapped_soup(seed: int) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray]:
    """A tiny grid and 1-4 triangles with corners on a quarter-texel lattice, so vertices on
    texel corners, edges along texel borders, centres on edges and degenerate faces all occur
    and every float32 edge function is exact. -> (uvs, faces, width, height, corners in
    quarter texels [F, 3, 2] int)."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    face_count = int(rng.integers(1, 5))
    quarters = rng.integers(-4, 4 * max(width, height) + 5, (face_count, 3, 2))
    uvs = (quarters.reshape(-1, 2) / 4 / np.array([width, height])).astype(np.float32)
    # The kernel's uv * (W, H) must land back on the lattice for the oracle to apply.
    scaled = uvs * np.array([width, height], np.float32)
    assert np.array_equal(scaled, quarters.reshape(-1, 2) / 4)
    faces = np.arange(3 * face_count).reshape(face_count, 3)
    return uvs, faces, width, height, quarters


def exact_raster(
    quarters: np.ndarray, width: int, height: int, conservative: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The docstring's rules in exact integer arithmetic (eighths of a texel, so texel centres
    are integers too), by separating axes. -> (face_ids [H, W], overlapping [F])."""
    triangles = [[(2 * int(x), 2 * int(y)) for x, y in t] for t in quarters]

    def cross(o: tuple, a: tuple, b: tuple) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def contains(tri: list, point: tuple, strictly: bool) -> bool:
        area = cross(*tri)
        if area == 0:
            return False
        values = [cross(tri[i], tri[(i + 1) % 3], point) * area for i in range(3)]
        return all(v > 0 for v in values) if strictly else all(v >= 0 for v in values)

    def meets(tri: list, x: int, y: int) -> bool:
        square = [(8 * x, 8 * y), (8 * x + 8, 8 * y), (8 * x + 8, 8 * y + 8), (8 * x, 8 * y + 8)]
        edge_normals = [
            (tri[i][1] - tri[(i + 1) % 3][1], tri[(i + 1) % 3][0] - tri[i][0]) for i in range(3)
        ]
        for ax, ay in [(1, 0), (0, 1), *edge_normals]:
            on_tri = [ax * px + ay * py for px, py in tri]
            on_square = [ax * px + ay * py for px, py in square]
            if max(on_tri) < min(on_square) or max(on_square) < min(on_tri):
                return False  # a separating axis (a zero axis never separates)
        return True

    face_ids = np.full((height, width), -1, np.int64)
    overlapping = np.zeros(len(triangles), bool)
    for y in range(height):
        for x in range(width):
            centre = (8 * x + 4, 8 * y + 4)
            inside = [f for f, t in enumerate(triangles) if contains(t, centre, strictly=False)]
            strict = [f for f, t in enumerate(triangles) if contains(t, centre, strictly=True)]
            if len(strict) > 1:
                overlapping[strict] = True
            if inside:
                face_ids[y, x] = inside[0]
            elif conservative:
                touching = [f for f, t in enumerate(triangles) if meets(t, x, y)]
                face_ids[y, x] = touching[0] if touching else -1
    return face_ids, overlapping


def run(
    uvs: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    conservative: bool,
    device: str,
    raster_fn: Callable[..., UVRaster] = uv_raster,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`raster_fn` (the public op by default) on `device`, checked for shapes and dtypes,
    results back as numpy (face_ids, barycentrics, overlapping)."""
    raster = raster_fn(
        torch.from_numpy(uvs).to(device),
        torch.from_numpy(faces).to(device),
        width,
        height,
        conservative,
    )
    assert raster.face_ids.shape == (height, width) and raster.face_ids.dtype == torch.int64
    assert raster.barycentrics.shape == (height, width, 3)
    assert raster.barycentrics.dtype == torch.float32
    assert raster.overlapping.shape == (len(faces),) and raster.overlapping.dtype == torch.bool
    return (
        raster.face_ids.cpu().numpy(),
        raster.barycentrics.cpu().numpy(),
        raster.overlapping.cpu().numpy(),
    )


def overlaps(
    uvs: np.ndarray, faces: np.ndarray, width: int, height: int, conservative: bool, device: str
) -> np.ndarray:
    """`uv_overlaps` on `device` (off CUDA the torch path without the maps) -> [F] bool."""
    soup = [torch.from_numpy(array).to(device) for array in (uvs, faces)]
    got = uv_overlaps(*soup, width, height, conservative)
    assert got.shape == (len(faces),) and got.dtype == torch.bool
    return got.cpu().numpy()


def assert_same_raster(got: tuple, expected: tuple) -> None:
    assert np.array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=BARY_ATOL)
    assert np.array_equal(got[2], expected[2])


# --- Hand-built grids -----------------------------------------------------------------------

UNIT_SQUARE_UVS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
UNIT_SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize("conservative", [False, True])
def test_unit_square_in_two_triangles_at_4x4(device: str, conservative: bool) -> None:
    face_ids, bary, overlapping = run(
        UNIT_SQUARE_UVS, UNIT_SQUARE_FACES, 4, 4, conservative, device
    )
    # Face 0 is below the diagonal u = v (x >= y); centres on the diagonal are in both closed
    # triangles and go to the lower id, 0.
    expected_ids = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    assert np.array_equal(face_ids, expected_ids)
    # Centre (x + 0.5, y + 0.5) in face 0 (corners (0,0), (4,0), (4,4) in texels) has weights
    # ((3.5 - x) / 4, (x - y) / 4, (y + 0.5) / 4); in face 1 ((0,0), (4,4), (0,4)) it has
    # ((3.5 - y) / 4, (x + 0.5) / 4, (y - x) / 4).
    y, x = np.mgrid[0:4, 0:4].astype(np.float64)
    below = np.stack(((3.5 - x) / 4, (x - y) / 4, (y + 0.5) / 4), axis=-1)
    above = np.stack(((3.5 - y) / 4, (x + 0.5) / 4, (y - x) / 4), axis=-1)
    expected_bary = np.where((x >= y)[..., None], below, above)
    np.testing.assert_allclose(bary, expected_bary, rtol=0, atol=KNOWN_BARY_ATOL)
    # The two halves only touch along the diagonal: no overlap.
    assert not overlapping.any()


def test_row_zero_is_v_zero(device: str) -> None:
    # The corner triangle u + v <= 0.5 on 4 x 4 is x + y <= 2 in texels: centres (0.5, 0.5),
    # (1.5, 0.5) (on the edge) and (0.5, 1.5); rows 2 and 3 (v > 0.5) stay empty.
    uvs = np.array([[0, 0], [0.5, 0], [0, 0.5]], np.float32)
    face_ids, _, _ = run(uvs, np.array([[0, 1, 2]]), 4, 4, False, device)
    expected = [[0, 0, -1, -1], [0, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]]
    assert np.array_equal(face_ids, expected)


def test_conservative_counts_texels_touched_at_a_single_point(device: str) -> None:
    # In texels: (0.25, 0.25), (1, 0.25), (1, 1) on 4 x 4. It touches texel (1, 0) along x = 1,
    # and texels (0, 1) and (1, 1) only at the corner point (1, 1); its only centre is (0.5, 0.5),
    # on the hypotenuse.
    uvs = np.array([[0.25, 0.25], [1, 0.25], [1, 1]], np.float32) / 4
    faces = np.array([[0, 1, 2]])
    centre_ids, _, _ = run(uvs, faces, 4, 4, False, device)
    expected = np.full((4, 4), -1)
    expected[0, 0] = 0
    assert np.array_equal(centre_ids, expected)
    conservative_ids, bary, _ = run(uvs, faces, 4, 4, True, device)
    expected[:2, :2] = 0
    assert np.array_equal(conservative_ids, expected)
    # Texels whose centre lies outside get weights clamped into the triangle.
    covered = bary[:2, :2]
    assert (covered >= 0).all() and (covered <= 1).all()
    np.testing.assert_allclose(covered.sum(-1), 1, rtol=0, atol=KNOWN_BARY_ATOL)


def test_centre_inside_beats_a_lower_face_that_only_touches(device: str) -> None:
    # In texels on 4 x 4: face 0 is a speck in texel (0, 0) away from its centre; face 1 holds
    # that centre. Conservatively both touch the texel; the centre rule gives it to face 1.
    uvs = (
        np.array(
            [[0.1, 0.1], [0.3, 0.1], [0.1, 0.3], [0.3, 0.3], [0.8, 0.3], [0.5, 0.8]], np.float32
        )
        / 4
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    face_ids, _, overlapping = run(uvs, faces, 4, 4, True, device)
    expected = np.full((4, 4), -1)
    expected[0, 0] = 1
    assert np.array_equal(face_ids, expected)
    assert not overlapping.any()


def test_identical_faces_go_to_the_lowest_id_and_overlap(device: str) -> None:
    # Face 1 is a duplicate of face 2 (listed first); face 0 is far away in the other corner.
    uvs = np.array(
        [[0.8, 0.8], [1, 0.8], [1, 1], [0, 0], [0.6, 0], [0, 0.6], [0, 0], [0.6, 0], [0, 0.6]],
        np.float32,
    )
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    for conservative in (False, True):
        face_ids, _, overlapping = run(uvs, faces, 8, 8, conservative, device)
        assert (face_ids[:3, :3][face_ids[:3, :3] >= 0] == 1).all()
        assert (face_ids == 2).sum() == 0
        assert overlapping.tolist() == [False, True, True]


@pytest.mark.parametrize("conservative", [False, True])
def test_empty_and_outside_inputs_cover_nothing(device: str, conservative: bool) -> None:
    face_ids, bary, overlapping = run(
        np.zeros((0, 2), np.float32), np.zeros((0, 3), np.int64), 5, 3, conservative, device
    )
    assert (face_ids == -1).all() and (bary == 0).all() and overlapping.shape == (0,)
    # A triangle wholly right of the texture (u > 1 + one texel) touches no texel.
    uvs = np.array([[1.3, 0.2], [1.6, 0.2], [1.4, 0.7]], np.float32)
    face_ids, _, _ = run(uvs, np.array([[0, 1, 2]]), 5, 3, conservative, device)
    assert (face_ids == -1).all()


# --- Exact oracle of the rules --------------------------------------------------------------


@pytest.mark.parametrize("conservative", [False, True])
def test_snapped_triangles_follow_the_rules_exactly(device: str, conservative: bool) -> None:
    for seed in range(60):
        uvs, faces, width, height, quarters = snapped_soup(seed)
        expected_ids, expected_overlap = exact_raster(quarters, width, height, conservative)
        face_ids, _, overlapping = run(uvs, faces, width, height, conservative, device)
        assert np.array_equal(face_ids, expected_ids), f"seed {seed}"
        assert np.array_equal(overlapping, expected_overlap), f"seed {seed}"
        got = overlaps(uvs, faces, width, height, conservative, device)
        assert np.array_equal(got, expected_overlap), f"uv_overlaps, seed {seed}"
        reference_ids, _, reference_overlap = uv_raster_reference(
            uvs, faces, width, height, conservative
        )
        assert np.array_equal(reference_ids, expected_ids), f"reference, seed {seed}"
        assert np.array_equal(reference_overlap, expected_overlap), f"reference, seed {seed}"


# --- Random soups against the reference, and invariants -------------------------------------


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize(("face_count", "width", "height", "size"), RANDOM_CASES)
def test_matches_reference_on_random_soups(
    device: str, face_count: int, width: int, height: int, size: float, conservative: bool
) -> None:
    uvs, faces = random_soup(face_count + width, face_count, size)
    got = run(uvs, faces, width, height, conservative, device)
    assert_same_raster(got, uv_raster_reference(uvs, faces, width, height, conservative))


@pytest.mark.parametrize(("face_count", "width", "height", "size"), RANDOM_CASES[3:])
def test_invariants_on_random_soups(
    device: str, face_count: int, width: int, height: int, size: float
) -> None:
    uvs, faces = random_soup(face_count + height, face_count, size)
    centre_ids, centre_bary, centre_overlap = run(uvs, faces, width, height, False, device)
    ids, bary, overlap = run(uvs, faces, width, height, True, device)
    # Overlap is a centre strictly inside two faces in either mode (the atlas's fold check
    # reads it from the cheaper centre raster).
    assert np.array_equal(centre_overlap, overlap)
    for conservative in (False, True):  # and `uv_overlaps` gives those flags without the maps
        assert np.array_equal(overlaps(uvs, faces, width, height, conservative, device), overlap)
    assert overlap.any() == (face_count in (17, 100, 600))  # the soups that do overlap
    for face_ids, weights in ((centre_ids, centre_bary), (ids, bary)):
        assert face_ids.min() >= -1 and face_ids.max() < face_count  # indices in range
        covered = face_ids >= 0
        assert (weights[~covered] == 0).all()
        assert (weights[covered] >= 0).all() and (weights[covered] <= 1).all()
        np.testing.assert_allclose(weights[covered].sum(-1), 1, rtol=0, atol=KNOWN_BARY_ATOL)
    # Conservative coverage contains centre coverage, with the same winner (centre rule first).
    centre_covered = centre_ids >= 0
    assert np.array_equal(ids[centre_covered], centre_ids[centre_covered])
    assert (ids[~centre_covered] >= 0).any()  # and adds the texels only touched
    # Centre texels: the weights reproduce the centre from the face's corners.
    y, x = np.nonzero(centre_covered)
    corners = (uvs[faces[centre_ids[y, x]]] * np.array([width, height])).astype(np.float64)
    rebuilt = np.einsum("nk,nkd->nd", centre_bary[y, x].astype(np.float64), corners)
    extent = np.abs(corners).max()
    np.testing.assert_allclose(
        rebuilt, np.stack((x, y), 1) + 0.5, rtol=0, atol=KNOWN_BARY_ATOL * max(extent, 1)
    )


def box_candidates(uvs: np.ndarray, faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """[F] the per-face candidate bound the kernel chunks by: (box extent + 3) area, texels."""
    corners = uvs[faces].astype(np.float32) * np.array([width, height], np.float32)
    return (corners.max(1) - corners.min(1) + 3).prod(1).astype(np.float64)


@pytest.mark.parametrize("conservative", [False, True])
def test_chunk_boundaries_do_not_change_the_result(
    device: str, conservative: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvs, faces = random_soup(9, 16, 0.15)
    # Duplicate face 0 at the end, so an overlap spans the first and last chunks.
    faces = np.concatenate((faces, faces[:1]))
    expected = run(uvs, faces, 37, 23, conservative, device)
    assert expected[2][0] and expected[2][-1]
    bounds = np.cumsum(box_candidates(uvs, faces, 37, 23))
    # One face a chunk; limits one below, at and one above the bound that first admits two
    # faces (block - 1, block, block + 1); and all but the last face in one chunk.
    two = int(np.ceil(bounds[1]))
    all_but_last = int(np.ceil(bounds[-2]))
    for limit in (1, two - 1, two, two + 1, all_but_last):
        monkeypatch.setattr(uv_raster_module, "CANDIDATES_PER_CHUNK", limit)
        got = run(uvs, faces, 37, 23, conservative, device)
        assert np.array_equal(got[0], expected[0]), f"chunk {limit}"
        assert np.array_equal(got[1], expected[1]), f"chunk {limit}"
        assert np.array_equal(got[2], expected[2]), f"chunk {limit}"
        only = overlaps(uvs, faces, 37, 23, conservative, device)
        assert np.array_equal(only, expected[2]), f"uv_overlaps, chunk {limit}"


def test_accepts_int32_faces_and_float64_uvs(device: str) -> None:
    uvs, faces = random_soup(4, 50, 0.1)
    expected = run(uvs, faces, 33, 21, True, device)
    got = run(uvs.astype(np.float64), faces.astype(np.int32), 33, 21, True, device)
    assert_same_raster(got, expected)


def test_is_deterministic(device: str) -> None:
    uvs, faces = random_soup(6, 2000, 0.02)
    first = run(uvs, faces, 300, 200, True, device)
    second = run(uvs, faces, 300, 200, True, device)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("uvs_shape", "faces_shape", "width", "height", "expected"),
    [
        ((3, 3), (1, 3), 4, 4, r"\[V, 2\]"),
        ((3,), (1, 3), 4, 4, r"\[V, 2\]"),
        ((3, 2), (1, 2), 4, 4, r"\[F, 3\]"),
        ((3, 2), (3,), 4, 4, r"\[F, 3\]"),
        ((3, 2), (1, 3), 0, 4, "positive"),
        ((3, 2), (1, 3), 4, -1, "positive"),
    ],
)
def test_rejects_bad_inputs(
    uvs_shape: tuple, faces_shape: tuple, width: int, height: int, expected: str
) -> None:
    uvs, faces = torch.zeros(uvs_shape), torch.zeros(faces_shape, dtype=torch.long)
    with pytest.raises(ValueError, match=expected):
        uv_raster(uvs, faces, width, height)
    with pytest.raises(ValueError, match=expected):
        uv_raster_reference(uvs.numpy(), faces.numpy(), width, height)


# --- The Triton path ------------------------------------------------------------------------
# Compared with `_uv_raster_torch` on the same device: face ids, flags and barycentrics equal
# exactly (the same float32 operations in the same order, no FMA contraction; only the sign of
# a zero weight may differ between devices, and equality of values ignores it).

# (faces, width, height, triangle size in uv): empty, a single texel, one face, one setup
# block of faces - 1, exactly, + 1 on awkward grids, and small triangles into 1823 x 781.
TRITON_CASES = [
    (0, 4, 4, 0.3),
    (1, 1, 1, 0.3),
    (1, 37, 23, 0.4),
    (FACE_BLOCK - 1, 64, 48, 0.05),
    (FACE_BLOCK, 37, 23, 0.1),
    (FACE_BLOCK + 1, 61, 29, 0.05),
    (300, 1823, 781, 0.004),
]


def jittered_grid(seed: int, face_count: int) -> tuple[np.ndarray, np.ndarray]:
    """A mesh-like atlas: the unit square as an n x n grid of cells, inner vertices jittered
    by up to a quarter cell, each cell split along a random diagonal into two triangles of
    random winding: about `face_count` faces tiling [0, 1]² without overlap.
    -> uvs [(n + 1)², 2] float32, faces [2n², 3] int64 (row-major cell order)."""
    rng = np.random.default_rng(seed)
    n = max(1, round(np.sqrt(face_count / 2)))
    y, x = np.mgrid[0 : n + 1, 0 : n + 1].astype(np.float64)
    inner = (x > 0) & (x < n) & (y > 0) & (y < n)
    x[inner] += rng.uniform(-0.25, 0.25, inner.sum())
    y[inner] += rng.uniform(-0.25, 0.25, inner.sum())
    uvs = (np.stack((x.ravel(), y.ravel()), 1) / n).astype(np.float32)
    row, col = np.mgrid[0:n, 0:n].reshape(2, -1)
    v00 = row * (n + 1) + col
    v01, v10, v11 = v00 + 1, v00 + n + 1, v00 + n + 2
    flip = rng.random(n * n) < 0.5  # the diagonal 00-11 or 01-10
    first = np.where(flip[:, None], np.stack((v00, v01, v10), 1), np.stack((v00, v01, v11), 1))
    second = np.where(flip[:, None], np.stack((v01, v11, v10), 1), np.stack((v00, v11, v10), 1))
    faces = np.stack((first, second), 1).reshape(-1, 3)
    reverse = rng.random(len(faces)) < 0.5
    faces[reverse] = faces[reverse][:, ::-1]
    return uvs, faces.astype(np.int64)


def run_triton(
    uvs: np.ndarray, faces: np.ndarray, width: int, height: int, conservative: bool, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_uv_raster_triton` into outputs pre-filled with what no element may keep: face id -2
    (not -1, which empty texels must get written), NaN weights, every face flagged."""
    out = UVRaster(
        torch.full((height, width), -2, dtype=torch.int64, device=device),
        torch.full((height, width, 3), float("nan"), device=device),
        torch.ones(len(faces), dtype=torch.bool, device=device),
    )
    raster = _uv_raster_triton(
        torch.from_numpy(uvs).to(device),
        torch.from_numpy(faces).to(device),
        width,
        height,
        conservative,
        out=out,
    )
    assert raster.face_ids is out.face_ids and raster.barycentrics is out.barycentrics
    assert raster.overlapping is out.overlapping
    return (
        raster.face_ids.cpu().numpy(),
        raster.barycentrics.cpu().numpy(),
        raster.overlapping.cpu().numpy(),
    )


def run_torch_path(
    uvs: np.ndarray, faces: np.ndarray, width: int, height: int, conservative: bool, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The torch twin, whatever the device (the public op would send CUDA to Triton)."""

    def torch_twin(u: torch.Tensor, f: torch.Tensor, *args: object) -> UVRaster:
        return _uv_raster_torch(u.float(), f.long(), *args)

    return run(uvs, faces, width, height, conservative, device, raster_fn=torch_twin)


def assert_identical(got: tuple, expected: tuple) -> None:
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])  # exact: NaN (unwritten) fails too
    assert np.array_equal(got[2], expected[2])


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize(("face_count", "width", "height", "size"), TRITON_CASES)
def test_triton_matches_the_torch_path_on_random_soups(
    triton_device: str, face_count: int, width: int, height: int, size: float, conservative: bool
) -> None:
    uvs, faces = random_soup(face_count + width + 7, face_count, size)
    got = run_triton(uvs, faces, width, height, conservative, triton_device)
    assert_identical(got, run_torch_path(uvs, faces, width, height, conservative, triton_device))


def sliver_fan(count: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` slivers from near the texture's centre out to a circle at every angle (their
    boxes up to a quarter of the disc, their bands a few texels wide), some past the edge."""
    angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
    gap = 0.37 * (2 * np.pi / count)
    centre = np.array([0.5 + 0.3 / width, 0.5 + 0.2 / height])
    radius = np.where(np.arange(count) % 5 == 0, 0.62, 0.45)  # every fifth leaves the texture
    tips = [centre[None] + radius[:, None] * np.stack((np.cos(a), np.sin(a)), 1)
            for a in (angle, angle + gap)]  # fmt: skip
    corners = np.stack((np.broadcast_to(centre, tips[0].shape), tips[0], tips[1]), 1)
    return corners.reshape(-1, 2).astype(np.float32), np.arange(3 * count).reshape(-1, 3)


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize("band", [1, 3, 4, 16])
def test_triton_matches_the_torch_path_on_a_fan_of_slivers(
    triton_device: str, conservative: bool, band: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bands of `band` rows each as wide as the sliver reaches there: the same texels as the
    torch path's row runs (and so the reference's boxes)."""
    monkeypatch.setattr(uv_raster_module, "BAND_ROWS", band)
    uvs, faces = sliver_fan(150, 97, 83)
    got = run_triton(uvs, faces, 97, 83, conservative, triton_device)
    assert (got[0] >= 0).sum() > 1000
    assert_identical(got, run_torch_path(uvs, faces, 97, 83, conservative, triton_device))


def speck_faces(texels: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One tiny triangle around the centre of each texel index in `texels` [N]: one candidate
    texel and so one work unit each, in either mode."""
    x, y = texels % width, texels // width
    offsets = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.6]])
    corners = np.stack((x, y), 1)[:, None, :] + offsets  # [N, 3, 2] texel units
    uvs = (corners.reshape(-1, 2) / np.array([width, height])).astype(np.float32)
    return uvs, np.arange(3 * len(texels)).reshape(-1, 3)


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_triton_block_boundaries(
    triton_device: str, extra: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small blocks, so that faces, work units and texels fall one short of, exactly on and one
    # past a block: setup blocks of 8 faces, steps of 4 units, final blocks of 64 texels.
    monkeypatch.setattr(uv_raster_module, "FACE_BLOCK", 8)
    for name, value in (("UNITS_PER_STEP", 4), ("TEXEL_BLOCK", 64)):
        monkeypatch.setattr(uv_raster_module, name, value)
        monkeypatch.setattr(uv_raster_module, f"INTERPRETER_{name}", value)
    width, height = {-1: (7, 9), 0: (8, 8), 1: (5, 13)}[extra]
    for conservative in (False, True):
        uvs, faces = random_soup(40 + extra, 8 + extra, 0.3)
        got = run_triton(uvs, faces, width, height, conservative, triton_device)
        expected = run_torch_path(uvs, faces, width, height, conservative, triton_device)
        assert_identical(got, expected)
        # 12 + extra units (three steps), one face per texel, in shuffled texel order.
        texels = np.random.default_rng(extra + 2).permutation(width * height)[: 12 + extra]
        uvs, faces = speck_faces(texels, width, height)
        face_ids, bary, overlapping = run_triton(
            uvs, faces, width, height, conservative, triton_device
        )
        expected_ids = np.full(width * height, -1)
        expected_ids[texels] = np.arange(len(texels))
        assert np.array_equal(face_ids.ravel(), expected_ids)
        assert not overlapping.any()
        np.testing.assert_allclose(bary.reshape(-1, 3)[texels].sum(1), 1, atol=KNOWN_BARY_ATOL)


@pytest.mark.parametrize("conservative", [False, True])
def test_triton_right_triangle_covers_known_texels(triton_device: str, conservative: bool) -> None:
    # In texels on 4 x 4: (0, 0), (4, 0), (0, 4), the half x + y <= 4. Centres (x + 0.5,
    # y + 0.5) inside: x + y <= 3; squares that meet it: x + y <= 4 (three touch at a corner).
    uvs = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    faces = np.array([[0, 1, 2]])
    face_ids, bary, overlapping = run_triton(uvs, faces, 4, 4, conservative, triton_device)
    y, x = np.mgrid[0:4, 0:4]
    covered = x + y <= (4 if conservative else 3)
    assert np.array_equal(face_ids, np.where(covered, 0, -1))
    assert not overlapping.any()
    # At a centre inside: weights (1 - (cx + cy) / 4, cx / 4, cy / 4).
    cx, cy = x + 0.5, y + 0.5
    expected = np.stack((1 - (cx + cy) / 4, cx / 4, cy / 4), -1)
    inside = x + y <= 3
    np.testing.assert_allclose(bary[inside], expected[inside], rtol=0, atol=KNOWN_BARY_ATOL)
    # Beyond the hypotenuse the weights are clamped: a's is 0, the other two sum to 1.
    edge = covered & ~inside
    assert (bary[edge][:, 0] == 0).all()
    np.testing.assert_allclose(bary[edge].sum(1), 1, rtol=0, atol=KNOWN_BARY_ATOL)
    assert (bary[~covered] == 0).all()


def test_triton_degenerate_triangles(triton_device: str) -> None:
    # In texels on 4 x 4: face 0 is the segment y = 0.5 from x = 0.5 to 3.5 (three collinear
    # corners), face 1 the point (2, 2), a texel corner. No area, so no centre is inside; the
    # segment touches the four texels of row 0, the point the four texels around it. Every
    # edge function is 0 there, so each weight is 1/3.
    uvs = np.array([[0.5, 0.5], [2, 0.5], [3.5, 0.5], [2, 2], [2, 2], [2, 2]], np.float32) / 4
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    face_ids, _, overlapping = run_triton(uvs, faces, 4, 4, False, triton_device)
    assert (face_ids == -1).all() and not overlapping.any()
    face_ids, bary, overlapping = run_triton(uvs, faces, 4, 4, True, triton_device)
    expected = np.full((4, 4), -1)
    expected[0] = 0
    expected[1:3, 1:3] = 1
    assert np.array_equal(face_ids, expected)
    assert not overlapping.any()
    assert (bary[expected >= 0] == np.float32(1 / 3)).all()


@pytest.mark.parametrize("conservative", [False, True])
def test_triton_triangle_over_the_whole_atlas(
    triton_device: str, full_size: bool, conservative: bool
) -> None:
    # Face 0 holds the atlas and far beyond (one face, every texel: the heaviest single face);
    # face 1, a small triangle inside it, wins nothing (face 0 holds every centre too) but
    # shares centres strictly inside both: both overlap.
    width, height = (4096, 4096) if full_size else (193, 97)
    uvs = np.array([[-1, -1], [3, -1], [-1, 3], [0.3, 0.3], [0.6, 0.35], [0.4, 0.7]], np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    got = run_triton(uvs, faces, width, height, conservative, triton_device)
    assert (got[0] == 0).all()
    assert got[2].tolist() == [True, True]
    assert_identical(got, run_torch_path(uvs, faces, width, height, conservative, triton_device))


def test_triton_overlap_flags(triton_device: str) -> None:
    # In uv on 16 x 16: faces 0 and 1 cross; face 2 shares only face 0's edge (0.1, 0.1) -
    # (0.6, 0.1); face 3 is a duplicate of face 4, listed first.
    uvs = np.array(
        [
            [0.1, 0.1], [0.6, 0.1], [0.3, 0.5],
            [0.3, 0.2], [0.8, 0.3], [0.5, 0.6],
            [0.1, 0.1], [0.6, 0.1], [0.3, 0.0],
            [0.7, 0.7], [0.95, 0.7], [0.8, 0.95],
        ],
        np.float32,
    )  # fmt: skip
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 8, 7], [9, 10, 11], [11, 9, 10]])
    for conservative in (False, True):
        got = run_triton(uvs, faces, 16, 16, conservative, triton_device)
        assert got[2].tolist() == [True, True, False, True, True]
        assert not (got[0] == 4).any()  # the duplicate listed first takes every texel
        assert_identical(got, run_torch_path(uvs, faces, 16, 16, conservative, triton_device))


@pytest.mark.parametrize(("face_count", "width", "height", "size"), TRITON_CASES[3:])
def test_triton_invariants(
    triton_device: str, face_count: int, width: int, height: int, size: float
) -> None:
    uvs, faces = random_soup(face_count + height, face_count, size)
    centre = run_triton(uvs, faces, width, height, False, triton_device)
    conservative = run_triton(uvs, faces, width, height, True, triton_device)
    for (face_ids, weights, _), mode in ((centre, False), (conservative, True)):
        assert face_ids.min() >= -1 and face_ids.max() < face_count  # indices in range
        covered = face_ids >= 0
        assert (weights[~covered] == 0).all()
        assert (weights[covered] >= 0).all() and (weights[covered] <= 1).all()
        np.testing.assert_allclose(weights[covered].sum(-1), 1, rtol=0, atol=KNOWN_BARY_ATOL)
        # Every texel the reference covers is covered, by the same face.
        reference_ids, _, _ = uv_raster_reference(uvs, faces, width, height, mode)
        assert np.array_equal(face_ids, reference_ids)
    # Conservative coverage holds centre coverage, with the same winners.
    centre_covered = centre[0] >= 0
    assert np.array_equal(conservative[0][centre_covered], centre[0][centre_covered])
    assert np.array_equal(conservative[2], centre[2])  # flags come from centres alone


def test_triton_is_deterministic(triton_device: str) -> None:
    uvs, faces = random_soup(11, 600, 0.02)  # overlapping: atomics race on shared texels
    first = run_triton(uvs, faces, 150, 100, True, triton_device)
    second = run_triton(uvs, faces, 150, 100, True, triton_device)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[2], second[2])
    assert np.array_equal(first[1].view(np.int32), second[1].view(np.int32))  # bits


@pytest.mark.parametrize("conservative", [False, True])
def test_triton_matches_the_torch_path_on_a_jittered_grid(
    triton_device: str, full_size: bool, conservative: bool
) -> None:
    # Natively 4M faces into 4096² in one call (no chunks); under the interpreter 2k into 97².
    face_count, size = (4_000_000, 4096) if full_size else (2_000, 97)
    uvs, faces = jittered_grid(5, face_count)
    got = run_triton(uvs, faces, size, size, conservative, triton_device)
    assert (got[0] >= 0).all()  # the grid tiles the square: every centre is inside a face
    assert not got[2].any()  # and its faces only touch
    assert_identical(got, run_torch_path(uvs, faces, size, size, conservative, triton_device))


@pytest.mark.skipif(
    uv_raster_module.triton is None or not torch.cuda.is_available(), reason="needs CUDA"
)
def test_public_function_uses_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args: object, **kwargs: object) -> UVRaster:
        calls.append(args)
        return _uv_raster_triton(*args, **kwargs)

    monkeypatch.setattr(uv_raster_module, "_uv_raster_triton", spy)
    uvs, faces = random_soup(3, 50, 0.1)
    raster = uv_raster(torch.from_numpy(uvs).cuda(), torch.from_numpy(faces).cuda(), 33, 21)
    assert len(calls) == 1 and raster.face_ids.is_cuda
    uv_raster(torch.from_numpy(uvs), torch.from_numpy(faces), 33, 21)  # CPU: the torch path
    assert len(calls) == 1
