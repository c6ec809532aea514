"""pack_rectangles: layouts written out by hand, and invariants on random chart sets (charts
inside the texture, never overlapping, at least the gutter apart); first_fit_shelves: the
room a shelf that closed early leaves is filled, and the same invariants; cell_corners: any
number of charts, each in a cell of its own at its own scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.packing import (
    BISECTION_STEPS,
    box_sizes,
    cell_corners,
    first_fit_shelves,
    pack_rectangles,
    shelves,
)

# (charts, texture side, gutter): one chart, odd gutters, block +- 1 texture sides, and a
# "large" set of charts.
RANDOM_CASES = [
    (1, 64, 2),
    (2, 16, 1),
    (7, 63, 3),
    (7, 65, 0),
    (50, 257, 2),
    (120, 1024, 4),
    (1000, 2048, 2),
]


def chart_rects(extents: np.ndarray, packing) -> np.ndarray:
    """[C, 4] int64 (x0, y0, x1, y1) texels each chart covers: its extents at the packing's
    scale, rounded up to a whole texel (at least one), turned when `transposed`."""
    sizes = np.maximum(np.ceil(np.maximum(extents, 0) * packing.scale), 1).astype(np.int64)
    sizes = np.where(packing.transposed[:, None], sizes[:, ::-1], sizes)
    return np.concatenate((packing.origins, packing.origins + sizes), axis=1)


def assert_valid_layout(rects: np.ndarray, size: int, gutter: int) -> None:
    """Inside the texture with half a gutter of margin, and every pair of charts separated by
    at least `gutter` texels along x or along y."""
    assert (rects[:, :2] >= gutter // 2).all()
    assert (rects[:, 2:] <= size - gutter // 2).all()
    x0, y0, x1, y1 = (rects[:, k] for k in range(4))
    gap_x = np.maximum(x0[None, :] - x1[:, None], x0[:, None] - x1[None, :])
    gap_y = np.maximum(y0[None, :] - y1[:, None], y0[:, None] - y1[None, :])
    apart = np.maximum(gap_x, gap_y) >= gutter
    np.fill_diagonal(apart, True)
    assert apart.all(), np.argwhere(~apart)[:5]


def random_extents(seed: int, count: int) -> np.ndarray:
    """[C, 2] chart extents in model units, log-normal, with a few slivers and empty charts."""
    rng = np.random.default_rng(seed)
    extents = rng.lognormal(0, 0.8, (count, 2)) * 0.05
    extents[rng.random((count, 2)) < 0.05] *= 0.01  # slivers
    extents[rng.random(count) < 0.02] = 0.0  # degenerate charts still get a texel
    return extents


# --- Known layouts --------------------------------------------------------------------------


def test_one_square_chart_fills_the_texture_less_the_gutter() -> None:
    # A box is ceil(scale) + 2 texels: the largest scale that fits 64 is 62, approached from
    # below by bisection to within 64 / 2^23.
    packing = pack_rectangles(np.array([[1.0, 1.0]]), 64, 2)
    assert 62 - 64 / 2 ** (BISECTION_STEPS - 1) <= packing.scale <= 62
    assert packing.origins.tolist() == [[1, 1]]
    assert packing.transposed.tolist() == [False]
    assert packing.origins.dtype == np.int64 and packing.transposed.dtype == bool


def test_two_squares_sit_side_by_side() -> None:
    packing = pack_rectangles(np.array([[1.0, 1.0], [1.0, 1.0]]), 64, 2)
    # Two boxes of ceil(scale) + 2 across 64 texels: scale 30.
    assert 30 - 64 / 2 ** (BISECTION_STEPS - 1) <= packing.scale <= 30
    assert packing.origins.tolist() == [[1, 1], [33, 1]]


def test_sixteen_squares_tile_a_four_by_four_grid() -> None:
    # The area bound sqrt(64^2 / 16) = 16 fits exactly at the first try: 16-texel cells.
    packing = pack_rectangles(np.ones((16, 2)), 64, 0)
    assert packing.scale == 16
    expected = [[16 * (k % 4), 16 * (k // 4)] for k in range(16)]
    assert packing.origins.tolist() == expected


def test_tall_charts_are_turned_to_lie_flat_and_shelves_go_tallest_first() -> None:
    extents = np.array([[1.0, 3.0], [2.0, 1.0], [4.0, 0.5]])
    packing = pack_rectangles(extents, 128, 2)
    assert packing.transposed.tolist() == [True, False, False]
    rects = chart_rects(extents, packing)
    widths, heights = rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]
    assert (widths >= heights).all()
    assert_valid_layout(rects, 128, 2)
    # Tallest (the turned 3 x 1) starts the first shelf at the top left.
    assert packing.origins[0].tolist() == [1, 1]


def test_empty_and_degenerate_charts() -> None:
    packing = pack_rectangles(np.zeros((0, 2)), 64, 2)
    assert packing.origins.shape == (0, 2) and packing.transposed.shape == (0,)
    # Charts with no extent (or a negative one, clamped to 0) still get a texel each.
    extents = np.array([[0.0, 0.0], [-1.0, 0.5], [0.5, 0.5]])
    packing = pack_rectangles(extents, 32, 2)
    rects = chart_rects(extents, packing)
    assert ((rects[:, 2:] - rects[:, :2]) >= 1).all()
    assert_valid_layout(rects, 32, 2)


def test_too_many_charts_for_the_texture_find_no_packing() -> None:
    # Every box is at least 1 + 4 texels square: ten pass the area bound (10 x 25 <= 16^2)
    # but only 3 x 3 fit on the shelves; eleven fail the bound itself.
    assert pack_rectangles(np.ones((10, 2)), 16, 4) is None
    assert pack_rectangles(np.ones((11, 2)), 16, 4) is None
    assert len(pack_rectangles(np.ones((9, 2)), 16, 4).origins) == 9


@pytest.mark.parametrize(("count", "size"), [(1, 8), (50, 4), (50, 64), (1000, 16)])
def test_cells_give_any_number_of_charts_a_cell_of_their_own(count: int, size: int) -> None:
    rng = np.random.default_rng(count + size)
    corners = torch.tensor(rng.normal(0, 1, (3 * count, 3, 2)))  # three faces per chart
    owner = torch.arange(count).repeat_interleave(3)
    lo = torch.full((count, 2), np.inf, dtype=torch.float64).scatter_reduce(
        0, owner[:, None].expand(-1, 2), corners.amin(1), "amin"
    )
    hi = torch.full((count, 2), -np.inf, dtype=torch.float64).scatter_reduce(
        0, owner[:, None].expand(-1, 2), corners.amax(1), "amax"
    )
    texels = cell_corners(corners, owner, lo, hi - lo, size).numpy()
    across = int(np.ceil(np.sqrt(count)))
    cell = size / across
    column, row = np.arange(count) % across, np.arange(count) // across
    first, last = texels.min(1), texels.max(1)  # per face
    eps = 1e-9
    assert (first[:, 0] >= column[owner] * cell - eps).all()
    assert (last[:, 0] <= (column[owner] + 1) * cell + eps).all()
    assert (first[:, 1] >= row[owner] * cell - eps).all()
    assert (last[:, 1] <= (row[owner] + 1) * cell + eps).all()
    # Each chart is scaled uniformly: texel distances are model distances times one factor.
    model = np.linalg.norm(corners.numpy()[:, 1] - corners.numpy()[:, 0], axis=1)
    laid = np.linalg.norm(texels[:, 1] - texels[:, 0], axis=1)
    factor = laid / model
    assert np.allclose(factor, np.repeat(factor[::3], 3))
    # The longer side of each chart spans the cell less a texel (half the cell below two).
    side = (hi - lo).amax(1).numpy() * factor[::3]
    assert np.allclose(side, max(cell - 1.0, 0.5 * cell))


# --- Random chart sets ------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "size", "gutter"), RANDOM_CASES)
def test_random_charts_never_overlap_and_stay_inside(count: int, size: int, gutter: int) -> None:
    extents = random_extents(count + size + gutter, count)
    packing = pack_rectangles(extents, size, gutter)
    assert packing.origins.shape == (count, 2) and packing.transposed.shape == (count,)
    assert packing.scale > 0
    rects = chart_rects(extents, packing)
    assert_valid_layout(rects, size, gutter)
    # Each chart lies flat; the texture is used reasonably (shelf packing of log-normal boxes
    # with gutters): more than a fifth of its area is chart.
    assert ((rects[:, 2] - rects[:, 0]) >= (rects[:, 3] - rects[:, 1])).all()
    if count > 1:
        assert np.prod(rects[:, 2:] - rects[:, :2], axis=1).sum() > 0.2 * size * size


def test_is_deterministic() -> None:
    extents = random_extents(3, 300)
    first, second = pack_rectangles(extents, 512, 2), pack_rectangles(extents, 512, 2)
    assert first.scale == second.scale
    assert np.array_equal(first.origins, second.origins)
    assert np.array_equal(first.transposed, second.transposed)


def next_fit_reference(sizes: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Box by box, tallest first (then widest, then by index): beside the last box on the
    current shelf where it fits, else on a new shelf above, as tall as its first box."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i, 1], -sizes[i, 0], i))
    origins = np.zeros((len(sizes), 2), np.int64)
    x = y = shelf_height = 0
    for i in order:
        w, h = int(sizes[i, 0]), int(sizes[i, 1])
        if w > width:
            return None
        if x + w > width:
            x, y, shelf_height = 0, y + shelf_height, 0
        if shelf_height == 0:
            shelf_height = h
            if y + h > height:
                return None
        origins[i] = (x, y)
        x += w
    return origins


@pytest.mark.parametrize("seed", range(4))
def test_shelves_match_a_box_by_box_next_fit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fitted = 0
    for _ in range(300):
        sizes = rng.integers(1, int(rng.integers(2, 70)), (int(rng.integers(0, 80)), 2))
        width, height = int(rng.integers(1, 200)), int(rng.integers(1, 400))
        expected, got = next_fit_reference(sizes, width, height), shelves(sizes, width, height)
        if expected is None:
            assert got is None
        else:
            assert got is not None and np.array_equal(got, expected)
            fitted += 1
    assert 50 < fitted < 300  # both outcomes seen


def test_box_sizes_of_many_scales_at_once_are_each_scale_s() -> None:
    extents = random_extents(5, 200)
    scales = 50 * 4 ** (np.arange(1, 33) / 32)
    sizes, flips = box_sizes(extents, scales[:, None, None], 3)
    assert sizes.shape == (32, 200, 2) and flips.shape == (32, 200)
    for k, scale in enumerate(scales):
        one_sizes, one_flips = box_sizes(extents, float(scale), 3)
        assert np.array_equal(sizes[k], one_sizes) and np.array_equal(flips[k], one_flips)
    assert flips.any() and not flips.all()


# --- First fit ------------------------------------------------------------------------------


def test_first_fit_fills_the_room_a_closed_shelf_left() -> None:
    # Tallest first, 100 wide: 60 x 40 opens a shelf; 60 x 30 does not fit beside it and
    # opens a second. Next fit puts both 30 x 20 boxes on the second shelf (one fits) and a
    # third (70 + 20 > 70 tall); first fit puts one beside each 60-wide box.
    sizes = np.array([[60, 40], [60, 30], [30, 20], [30, 20]])
    assert shelves(sizes, 100, 70) is None
    origins = first_fit_shelves(sizes, 100, 70)
    assert origins is not None
    assert origins.tolist() == [[0, 0], [0, 40], [60, 0], [60, 40]]


@pytest.mark.parametrize("seed", range(5))
def test_first_fit_never_overlaps_and_keeps_to_the_height(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, (200, 2))
    sizes = np.where((sizes[:, 1] > sizes[:, 0])[:, None], sizes[:, ::-1], sizes)  # flat
    first = first_fit_shelves(sizes, 256, 10**9)
    assert first is not None
    rects = np.concatenate((first, first + sizes), axis=1)
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= 256).all()
    x0, y0, x1, y1 = (rects[:, k] for k in range(4))
    apart = (x0[None] >= x1[:, None]) | (x0[:, None] >= x1[None]) | (y0[None] >= y1[:, None])
    apart |= y0[:, None] >= y1[None]
    np.fill_diagonal(apart, True)
    assert apart.all()
    assert first_fit_shelves(sizes, 256, int((first[:, 1] + sizes[:, 1]).max()) - 1) is None
