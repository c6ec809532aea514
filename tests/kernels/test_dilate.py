"""dilate / nearest_filled (scipy's exact EDT on the CPU, jump flooding in Triton on CUDA)
against dilate_reference (brute force); `_jump_flood` itself, which is plain torch, on the CPU;
and the Triton path `_flood_triton` called directly on `triton_device`, against `_jump_flood`
exactly (same seeds, bit for bit).

Ties between equally near filled texels are broken differently by each path (scipy's scan
order, the first jump-flood tap, the reference's lowest index), so results are compared by the
distance to the chosen texel, and by value only where the nearest filled texel is unique.

Natively on the GPU machine: `python -m pytest -m gpu tests/kernels/test_dilate.py`; here,
under the interpreter: `TRITON_INTERPRET=1 python -m pytest tests/kernels/test_dilate.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

import kernels.dilate as dilate_module
from kernels.dilate import (
    BLOCK_X,
    BLOCK_Y,
    _flood_triton,
    _jump_flood,
    _packing,
    dilate,
    dilate_reference,
    nearest_filled,
)

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


# --- The Triton path, on triton_device ---------------------------------------------------------

# Under the interpreter, most cases run as one tile per pass: it pays about 0.1 s a tile per
# pass, whatever the tile's size. The cases marked "native" run the GPU's own tile, so that
# block +- 1 sides cross the same tile edges as there. Natively, every case runs on the GPU's.
NATIVE_BLOCK = (BLOCK_Y, BLOCK_X)
# (height, width, fraction filled, tile): one texel, 1 x N and N x 1, a small odd image, block
# +- 1 on both sides, and a larger non-square one. JFA+1 is exact on all but the last, which
# has 1 near-miss in its 155,100 texels (0.83 texels too far), well within the tolerance.
TRITON_CASES = [
    (1, 1, 1.0, "one"),
    (1, 200, 0.05, "one"),
    (BLOCK_Y + 1, 1, 0.1, "native"),
    (37, 23, 0.05, "one"),
    (BLOCK_Y - 1, BLOCK_X - 1, 0.02, "native"),
    (BLOCK_Y + 1, BLOCK_X + 1, 0.01, "native"),
    (300, 517, 0.01, "one"),
]


def tile(device: str, height: int, width: int, kind: str = "one") -> tuple[int, int]:
    """The tile to run: the GPU's natively or when `kind` says "native", else (under the
    interpreter) one tile covering the image, up to 128 x 1024 (more costs the interpreter
    more per texel than the tiles it saves)."""
    if device != "cpu" or kind == "native":
        return NATIVE_BLOCK
    return min(128, next_power_of_2(height)), min(1024, next_power_of_2(width))


def next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# Atlas-like masks at 4096^2, ~40 % empty (atlas_mask): JFA+1 near-misses measured with the
# torch path (bit-identical to Triton) against scipy's exact transform, seeds 5-8: 157, 120,
# 537 and 96 texels (at most 3.2e-5 of them), the worst 2.15, 2.33, 4.40 and 3.23 texels
# farther than the nearest, out in the wide empty space where a few texels make no visible
# difference. The test runs seed 5.
JFA_ATLAS_MAX_EXCESS_TEXELS = 5.0
JFA_ATLAS_MAX_MISS_FRACTION = 5e-5


def atlas_mask(seed: int, height: int, width: int, empty: float = 0.4) -> np.ndarray:
    """[H, W] bool laid out like a texture atlas: charts (rectangles and wobbly blobs) packed
    on shelves with gutters between them, packing stopped once `1 - empty` of the texels are
    filled, so the rest of the atlas is empty space (within 1 % of `empty` from 300^2 up,
    within 4 % at 32^2 to 128^2)."""
    rng = np.random.default_rng(seed)
    filled = np.zeros((height, width), bool)
    side = min(height, width)
    gutter = max(1, side // 512)
    smallest, largest = max(8, side // 40), max(16, side // 8)  # chart cells, in texels
    target = (1 - empty) * height * width
    count = y = 0
    while y < height and count < target:
        shelf = int(rng.integers(smallest, largest + 1))
        x = 0
        while x < width and count < target:
            cell_width = int(rng.integers(smallest, largest + 1))
            cell_height = int(shelf * rng.uniform(0.8, 1.0))
            chart = filled[y + gutter : y + cell_height, x + gutter : x + cell_width]  # a view
            if chart.size:
                v, u = np.mgrid[-1 : 1 : chart.shape[0] * 1j, -1 : 1 : chart.shape[1] * 1j]
                radius, angle = np.hypot(u, v) / np.sqrt(2), np.arctan2(v, u)
                lobes = int(rng.integers(2, 7))
                wobble = rng.uniform(0, 0.2) * (1 + np.sin(lobes * angle + rng.uniform(0, 7)))
                chart[:] = True if rng.random() < 0.4 else radius <= 1 - wobble
                count += int(chart.sum())
            x += cell_width + gutter
        y += shelf + gutter
    return filled


def excess_over_exact(source: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """[H, W] float64: how much farther (texels) each texel's source is than the nearest filled
    texel, from exact integer squared distances (scipy's exact transform; any image size)."""
    height, width = filled.shape
    ys, xs = np.mgrid[0:height, 0:width]
    chosen = (source // width - ys) ** 2 + (source % width - xs) ** 2
    nearest = distance_transform_edt(~filled, return_distances=False, return_indices=True)
    exact = (nearest[0] - ys) ** 2 + (nearest[1] - xs) ** 2
    return np.sqrt(chosen) - np.sqrt(exact)


@pytest.mark.parametrize(("height", "width", "fraction", "kind"), TRITON_CASES)
def test_triton_equals_torch_jump_flood(
    triton_device: str, height: int, width: int, fraction: float, kind: str
) -> None:
    filled = random_mask(height * width + 2, height, width, fraction)
    image = index_image(filled, height)  # [H, W, 3] float64, channel 0 its own flat index
    out = torch.full(image.shape, np.nan, dtype=torch.float64, device=triton_device)
    _flood_triton(
        torch.from_numpy(filled).to(triton_device),
        torch.from_numpy(image).to(triton_device),
        out=out,
        block=tile(triton_device, height, width, kind),
    )
    out = out.cpu().numpy()
    assert not np.isnan(out).any()  # every texel written, and from a filled one
    source = out[..., 0].astype(np.int64)
    assert np.array_equal(source, _jump_flood(torch.from_numpy(filled)).numpy())
    assert np.array_equal(out, image.reshape(height * width, 3)[source])  # whole texels
    excess = excess_over_exact(source, filled)
    assert excess.min() > -DISTANCE_ATOL
    assert excess.max() <= JFA_MAX_EXCESS_TEXELS + DISTANCE_ATOL
    assert (excess > DISTANCE_ATOL).mean() <= JFA_MAX_MISS_FRACTION


@pytest.mark.parametrize(("height", "width"), [(1, 1), (37, 23)])
def test_triton_nearest_index_equals_torch(triton_device: str, height: int, width: int) -> None:
    filled = random_mask(height + width, height, width, 0.02)
    out = torch.full((height, width), -2, dtype=torch.long, device=triton_device)
    block = tile(triton_device, height, width)
    _flood_triton(torch.from_numpy(filled).to(triton_device), out=out, block=block)
    assert np.array_equal(out.cpu().numpy(), _jump_flood(torch.from_numpy(filled)).numpy())


def test_triton_single_filled_texel_fills_everything(triton_device: str) -> None:
    filled = np.zeros((11, 7), bool)
    filled[9, 1] = True
    image = np.zeros((11, 7, 4), np.uint8)
    image[9, 1] = (10, 20, 30, 255)
    mask = torch.from_numpy(filled).to(triton_device)
    out = torch.full(image.shape, 77, dtype=torch.uint8, device=triton_device)
    block = tile(triton_device, *filled.shape)
    _flood_triton(mask, torch.from_numpy(image).to(triton_device), out=out, block=block)
    assert (out.cpu().numpy() == [10, 20, 30, 255]).all()
    assert (_flood_triton(mask, block=block).cpu().numpy() == 9 * 7 + 1).all()


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_triton_nothing_or_everything_filled_leaves_the_image(
    triton_device: str, fraction: float
) -> None:
    filled = np.full((5, 6), fraction > 0)
    image = np.random.default_rng(2).uniform(size=(5, 6, 3)).astype(np.float32)
    mask = torch.from_numpy(filled).to(triton_device)
    out = torch.full(image.shape, np.nan, device=triton_device)
    block = tile(triton_device, *filled.shape)
    _flood_triton(mask, torch.from_numpy(image).to(triton_device), out=out, block=block)
    assert np.array_equal(out.cpu().numpy(), image)
    expected = np.arange(30).reshape(5, 6) if fraction > 0 else np.full((5, 6), -1)
    assert np.array_equal(_flood_triton(mask, block=block).cpu().numpy(), expected)


def test_triton_keeps_the_keep_mask(triton_device: str) -> None:
    # Kept empty texels hold their own value (a marker no other texel may receive), all other
    # texels are exactly what they are without `keep`, and the torch path agrees.
    rng = np.random.default_rng(3)
    filled = random_mask(3, 37, 23, 0.05)
    keep = rng.random(filled.shape) < 0.3
    image = index_image(filled, 3)
    image[keep & ~filled] = -7.0
    args = [torch.from_numpy(a).to(triton_device) for a in (filled, image, keep)]
    block = tile(triton_device, *filled.shape)
    out = _flood_triton(*args, block=block).cpu().numpy()
    kept = keep & ~filled
    assert np.array_equal(out[kept], image[kept])
    assert not (out[~kept] == -7.0).any()
    without = _flood_triton(*args[:2], block=block).cpu().numpy()
    assert np.array_equal(out[~kept], without[~kept])
    torch_out = dilate(*(torch.from_numpy(a) for a in (image, filled, keep)), method="jump_flood")
    assert np.array_equal(out, torch_out.numpy(), equal_nan=True)


@pytest.mark.parametrize(
    ("dtype", "channels"),
    [(torch.uint8, 3), (torch.float32, 1), (torch.bool, 2), (torch.int64, 4), (torch.float16, 3)],
)
def test_triton_gathers_any_dtype(triton_device: str, dtype: torch.dtype, channels: int) -> None:
    filled = torch.from_numpy(random_mask(4, 9, 13, 0.1))
    image = (torch.rand(9, 13, channels, generator=torch.Generator().manual_seed(4)) * 200).to(
        dtype
    )
    block = tile(triton_device, *filled.shape)
    out = _flood_triton(filled.to(triton_device), image.to(triton_device), block=block).cpu()
    assert out.dtype == dtype and torch.equal(out, dilate(image, filled, method="jump_flood"))


def test_triton_full_size_atlas(triton_device: str, full_size: bool) -> None:
    if not full_size:
        pytest.skip("4096^2 runs natively on the GPU only")
    filled = atlas_mask(5, 4096, 4096)
    assert 0.38 < 1 - filled.mean() < 0.42
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.integers(0, 256, (4096, 4096, 3), dtype=np.uint8))
    mask = torch.from_numpy(filled).to(triton_device)
    source = _flood_triton(mask)
    assert torch.equal(source, _jump_flood(mask))  # torch on the same GPU
    out = torch.zeros(4096, 4096, 3, dtype=torch.uint8, device=triton_device)
    out[~mask] = 1  # no colour is all ones, so an unwritten empty texel shows
    image[torch.from_numpy(filled)] |= 2
    _flood_triton(mask, image.to(triton_device), out=out)
    assert torch.equal(out.cpu(), image.reshape(-1, 3)[source.cpu().reshape(-1)].reshape(out.shape))
    excess = excess_over_exact(source.cpu().numpy(), filled)
    assert excess.max() <= JFA_ATLAS_MAX_EXCESS_TEXELS
    assert (excess > DISTANCE_ATOL).mean() <= JFA_ATLAS_MAX_MISS_FRACTION


# --- Dispatch ----------------------------------------------------------------------------------


@pytest.fixture
def triton_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each call of the Triton path (and still runs it)."""
    calls: list[str] = []
    real = dilate_module._flood_triton

    def spy(filled: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(filled.device.type)
        return real(filled, *args, **kwargs)

    monkeypatch.setattr(dilate_module, "_flood_triton", spy)
    return calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="dispatch to Triton is for CUDA")
def test_auto_sends_cuda_to_triton(triton_calls: list[str]) -> None:
    filled = torch.from_numpy(random_mask(6, 40, 50, 0.05)).cuda()
    image = torch.rand(40, 50, 3, device="cuda")
    assert torch.equal(nearest_filled(filled), _jump_flood(filled))
    source = _jump_flood(filled).reshape(-1)
    assert torch.equal(dilate(image, filled), image.reshape(-1, 3)[source].reshape(image.shape))
    assert triton_calls == ["cuda", "cuda"]


def test_auto_keeps_cpu_on_the_exact_transform(triton_calls: list[str]) -> None:
    filled = torch.from_numpy(random_mask(7, 20, 30, 0.05))
    dilate(torch.rand(20, 30, 3), filled)
    nearest_filled(filled)
    assert triton_calls == []


def test_methods_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    filled = torch.ones(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="method must be one of"):
        nearest_filled(filled, "nearest")
    monkeypatch.setattr(dilate_module, "triton", None)
    with pytest.raises(ValueError, match="needs the triton package"):
        dilate(torch.zeros(3, 4, 1), filled, method="triton")


def test_triton_encoding_limits() -> None:
    # 4096^2 packs seeds as (y << 12) | x with int32 distances; a side near 20k needs int64
    # distances; a strip a million texels long does not fit, and "auto" falls back to torch.
    assert _packing(4096, 4096)[0] == 12 and not _packing(4096, 4096)[2]
    assert _packing(20000, 20000)[2]
    assert _packing(1, 10**6) is None


def test_keep_on_every_path(device: str) -> None:
    # Kept empty texels hold their own value (NaN here); every other texel is filled from a
    # nearest filled texel, as the reference's, up to JFA's tolerance on CUDA.
    filled = random_mask(8, 12, 15, 0.1)
    keep = np.random.default_rng(8).random(filled.shape) < 0.5
    image = index_image(filled, 8)
    out = dilate(*(torch.from_numpy(a).to(device) for a in (image, filled, keep))).cpu().numpy()
    kept = keep & ~filled
    for result in (out, dilate_reference(image, filled, keep)):
        assert np.array_equal(result[kept], image[kept], equal_nan=True)
        assert not np.isnan(result[~kept]).any()
        own = np.arange(filled.size).reshape(filled.shape)
        source = np.where(kept, own, np.nan_to_num(result[..., 0])).astype(np.int64)
        excess = chosen_distances(source, filled.shape[1]) - exact_distances(filled)
        assert excess[~kept].max() <= max_excess_on(device) + DISTANCE_ATOL


def test_triton_wide_distances_agree(triton_device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sides past ~14k texels need int64 squared distances (_packing's `wide`); forced here on a
    # small image, the flood must not change.
    filled = torch.from_numpy(random_mask(9, 37, 23, 0.05)).to(triton_device)
    expected = _flood_triton(filled, block=tile(triton_device, 37, 23))
    shift, sentinel, _ = _packing(37, 23)
    monkeypatch.setattr(dilate_module, "_packing", lambda H, W: (shift, sentinel, True))
    assert torch.equal(_flood_triton(filled, block=tile(triton_device, 37, 23)), expected)
