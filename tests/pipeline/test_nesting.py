"""nest_pieces and nest_faces: small pieces dropped into the room large pieces' boxes leave,
checked for the gutter between every two pieces, the texture's bounds, and a scale at least
the shelf packing's (larger where there is room to use); and the raster layout CUDA takes
instead (every piece by its shape), run here on the first fit's numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline.nesting as nesting
import pipeline.raster_layout as raster_layout
from pipeline.nesting import nest_faces, nest_pieces
from pipeline.packing import pack_rectangles, texel_corners

SIZE = 256
GUTTER = 2


def ragged_pieces(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Large L-shaped pieces (four triangles in an L, a big empty corner in their box) and
    many single small triangles: corners [F, 3, 2] in model units, piece [F]."""
    rng = np.random.default_rng(seed)
    corners, piece = [], []
    for p in range(6):
        w = rng.uniform(2.0, 3.0)
        bar = [[0, 0], [w, 0], [w, 0.5]], [[0, 0], [w, 0.5], [0, 0.5]]
        foot = [[0, 0.5], [0.5, 0.5], [0.5, w]], [[0, 0.5], [0.5, w], [0, w]]
        for triangle in (*bar, *foot):
            corners.append(triangle)
            piece.append(p)
    for p in range(6, 306):
        a, b = rng.uniform(0.05, 0.2, 2)
        corners.append([[0, 0], [a, 0], [0, b]])
        piece.append(p)
    return torch.tensor(corners, dtype=torch.float64), torch.tensor(piece)


def layout(corners: torch.Tensor, piece: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """-> texel corners [F, 3, 2] of the nested layout, its scale, the shelf packing's."""
    count = int(piece.max()) + 1
    lo = torch.stack([corners[piece == p].reshape(-1, 2).amin(0) for p in range(count)])
    hi = torch.stack([corners[piece == p].reshape(-1, 2).amax(0) for p in range(count)])
    extents = (hi - lo).numpy()
    shelved = pack_rectangles(extents, SIZE, GUTTER)
    packing = nest_pieces(corners, piece, lo, extents, shelved, SIZE, GUTTER)
    return texel_corners(corners, piece, lo, packing), packing.scale, shelved.scale


def assert_gutters(texels: torch.Tensor, piece: torch.Tensor) -> None:
    """Faces of different pieces: their boxes grown by half the gutter do not overlap."""
    lo = texels.amin(1).numpy() - GUTTER / 2
    hi = texels.amax(1).numpy() + GUTTER / 2
    apart = (lo[:, None, :] >= hi[None, :, :] - 1e-9) | (hi[:, None, :] <= lo[None, :, :] + 1e-9)
    clash = ~apart.any(2) & (piece.numpy()[:, None] != piece.numpy()[None, :])
    assert not clash.any(), np.argwhere(clash)[:5]


def test_nested_layout_keeps_gutters_bounds_and_beats_shelves() -> None:
    corners, piece = ragged_pieces(0)
    texels, scale, shelf_scale = layout(corners, piece)
    assert scale > shelf_scale * 1.05  # the small triangles fill the L's empty corners
    assert float(texels.min()) >= GUTTER / 2 - 1e-9
    assert float(texels.max()) <= SIZE - GUTTER / 2 + 1e-9
    assert_gutters(texels, piece)


def test_nesting_is_deterministic() -> None:
    corners, piece = ragged_pieces(1)
    first, second = layout(corners, piece), layout(corners.clone(), piece.clone())
    assert first[1] == second[1]
    assert torch.equal(first[0], second[0])


def test_only_shelves_where_nothing_is_small() -> None:
    corners, piece = ragged_pieces(2)
    large = piece < 6
    _, scale, shelf_scale = layout(corners[large], piece[large])
    assert scale == shelf_scale


def test_moved_faces_go_into_free_room_and_the_rest_stay() -> None:
    corners, piece = ragged_pieces(3)
    texels, _, _ = layout(corners, piece)
    moving = torch.zeros(len(piece), dtype=torch.bool)
    moving[[0, 5, 30]] = True  # faces of two L pieces and one small triangle
    moved = nest_faces(texels, moving, SIZE, GUTTER)
    assert moved is not None
    assert torch.equal(moved[~moving], texels[~moving])
    assert not torch.equal(moved[moving], texels[moving])
    # Each moved face is a piece of its own now, a gutter from everything else.
    alone = torch.where(moving, len(piece) + torch.arange(len(piece)), piece)
    assert_gutters(moved, alone)
    # Unturned: each moved face's shape is its old one, shifted (and scaled by at most 4).
    old = texels[moving] - texels[moving].amin(1, keepdim=True)
    new = moved[moving] - moved[moving].amin(1, keepdim=True)
    ratio = (new.norm(dim=2).sum(1) / old.norm(dim=2).sum(1)).numpy()
    assert np.isin(np.round(ratio, 9), [1.0, 0.5, 0.25]).all()


def test_no_room_for_moved_faces_is_none() -> None:
    # One piece filling the texture: a moved face has nowhere to go.
    full = torch.tensor(
        [[[0, 0], [SIZE, 0], [SIZE, SIZE]], [[0, 0], [SIZE, SIZE], [0, SIZE]]], dtype=torch.float64
    )
    moving = torch.tensor([False, True])
    assert nest_faces(full, moving, SIZE, GUTTER) is None


# --- the raster layout (pipeline/raster_layout.py: CUDA's path, run here on the reference) ---


@pytest.fixture
def raster_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nesting, "RASTER_ON_CPU", True)
    monkeypatch.setattr(nesting, "RASTER_TRIALS", 8)


