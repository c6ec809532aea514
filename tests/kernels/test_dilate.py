"""dilate / nearest_filled (scipy's exact EDT on the CPU, jump flooding on CUDA) against
dilate_reference (brute force), and `_jump_flood` itself, which is plain torch, on the CPU.

Ties between equally near filled texels are broken differently by each path (scipy's scan
order, the first jump-flood tap, the reference's lowest index), so results are compared by the
distance to the chosen texel, and by value only where the nearest filled texel is unique.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.dilate import _jump_flood, dilate, dilate_reference, nearest_filled

# JFA+1 (jump flooding plus one extra step-1 pass) is near-exact. Measured on the CPU: over 60
# random masks up to 130^2 texels (0.1 % to 30 % filled) the worst chosen texel was 1.28 texels
# farther than the true nearest, on 16 of 300k texels; over 300 small masks with 2-3 filled
# texels (the worst case), 1.24 texels, on 7 of 130k.
JFA_MAX_EXCESS_TEXELS = 1.5
JFA_MAX_MISS_FRACTION = 1e-3
# Distances recomputed in float64 from integer offsets: equal means equal to this.
DISTANCE_ATOL = 1e-9

# (height, width, fraction filled): single texel, lines, block +- 1 around the jump steps'
# powers of two, and a "large" non-square image.
RANDOM_CASES = [
    (1, 1, 1.0),
    (1, 9, 0.2),
    (9, 1, 0.2),
    (2, 3, 0.3),
    (15, 17, 0.05),
    (16, 16, 0.01),
    (31, 33, 0.1),
    (64, 65, 0.002),
    (127, 93, 0.02),
    (40, 41, 0.5),
    (130, 257, 0.004),
]


def random_mask(seed: int, height: int, width: int, fraction: float) -> np.ndarray:
    """[H, W] bool with about `fraction` filled and at least one filled texel."""
    rng = np.random.default_rng(seed)
    filled = rng.random((height, width)) < fraction
    filled[rng.integers(height), rng.integers(width)] = True
    return filled


def exact_distances(filled: np.ndarray) -> np.ndarray:
    """[H, W] float64 Euclidean distance to the nearest filled texel, by brute force."""
    height, width = filled.shape
    sources = np.argwhere(filled)
    ys, xs = np.mgrid[0:height, 0:width]
    best = np.full((height, width), np.inf)
    for start in range(0, len(sources), 256):  # bounded memory for dense masks
        chunk = sources[start : start + 256]
        d2 = (ys[..., None] - chunk[:, 0]) ** 2 + (xs[..., None] - chunk[:, 1]) ** 2
        best = np.minimum(best, d2.min(-1))
    return np.sqrt(best)


def chosen_distances(source: np.ndarray, width: int) -> np.ndarray:
    """[H, W] float64 distance from each texel to the flat index `source` it was given."""
    height = source.shape[0]
    ys, xs = np.mgrid[0:height, 0:width]
    return np.hypot(source // width - ys, source % width - xs)


def index_image(filled: np.ndarray, seed: int) -> np.ndarray:
    """[H, W, 3] float64: channel 0 the flat index (so a copied texel says where it came
    from), channels 1-2 random values; empty texels hold NaN so an unwritten one shows."""
    rng = np.random.default_rng(seed)
    height, width = filled.shape
    image = np.concatenate(
        (
            np.arange(height * width, dtype=np.float64).reshape(height, width, 1),
            rng.uniform(0, 1, (height, width, 2)),
        ),
        axis=-1,
    )
    image[~filled] = np.nan
    return image


def assert_nearest(
    source: np.ndarray,
    filled: np.ndarray,
    max_excess: float,
    max_miss_fraction: float = JFA_MAX_MISS_FRACTION,
) -> None:
    """source [H, W] flat indices: filled texels point at themselves, every source is filled,
    no texel is sent more than `max_excess` texels farther than its nearest filled one, and at
    most `max_miss_fraction` of them farther at all."""
    height, width = filled.shape
    assert source.dtype == np.int64 and source.shape == filled.shape
    assert source.min() >= 0 and source.max() < height * width
    assert filled.reshape(-1)[source].all()
    own = np.arange(height * width).reshape(height, width)
    assert np.array_equal(source[filled], own[filled])
    excess = chosen_distances(source, width) - exact_distances(filled)
    assert excess.min() > -DISTANCE_ATOL  # nothing nearer than the nearest: the oracle is sane
    assert excess.max() <= max_excess + DISTANCE_ATOL
    assert (excess > DISTANCE_ATOL).mean() <= (max_miss_fraction if max_excess > 0 else 0)


def max_excess_on(device: str) -> float:
    """0 where nearest_filled is the exact EDT (CPU), the JFA+1 tolerance on CUDA."""
    return 0.0 if device == "cpu" else JFA_MAX_EXCESS_TEXELS


# --- nearest_filled and dilate on each device ------------------------------------------------


@pytest.mark.parametrize(("height", "width", "fraction"), RANDOM_CASES)
def test_nearest_filled_is_the_nearest(
    device: str, height: int, width: int, fraction: float
) -> None:
    filled = random_mask(height * width, height, width, fraction)
    source = nearest_filled(torch.from_numpy(filled).to(device)).cpu().numpy()
    assert_nearest(source, filled, max_excess_on(device))


@pytest.mark.parametrize(("height", "width", "fraction"), RANDOM_CASES)
def test_dilate_matches_reference(device: str, height: int, width: int, fraction: float) -> None:
    filled = random_mask(height + width, height, width, fraction)
    image = index_image(filled, height)
    out = dilate(torch.from_numpy(image).to(device), torch.from_numpy(filled).to(device))
    out = out.cpu().numpy()
    expected = dilate_reference(image, filled)
    assert out.dtype == image.dtype and out.shape == image.shape
    # Every texel holds some filled texel's whole value (index and colour together), filled
    # texels are unchanged, and the copied texel is the nearest one (exactly, on the CPU).
    source = out[..., 0].astype(np.int64)
    assert np.array_equal(out, image.reshape(height * width, 3)[source])
    assert_nearest(source, filled, max_excess_on(device))
    # Where the nearest filled texel is unique, the reference copied the same one. (Their
    # distances agree everywhere: the reference is exact too.)
    exact = exact_distances(filled)
    expected_source = expected[..., 0].astype(np.int64)
    np.testing.assert_allclose(chosen_distances(expected_source, width), exact, atol=DISTANCE_ATOL)
    if device == "cpu":
        unique = unique_nearest(filled, exact)
        assert np.array_equal(out[unique], expected[unique])


def unique_nearest(filled: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """[H, W] bool: texels with exactly one filled texel at the nearest distance."""
    height, width = filled.shape
    sources = np.argwhere(filled)
    ys, xs = np.mgrid[0:height, 0:width]
    ties = np.zeros((height, width), np.int64)
    for start in range(0, len(sources), 256):
        chunk = sources[start : start + 256]
        d = np.hypot(ys[..., None] - chunk[:, 0], xs[..., None] - chunk[:, 1])
        ties += (np.abs(d - exact[..., None]) <= DISTANCE_ATOL).sum(-1)
    return ties == 1


def test_single_filled_texel_fills_everything(device: str) -> None:
    filled = np.zeros((5, 7), bool)
    filled[3, 1] = True
    image = np.zeros((5, 7, 4), np.uint8)
    image[3, 1] = (10, 20, 30, 255)
    out = dilate(torch.from_numpy(image).to(device), torch.from_numpy(filled).to(device))
    assert out.dtype == torch.uint8
    assert (out.cpu().numpy() == [10, 20, 30, 255]).all()


def test_two_halves_fill_towards_their_own_side(device: str) -> None:
    # Columns 0 and 5 filled with 1 and 2 on a 3 x 6 image: columns 1-2 are nearer column 0,
    # columns 3-4 nearer column 5; the row is a known answer with no ties.
    filled = np.zeros((3, 6), bool)
    filled[:, [0, 5]] = True
    image = np.zeros((3, 6, 1), np.float32)
    image[:, 0], image[:, 5] = 1, 2
    out = dilate(torch.from_numpy(image).to(device), torch.from_numpy(filled).to(device))
    assert np.array_equal(out.cpu().numpy()[..., 0], np.tile([1, 1, 1, 2, 2, 2], (3, 1)))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_nothing_or_everything_filled_leaves_the_image(device: str, fraction: float) -> None:
    filled = np.full((4, 6), fraction > 0)
    image = np.random.default_rng(0).uniform(size=(4, 6, 3)).astype(np.float32)
    out = dilate(torch.from_numpy(image).to(device), torch.from_numpy(filled).to(device))
    assert np.array_equal(out.cpu().numpy(), image)
    assert np.array_equal(dilate_reference(image, filled), image)
    source = nearest_filled(torch.from_numpy(filled).to(device)).cpu().numpy()
    expected = np.arange(24).reshape(4, 6) if fraction > 0 else np.full((4, 6), -1)
    assert np.array_equal(source, expected)


def test_is_deterministic(device: str) -> None:
    filled = random_mask(1, 200, 150, 0.01)
    image = torch.from_numpy(index_image(filled, 1)).to(device)
    mask = torch.from_numpy(filled).to(device)
    assert torch.equal(dilate(image, mask), dilate(image, mask))


@pytest.mark.parametrize(
    ("image_shape", "filled_shape", "expected"),
    [
        ((4, 5), (4, 5), r"\[H, W, C\]"),
        ((4, 5, 3), (5, 4), r"\[H, W\]"),
        ((4, 5, 3), (4, 5, 3), r"\[H, W\]"),
    ],
)
def test_rejects_bad_shapes(image_shape: tuple, filled_shape: tuple, expected: str) -> None:
    image, filled = torch.zeros(image_shape), torch.zeros(filled_shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=expected):
        dilate(image, filled)
    with pytest.raises(ValueError, match=expected):
        dilate_reference(image.numpy(), filled.numpy())


# --- Jump flooding, run on the CPU -----------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "fraction"), RANDOM_CASES)
def test_jump_flood_is_within_tolerance(height: int, width: int, fraction: float) -> None:
    filled = random_mask(height * width + 1, height, width, fraction)
    source = _jump_flood(torch.from_numpy(filled)).numpy()
    assert_nearest(source, filled, JFA_MAX_EXCESS_TEXELS)


def test_jump_flood_within_tolerance_on_many_masks() -> None:
    # Two or three filled texels in small images: the Voronoi layouts where jump flooding
    # misses most often (here 6 texels in 2 of the 200 masks, the worst 1.24 texels too far).
    total_misses = total_texels = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        height, width = int(rng.integers(8, 33)), int(rng.integers(8, 33))
        filled = np.zeros((height, width), bool)
        seeds = rng.choice(height * width, int(rng.integers(2, 4)), replace=False)
        filled.reshape(-1)[seeds] = True
        source = _jump_flood(torch.from_numpy(filled)).numpy()
        assert_nearest(source, filled, JFA_MAX_EXCESS_TEXELS, max_miss_fraction=1.0)
        excess = chosen_distances(source, width) - exact_distances(filled)
        total_misses += int((excess > DISTANCE_ATOL).sum())
        total_texels += excess.size
    assert total_misses <= JFA_MAX_MISS_FRACTION * total_texels


def test_jump_flood_is_exact_on_simple_masks() -> None:
    # One filled texel, one row or column, and one filled rectangle: no Voronoi corners for the
    # flood to cut, so every texel finds an exactly nearest filled texel.
    rng = np.random.default_rng(7)
    masks = []
    for _ in range(60):
        height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        single = np.zeros((height, width), bool)
        single[rng.integers(height), rng.integers(width)] = True
        line = random_mask(int(rng.integers(1 << 30)), 1, width, 0.2)
        block = np.zeros((height, width), bool)
        y0, x0 = rng.integers(height), rng.integers(width)
        block[y0 : y0 + rng.integers(1, height + 1), x0 : x0 + rng.integers(1, width + 1)] = True
        masks += [single, line, line.T.copy(), block]
    for filled in masks:
        source = _jump_flood(torch.from_numpy(filled)).numpy()
        assert_nearest(source, filled, max_excess=0.0)


def test_jump_flood_with_nothing_filled_finds_nothing() -> None:
    source = _jump_flood(torch.zeros(5, 3, dtype=torch.bool))
    assert (source == -1).all()


def test_jump_flood_is_deterministic() -> None:
    filled = torch.from_numpy(random_mask(5, 100, 77, 0.01))
    assert torch.equal(_jump_flood(filled), _jump_flood(filled))
