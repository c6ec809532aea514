"""field_sample (torch, any device) against field_sample_reference (numpy), through each of its
paths: trilinear over present neighbours, the Chebyshev shell search, the brute-force fallback,
and both lookups (dense grid for R^3 <= DENSE_LOOKUP_CELLS, sorted keys above). Then the Triton
path (`_field_sample_triton`, on `triton_device`) against the torch path, bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import kernels.field_sample as field_sample_module
from kernels.field_sample import (
    SEARCH_RADIUS,
    _field_sample_torch,
    _field_sample_triton,
    field_sample,
    field_sample_reference,
)
from kernels.hash_table import launch_block
from tests.kernels.test_weld import poisoned_allocations

# Kernel (float32 blend) vs reference (float64 blend) for attributes in [0, 1].
SAMPLE_ATOL = 1e-5
# A blend of present voxels against a value worked out by hand, attributes of order 10.
KNOWN_ATOL = 1e-5

# (voxels, resolution, points): one voxel at R = 1, sparse and dense small fields (dense-grid
# lookup), and R = 300 (sorted keys).
RANDOM_CASES = [(1, 1, 9), (1, 8, 40), (40, 8, 200), (700, 12, 300), (5, 300, 60), (600, 300, 150)]


def voxel_centre(cells: np.ndarray, resolution: int) -> np.ndarray:
    """[..., 3] voxel indices -> [..., 3] float32 positions of their centres."""
    return ((np.asarray(cells, np.float64) + 0.5) / resolution - 0.5).astype(np.float32)


def random_field(
    seed: int, count: int, resolution: int, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """coords [N, 3] int64 in a box of at most 24^3 voxels (so a sparse field at R = 300 still
    has neighbours), attrs [N, C] float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    box = min(resolution, 24)
    low = rng.integers(0, resolution - box + 1, 3)
    coords = low + rng.integers(0, box, (count, 3))
    return coords, rng.uniform(0, 1, (count, channels)).astype(np.float32)


def points_around(seed: int, coords: np.ndarray, resolution: int, count: int) -> np.ndarray:
    """[M, 3] float32 around random voxels: a third within 0.7 voxel per axis (mostly
    trilinear), a third within SEARCH_RADIUS + 1 (mostly shells), the rest within 12 voxels
    (mostly brute force). Every RANDOM_CASES row reaches all three paths."""
    rng = np.random.default_rng(seed)
    anchors = coords[rng.integers(0, len(coords), count)].astype(np.float64)
    reach = np.select(
        [np.arange(count) % 3 == 0, np.arange(count) % 3 == 1], [0.7, SEARCH_RADIUS + 1.0], 12.0
    )
    cells = anchors + rng.uniform(-1, 1, (count, 3)) * reach[:, None]
    return voxel_centre(cells, resolution)


def sample(
    coords: np.ndarray, attrs: np.ndarray, resolution: int, points: np.ndarray, device: str
) -> np.ndarray:
    out = field_sample(
        torch.from_numpy(coords).to(device),
        torch.from_numpy(attrs).to(device),
        resolution,
        torch.from_numpy(points).to(device),
    )
    assert out.dtype == torch.float32 and out.shape == (len(points), attrs.shape[1])
    return out.cpu().numpy()