def test_raster_layout_keeps_gutters_and_bounds_and_beats_the_nesting(
    raster_on_cpu, monkeypatch
) -> None:
    corners, piece = ragged_pieces(0)
    texels, scale, shelf_scale = layout(corners, piece)
    monkeypatch.setattr(nesting, "RASTER_ON_CPU", False)
    _, nested_scale, _ = layout(corners, piece)
    # The L pieces interlock and the triangles fill their corners, anywhere, not on a lattice.
    assert scale > nested_scale * 1.05 > shelf_scale
    assert float(texels.min()) >= GUTTER / 2 - 1e-9
    assert float(texels.max()) <= SIZE - GUTTER / 2 + 1e-9
    assert_gutters(texels, piece)


def test_raster_layout_is_deterministic(raster_on_cpu) -> None:
    corners, piece = ragged_pieces(1)
    first, second = layout(corners, piece), layout(corners.clone(), piece.clone())
    assert first[1] == second[1]
    assert torch.equal(first[0], second[0])


def test_past_raster_max_pieces_the_nesting_lays_them(raster_on_cpu, monkeypatch) -> None:
    corners, piece = ragged_pieces(2)
    monkeypatch.setattr(nesting, "RASTER_MAX_PIECES", int(piece.max()))  # one piece too many
    capped = layout(corners, piece)
    monkeypatch.setattr(nesting, "RASTER_ON_CPU", False)
    assert torch.equal(capped[0], layout(corners, piece)[0])


def test_raster_cells_wider_than_the_gutter_keep_it(raster_on_cpu, monkeypatch) -> None:
    """Past MAX_GRID cells across, cells grow wider than the gutter (here 8 texels for a
    2-texel gutter): pieces are then at least the gutter apart still, inside the texture."""
    monkeypatch.setattr(raster_layout, "MAX_GRID", SIZE // 8)
    corners, piece = ragged_pieces(4)
    texels, scale, shelf_scale = layout(corners, piece)
    assert scale > shelf_scale
    assert float(texels.min()) >= GUTTER / 2 - 1e-9
    assert float(texels.max()) <= SIZE - GUTTER / 2 + 1e-9
    assert_gutters(texels, piece)
    monkeypatch.setattr(raster_layout, "MAX_GRID", SIZE // GUTTER)  # cells of the gutter
    assert not torch.equal(layout(corners, piece)[0], texels)  # laid on the finer grid


def _drop_windows_reference(
    taken: np.ndarray, count: int, width: int, height: int, every_shift: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The lattice rule window by window: each shift in turn, its free windows in row order
    taken by the members still waiting -> (members' (x, y) cells or -1, taken after)."""
    taken = taken.copy()
    grid = len(taken)
    where = np.full((count, 2), -1, np.int64)
    done = 0
    for ox, oy in nesting._shifts(width, height, every_shift):
        for y in range(oy, grid - height + 1, height):
            for x in range(ox, grid - width + 1, width):
                if done < count and not taken[y : y + height, x : x + width].any():
                    taken[y : y + height, x : x + width] = True
                    where[done] = x, y
                    done += 1
    return where, taken


@pytest.mark.parametrize("every_shift", [False, True])
def test_window_drops_follow_the_lattice_rule(every_shift: bool) -> None:
    # Counts that the first lattice holds (the later ones skipped) and counts that spill into
    # the shifted lattices or find no room at all.
    rng = np.random.default_rng(5)
    spilled = 0
    for trial in range(300):
        grid = int(rng.integers(6, 20))
        taken = rng.random((grid, grid)) < rng.choice([0.0, 0.2, 0.5])
        width, height = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        count = int(rng.integers(1, 3 + grid * grid // (width * height)))
        expected, expected_taken = _drop_windows_reference(taken, count, width, height, every_shift)
        on_device = torch.from_numpy(taken.copy())
        got = nesting._drop_windows(on_device, count, width, height, every_shift)
        assert np.array_equal(got, expected), trial
        assert np.array_equal(on_device.numpy(), expected_taken), trial
        first = nesting._shifts(width, height, every_shift)[0]
        placed = expected[:, 0] >= 0
        spilled += bool(((expected[placed] - first) % (width, height)).any())
    assert spilled >= 10  # the shifted lattices were exercised, not only the first