# --- Known answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [1, 8])
def test_single_voxel_field_is_read_everywhere(device: str, resolution: int) -> None:
    coords = np.array([[0, resolution - 1, resolution // 2]])
    attrs = np.array([[0.25, 0.5, 1.0, 7.0]], np.float32)
    centre = voxel_centre(coords, resolution)
    rng = np.random.default_rng(resolution)
    points = np.concatenate(
        [
            centre,  # exactly on it
            centre + rng.uniform(-0.5, 0.5, (20, 3)).astype(np.float32) / resolution,  # its cell
            centre + rng.uniform(-3, 3, (20, 3)).astype(np.float32) / resolution,  # shells
            rng.uniform(-20, 20, (20, 3)).astype(np.float32),  # far from it
        ]
    )
    got = sample(coords, attrs, resolution, points, device)
    np.testing.assert_allclose(got, np.repeat(attrs, len(points), 0), rtol=0, atol=KNOWN_ATOL)


def test_missing_corners_are_renormalised_away(device: str) -> None:
    # Two voxels on the x axis of an R = 4 grid, value 0 and 10; the other six corners of every
    # query are absent, so y and z offsets cancel and the value is linear in x.
    coords = np.array([[1, 1, 1], [2, 1, 1]])
    attrs = np.array([[0.0], [10.0]], np.float32)
    t = np.linspace(0, 1, 11)
    for dy, dz in ((0.0, 0.0), (0.3, 0.2), (-0.45, 0.1)):
        cells = np.stack((1 + t, 1 + dy + 0 * t, 1 + dz + 0 * t), 1)
        got = sample(coords, attrs, 4, voxel_centre(cells, 4), device)
        np.testing.assert_allclose(got[:, 0], 10 * t, rtol=0, atol=KNOWN_ATOL)


def test_full_field_reproduces_a_linear_function(device: str) -> None:
    # Every voxel present with value i + 2j + 3k: trilinear blending is exact for it between
    # the centres, which checks the centre convention -0.5 + (i + 0.5) / R.
    resolution = 6
    coords = np.array(list(itertools.product(range(resolution), repeat=3)))
    attrs = (coords @ np.array([1.0, 2.0, 3.0]))[:, None].astype(np.float32)
    rng = np.random.default_rng(0)
    cells = rng.uniform(0, resolution - 1, (500, 3))
    got = sample(coords, attrs, resolution, voxel_centre(cells, resolution), device)
    np.testing.assert_allclose(got[:, 0], cells @ [1.0, 2.0, 3.0], rtol=0, atol=KNOWN_ATOL * 4)


def test_shell_search_takes_the_nearest_then_the_first_offset(device: str) -> None:
    # Queries exactly on the centre of an absent voxel c: its own corner has all the weight, so
    # the shells decide. Offsets are ordered as itertools.product over (-r..r)^3.
    resolution = 16
    c = np.array([8, 8, 8])
    query = voxel_centre(c[None], resolution)
    cases = [
        # (present offsets, in input order) -> the one expected
        ([(1, 0, 0), (-1, 0, 0)], (-1, 0, 0)),  # a tie: the earlier offset, not the earlier row
        ([(1, 1, 1), (0, 1, 0)], (0, 1, 0)),  # same shell: the nearer one
        ([(0, 0, 3)], (0, 0, 3)),  # the last shell searched
        ([(3, 3, -3), (0, 2, 0)], (0, 2, 0)),
    ]
    for offsets, expected in cases:
        coords = c + np.array(offsets)
        attrs = np.arange(len(offsets), dtype=np.float32)[:, None]
        got = sample(coords, attrs, resolution, query, device)
        assert got[0, 0] == offsets.index(expected), (offsets, got)
        assert field_sample_reference(coords, attrs, resolution, query)[0, 0] == got[0, 0]


@pytest.mark.parametrize("count", [3, 4, 5])
def test_far_points_take_the_nearest_voxel_anywhere(
    device: str, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Brute-force chunks of 4 queries: one chunk short, exactly one, and one plus a spare.
    monkeypatch.setattr(field_sample_module, "BRUTE_FORCE_CHUNK", 4)
    resolution = 8
    coords, attrs = random_field(3, 12, resolution)
    coords = np.unique(coords % 3, axis=0)  # all in the (0..2)^3 corner
    attrs = attrs[: len(coords)]
    rng = np.random.default_rng(count)
    points = rng.uniform(1.0, 3.0, (count, 3)).astype(np.float32) * rng.choice([-1, 1], (count, 3))
    points[:, 0] = np.abs(points[:, 0])  # keep them off the corner: beyond every shell
    distances = np.linalg.norm(
        points[:, None].astype(np.float64) - voxel_centre(coords, resolution)[None], axis=-1
    )
    nearest = np.argmin(distances, axis=1)
    got = sample(coords, attrs, resolution, points, device)
    assert np.array_equal(got, attrs[nearest])


def test_duplicate_voxels_read_their_first_row(device: str) -> None:
    resolution = 8
    coords = np.array([[2, 2, 2], [5, 5, 5], [2, 2, 2], [5, 5, 5]])
    attrs = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    points = voxel_centre([[2, 2, 2], [5, 5, 5], [4, 2, 2], [7, 7, 6], [12, 12, 12]], resolution)
    # Trilinear at both centres, shells from (4,2,2) and (7,7,6), brute force from (12,12,12).
    expected = np.array([[1.0], [2.0], [1.0], [2.0], [2.0]], np.float32)
    for layout in ("dense", "sorted"):
        with pytest.MonkeyPatch.context() as patch:
            if layout == "sorted":
                patch.setattr(field_sample_module, "DENSE_LOOKUP_CELLS", 0)
            assert np.array_equal(sample(coords, attrs, resolution, points, device), expected)
    assert np.array_equal(field_sample_reference(coords, attrs, resolution, points), expected)


def test_fallback_ties_go_to_the_lower_input_row_like_the_reference(device: str) -> None:
    # Two voxels on the x axis, listed (2,0,0) first; the query sits at voxel index (1, 20, 0),
    # equidistant from both and far beyond the shells. Regression: the fallback once searched
    # the voxels in sorted-key order and returned (0,0,0)'s 2.0.
    resolution = 8
    coords = np.array([[2, 0, 0], [0, 0, 0]])
    attrs = np.array([[1.0], [2.0]], np.float32)
    point = voxel_centre([[1, 20, 0]], resolution)
    assert field_sample_reference(coords, attrs, resolution, point)[0, 0] == 1.0
    assert sample(coords, attrs, resolution, point, device)[0, 0] == 1.0


# --- Random fields against the reference, both lookups, invariants --------------------------


@pytest.mark.parametrize(("count", "resolution", "points"), RANDOM_CASES)
def test_matches_reference_on_random_fields(
    device: str, count: int, resolution: int, points: int
) -> None:
    coords, attrs = random_field(count + resolution, count, resolution)
    queries = points_around(points, coords, resolution, points)
    got = sample(coords, attrs, resolution, queries, device)
    expected = field_sample_reference(coords, attrs, resolution, queries)
    np.testing.assert_allclose(got, expected, rtol=0, atol=SAMPLE_ATOL)
    # Never empty-handed: a convex blend of present voxels, per channel.
    assert np.isfinite(got).all()
    assert (got >= attrs.min(0) - SAMPLE_ATOL).all() and (got <= attrs.max(0) + SAMPLE_ATOL).all()


@pytest.mark.parametrize(("count", "resolution"), [(1, 1), (60, 8), (900, 16), (300, 300)])
def test_sorted_keys_and_dense_grid_agree_exactly(
    device: str, count: int, resolution: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    coords, attrs = random_field(count, count, resolution, channels=2)
    queries = points_around(count + 1, coords, resolution, 400)
    monkeypatch.setattr(field_sample_module, "DENSE_LOOKUP_CELLS", resolution**3)
    dense = sample(coords, attrs, resolution, queries, device)
    monkeypatch.setattr(field_sample_module, "DENSE_LOOKUP_CELLS", resolution**3 - 1)
    assert np.array_equal(sample(coords, attrs, resolution, queries, device), dense)


def test_no_points_and_one_channel(device: str) -> None:
    coords, attrs = random_field(1, 10, 8, channels=1)
    got = sample(coords, attrs, 8, np.zeros((0, 3), np.float32), device)
    assert got.shape == (0, 1)


def test_is_deterministic(device: str) -> None:
    coords, attrs = random_field(2, 2000, 32)
    queries = points_around(2, coords, 32, 3000)
    first = sample(coords, attrs, 32, queries, device)
    assert np.array_equal(sample(coords, attrs, 32, queries, device), first)


@pytest.mark.parametrize(
    ("coords_shape", "attrs_shape", "resolution", "points_shape", "expected"),
    [
        ((4, 2), (4, 3), 8, (5, 3), r"\[N, 3\]"),
        ((4,), (4, 3), 8, (5, 3), r"\[N, 3\]"),
        ((4, 3), (5, 3), 8, (5, 3), r"\[N, C\]"),
        ((4, 3), (4,), 8, (5, 3), r"\[N, C\]"),
        ((4, 3), (4, 3), 8, (5, 2), r"\[M, 3\]"),
        ((4, 3), (4, 3), 0, (5, 3), "positive resolution"),
        ((0, 3), (0, 3), 8, (5, 3), "at least one voxel"),
    ],
)
def test_rejects_bad_inputs(
    coords_shape: tuple, attrs_shape: tuple, resolution: int, points_shape: tuple, expected: str
) -> None:
    coords = torch.zeros(coords_shape, dtype=torch.long)
    attrs, points = torch.zeros(attrs_shape), torch.zeros(points_shape)
    with pytest.raises(ValueError, match=expected):
        field_sample(coords, attrs, resolution, points)
    with pytest.raises(ValueError, match=expected):
        field_sample_reference(coords.numpy(), attrs.numpy(), resolution, points.numpy())


# --- The Triton path ---------------------------------------------------------------------------


def shell_field(
    resolution: int, voxels: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """A generator-like thin surface: coords [N, 3] int64 of the voxels whose centres lie
    within half a voxel of a sphere (radius chosen for about `voxels` of them, centred in the
    grid), shuffled; attrs [N, C] float32 in [0, 1]. Also returns the radius, in voxels."""
    radius = float(np.sqrt(voxels / (4 * np.pi)))
    centre = (resolution - 1) / 2
    axis = np.arange(int(centre - radius - 1), int(np.ceil(centre + radius + 1)) + 1)
    j, k = np.meshgrid(axis, axis, indexing="ij")
    across = (j - centre) ** 2 + (k - centre) ** 2
    slices = []
    for i in axis:
        on = np.abs(np.sqrt((i - centre) ** 2 + across) - radius) < 0.5
        slices.append(np.stack([np.full(on.sum(), i), j[on], k[on]], 1))
    rng = np.random.default_rng(seed)
    coords = rng.permutation(np.concatenate(slices))
    return coords, rng.uniform(0, 1, (len(coords), channels)).astype(np.float32), radius


def shell_points(resolution: int, radius: float, count: int, seed: int) -> np.ndarray:
    """[count, 3] float32 near that sphere: 98% within half a voxel of it (trilinear), 2% one
    to three voxels off (most without a present neighbour: the cube search)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    off = rng.uniform(-0.5, 0.5, count)
    stray = rng.random(count) < 0.02
    off[stray] = rng.uniform(1, 3, stray.sum()) * rng.choice([-1, 1], stray.sum())
    cells = (resolution - 1) / 2 + (radius + off)[:, None] * direction
    return voxel_centre(cells, resolution)


def assert_triton_equals_torch(
    coords: np.ndarray, attrs: np.ndarray, resolution: int, points: np.ndarray, device: str
) -> np.ndarray:
    """_field_sample_triton on `device` against _field_sample_torch there, bit for bit."""
    c, a, p = (torch.from_numpy(x).to(device) for x in (coords, attrs, points))
    with poisoned_allocations():
        got = _field_sample_triton(c, a, resolution, p)
    expected = _field_sample_torch(c.long(), a.float(), resolution, p.float())
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    return got.cpu().numpy()


@pytest.mark.parametrize(("count", "resolution", "points"), RANDOM_CASES)
def test_triton_matches_torch_on_random_fields(
    triton_device: str, count: int, resolution: int, points: int
) -> None:
    coords, attrs = random_field(count + resolution, count, resolution)
    queries = points_around(points, coords, resolution, points)  # all three stages
    got = assert_triton_equals_torch(coords, attrs, resolution, queries, triton_device)
    expected = field_sample_reference(coords, attrs, resolution, queries)
    np.testing.assert_allclose(got, expected, rtol=0, atol=SAMPLE_ATOL)


def test_triton_at_awkward_query_counts(triton_device: str) -> None:
    # Query counts either side of the blend kernel's block; close to the voxels (trilinear).
    coords, attrs = random_field(4, 1500, 20)
    block = launch_block(field_sample_module.BLEND_BLOCK, triton_device)
    rng = np.random.default_rng(4)
    for count in (1, block - 1, block, block + 1):
        anchors = coords[rng.integers(0, len(coords), count)]
        queries = voxel_centre(anchors + rng.uniform(-0.7, 0.7, (count, 3)), 20)
        assert_triton_equals_torch(coords, attrs, 20, queries, triton_device)


def test_triton_search_at_awkward_miss_counts(triton_device: str) -> None:
    # Every query sits 2 voxels along an axis from one of a few isolated voxels: no neighbour
    # is present, so all of them go to the cube search, whose block they straddle.
    resolution = 32
    coords = np.array([[4, 4, 4], [20, 9, 27], [12, 25, 6], [28, 28, 28]])
    attrs = np.arange(8, dtype=np.float32).reshape(4, 2)
    # They settle in the radius-2 cube: 125 offsets, padded to 128, per query.
    block = launch_block(field_sample_module.SEARCH_LANES // 128, triton_device)
    rng = np.random.default_rng(5)
    for count in (1, block - 1, block, block + 1):
        anchor = rng.integers(0, len(coords), count)
        step = np.eye(3)[rng.integers(0, 3, count)] * rng.choice([-2, 2], (count, 1))
        queries = voxel_centre(coords[anchor] + step + rng.uniform(-0.2, 0.2, (count, 3)), 32)
        got = assert_triton_equals_torch(coords, attrs, resolution, queries, triton_device)
        assert np.array_equal(got, attrs[anchor])


def test_triton_search_grows_past_a_far_inner_voxel(triton_device: str) -> None:
    # The radius-1 cube holds only (1, 1, 1), 2.05 voxels away: not settled there, since
    # (0, 0, 2) in the radius-2 cube is nearer (1.65); (0, 0, 3) alone settles at radius 3.
    resolution, c = 16, np.array([8, 8, 8])
    query = voxel_centre((c + np.array([-0.4, -0.4, 0.45]))[None], resolution)
    for offsets, expected in (
        ([(1, 1, 1), (0, 0, 2)], 1),
        ([(1, 1, 1)], 0),
        ([(0, 0, 3), (2, 2, 2)], 0),
    ):
        coords = c + np.array(offsets)
        attrs = np.arange(len(offsets), dtype=np.float32)[:, None]
        got = assert_triton_equals_torch(coords, attrs, resolution, query, triton_device)
        assert got[0, 0] == expected
        assert field_sample_reference(coords, attrs, resolution, query)[0, 0] == expected


def test_triton_known_answers(triton_device: str) -> None:
    # Duplicates read their first row: trilinear, cube search and brute force.
    coords = np.array([[2, 2, 2], [5, 5, 5], [2, 2, 2], [5, 5, 5]])
    attrs = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    points = voxel_centre([[2, 2, 2], [5, 5, 5], [4, 2, 2], [7, 7, 6], [12, 12, 12]], 8)
    got = assert_triton_equals_torch(coords, attrs, 8, points, triton_device)
    assert got[:, 0].tolist() == [1.0, 2.0, 1.0, 2.0, 2.0]
    # Cube-search ties go to the earlier offset, then the nearer voxel wins.
    query = voxel_centre([[8, 8, 8]], 16)
    for offsets, expected in (([(1, 0, 0), (-1, 0, 0)], 1.0), ([(1, 1, 1), (0, 1, 0)], 1.0)):
        coords = np.array([8, 8, 8]) + np.array(offsets)
        attrs = np.arange(len(offsets), dtype=np.float32)[:, None]
        got = assert_triton_equals_torch(coords, attrs, 16, query, triton_device)
        assert got[0, 0] == expected
    # Absent corners are renormalised away: linear in x between two voxels.
    coords, attrs = np.array([[1, 1, 1], [2, 1, 1]]), np.array([[0.0], [10.0]], np.float32)
    t = np.linspace(0, 1, 11)
    cells = np.stack((1 + t, 1.3 + 0 * t, 0.8 + 0 * t), 1)
    got = assert_triton_equals_torch(coords, attrs, 4, voxel_centre(cells, 4), triton_device)
    np.testing.assert_allclose(got[:, 0], 10 * t, rtol=0, atol=KNOWN_ATOL)
    # A single voxel at R = 1 is read everywhere, far points included.
    far = np.random.default_rng(6).uniform(-20, 20, (20, 3)).astype(np.float32)
    got = assert_triton_equals_torch(np.zeros((1, 3), np.int64), attrs[1:], 1, far, triton_device)
    assert np.all(got == 10.0)


def test_triton_on_a_full_grid_and_many_channels(triton_device: str) -> None:
    # Every voxel present (all 8 neighbours inside the grid, some outside at its border), and
    # channel counts either side of the channel tile (MAX_CHANNEL_BLOCK = 16).
    resolution = 6
    coords = np.array(list(itertools.product(range(resolution), repeat=3)))
    rng = np.random.default_rng(7)
    queries = voxel_centre(rng.uniform(-1, resolution, (300, 3)), resolution)
    for channels in (1, 3, 16, 17):
        attrs = rng.normal(size=(len(coords), channels)).astype(np.float32)
        assert_triton_equals_torch(coords, attrs, resolution, queries, triton_device)


def test_triton_edge_shapes(triton_device: str) -> None:
    coords, attrs = random_field(8, 30, 8)
    no_points = np.zeros((0, 3), np.float32)
    assert assert_triton_equals_torch(coords, attrs, 8, no_points, triton_device).shape == (0, 3)
    points = points_around(8, coords, 8, 10)
    got = assert_triton_equals_torch(coords, attrs[:, :0], 8, points, triton_device)
    assert got.shape == (10, 0)
    # A grid too fine for int32 cells: the torch path, same answer.
    coarse = coords * 2**18
    fine = voxel_centre(coarse, 2**21)
    assert_triton_equals_torch(coarse, attrs, 2**21, fine, triton_device)


def test_triton_on_a_shell_field(triton_device: str, full_size: bool) -> None:
    # Natively: a 1M-voxel shell at R = 1024 and 4M points near it; under the interpreter a
    # small one. Also deterministic: the same bits twice.
    resolution, voxels, count = (1024, 1_000_000, 4_000_000) if full_size else (48, 3000, 2000)
    coords, attrs, radius = shell_field(resolution, voxels, 3, seed=8)
    queries = shell_points(resolution, radius, count, seed=9)
    got = assert_triton_equals_torch(coords, attrs, resolution, queries, triton_device)
    c, a, p = (torch.from_numpy(x).to(triton_device) for x in (coords, attrs, queries))
    assert np.array_equal(_field_sample_triton(c, a, resolution, p).cpu().numpy(), got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="dispatch to Triton happens on CUDA")
@pytest.mark.gpu
def test_field_sample_sends_cuda_tensors_to_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args: object) -> torch.Tensor:
        calls.append(args[3].device.type)
        return _field_sample_triton(*args)

    monkeypatch.setattr(field_sample_module, "_field_sample_triton", spy)
    coords, attrs = random_field(1, 50, 8)
    points = points_around(1, coords, 8, 30)
    args = [torch.from_numpy(x) for x in (coords, attrs, points)]
    field_sample(args[0].cuda(), args[1].cuda(), 8, args[2].cuda())
    field_sample(args[0], args[1], 8, args[2])
    assert calls == ["cuda"]


def test_rejects_non_finite_values_and_mixed_devices() -> None:
    coords, attrs = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 1)
    points = torch.zeros(4, 3)
    points[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        field_sample(coords, attrs, 4, points)
    with pytest.raises(ValueError, match="finite"):
        field_sample(coords, attrs / 0, 4, torch.zeros(4, 3))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="one device"):
            field_sample(coords, attrs, 4, torch.zeros(4, 3, device="cuda"))
