"""first_fit: shapes laid one after another at the first free place on a grid of cells.

The reference is checked on hand-made cases (a shape drops into another's notch, the order of
places, a shape without room ends its problem), and the Triton path `_first_fit_triton`,
called directly on `triton_device`, against the reference on random shapes, place for place.
`first_fit` itself runs the reference on CPU tensors.

Natively on the GPU machine: `python -m pytest -m gpu tests/kernels/test_first_fit.py`; here,
under the interpreter: `TRITON_INTERPRET=1 python -m pytest tests/kernels/test_first_fit.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kernels.first_fit as first_fit_module
from kernels.first_fit import _first_fit_triton, first_fit, first_fit_reference
from tests.triton_caches import compiled_variants


def pack(shapes: list[list[tuple[int, int]]], problems: int = 1) -> tuple[np.ndarray, ...]:
    """Shapes as lists of (lo, hi) rows, the same in every problem -> lo, hi, row_start, width."""
    rows = [row for shape in shapes for row in shape]
    lo = np.array([[a for a, _ in rows]] * problems, np.int32)
    hi = np.array([[b for _, b in rows]] * problems, np.int32)
    start = np.concatenate(([0], np.cumsum([len(shape) for shape in shapes])))
    width = [max(max(b for _, b in shape), 1) for shape in shapes]
    return lo, hi, np.array([start] * problems, np.int32), np.array([width] * problems, np.int32)


def random_shapes(
    rng: np.random.Generator, problems: int, count: int, grid: int, largest: int = 0
) -> tuple:
    """Each problem its own `count` shapes up to `largest` cells (half the grid by default):
    ragged rows, some empty."""
    largest = largest or max(grid // 2, 2)
    lo, hi, starts, widths = [], [], [], []
    for _ in range(problems):
        a_rows, b_rows, start, width = [], [], [0], []
        for _ in range(count):
            height, span = (int(v) for v in rng.integers(1, largest, 2))
            a = rng.integers(0, span, height)
            b = np.minimum(a + rng.integers(1, span + 1, height), span)
            empty = rng.random(height) < 0.15
            empty[0] = False
            a[empty], b[empty] = 0, 0
            a_rows += a.tolist()
            b_rows += b.tolist()
            start.append(start[-1] + height)
            width.append(max(int(b.max()), 1))
        lo.append(a_rows)
        hi.append(b_rows)
        starts.append(start)
        widths.append(width)
    rows = max(len(r) for r in lo)
    lo_array, hi_array = np.zeros((problems, rows), np.int32), np.zeros((problems, rows), np.int32)
    for s in range(problems):
        lo_array[s, : len(lo[s])], hi_array[s, : len(hi[s])] = lo[s], hi[s]
    return lo_array, hi_array, np.array(starts, np.int32), np.array(widths, np.int32)


def test_a_square_drops_into_the_notch_of_an_l() -> None:
    # An L: a foot 6 cells wide and 2 high, a stem 2 wide above it, 6 x 6 in all; then a
    # 4 x 4 square. Laid by boxes the square would go above the L (y = 6); by shape it sits
    # on the foot, beside the stem.
    ell = [(0, 6)] * 2 + [(0, 2)] * 4
    square = [(0, 4)] * 4
    placed = first_fit_reference(*pack([ell, square]), 8)
    assert placed[0].tolist() == [[0, 0], [2, 2]]


def test_places_go_lowest_row_first_then_leftmost() -> None:
    bar = [(0, 3)]
    placed = first_fit_reference(*pack([bar] * 5), 7)
    assert placed[0].tolist() == [[0, 0], [3, 0], [0, 1], [3, 1], [0, 2]]


def test_a_shape_without_room_ends_its_problem() -> None:
    # On a 6 x 6 grid two 3 x 3 squares fill the lower half; a 4-wide bar finds room above
    # them, a 7-wide one none, and the 1-cell shape after it stays out too.
    square, bar, wide, dot = [(0, 3)] * 3, [(0, 4)], [(0, 7)], [(0, 1)]
    placed = first_fit_reference(*pack([square, square, bar, wide, dot]), 6)
    assert placed[0, :3].tolist() == [[0, 0], [3, 0], [0, 3]]
    assert (placed[0, 3:] == -1).all()


def test_empty_rows_inside_a_shape_take_nothing() -> None:
    # A shape with an empty row: a bar as wide as the grid then fits in that row.
    gapped = [(0, 4), (0, 0), (0, 4)]
    placed = first_fit_reference(*pack([gapped, [(0, 4)]]), 4)
    assert placed[0].tolist() == [[0, 0], [0, 1]]


def test_first_fit_runs_the_reference_on_the_cpu_and_checks_shapes() -> None:
    arrays = random_shapes(np.random.default_rng(5), 2, 6, 16)
    got = first_fit(*(torch.from_numpy(a) for a in arrays), 16)
    assert np.array_equal(got.numpy(), first_fit_reference(*arrays, 16))
    lo, hi, start, width = (torch.from_numpy(a) for a in arrays)
    with pytest.raises(ValueError, match="row_start"):
        first_fit(lo, hi, start[:, :-1], width, 16)
    with pytest.raises(ValueError, match="lo and hi"):
        first_fit(lo[:1], hi, start, width, 16)


@pytest.mark.parametrize("seed", range(8))
def test_triton_places_every_shape_as_the_reference(
    triton_device: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed % 2:  # half the cases search 8 candidate rows a step (as from MANY_SHAPES)
        monkeypatch.setattr(first_fit_module, "MANY_SHAPES", 0)
    rng = np.random.default_rng(seed)
    grid = int(rng.integers(6, 40))
    arrays = random_shapes(rng, int(rng.integers(1, 4)), int(rng.integers(1, 30)), grid)
    expected = first_fit_reference(*arrays, grid)
    tensors = (torch.from_numpy(a).to(triton_device) for a in arrays)
    got = _first_fit_triton(*tensors, grid).cpu().numpy()
    assert np.array_equal(got, expected)
    assert (expected[..., 0] >= 0).any()


def test_triton_at_full_size(full_size: bool, triton_device: str) -> None:
    if not full_size:
        pytest.skip("the full-size grid runs natively on the GPU only")
    rng = np.random.default_rng(11)
    grid = 512
    arrays = random_shapes(rng, 2, 150, grid, largest=grid // 16)
    expected = first_fit_reference(*arrays, grid)
    got = _first_fit_triton(*(torch.from_numpy(a).to(triton_device) for a in arrays), grid)
    assert np.array_equal(got.cpu().numpy(), expected)
    assert (expected[..., 0] >= 0).all()  # small shapes: every one found a place


def test_after_compile_variants_no_count_compiles_the_kernel_again(
    full_size: bool, triton_device: str
) -> None:
    """A server's warm-up (`compile_variants`) leaves nothing to compile for later layouts:
    shape and row counts divisible by 16 or not, and at least MANY_SHAPES shapes."""
    if not full_size:
        pytest.skip("compiled variants exist natively on the GPU only")
    grid = 64
    first_fit_module.compile_variants(grid, torch.device(triton_device))
    before = compiled_variants(first_fit_module._first_fit_kernel)
    rng = np.random.default_rng(3)
    for count in (5, 16, 17, 32, first_fit_module.MANY_SHAPES, first_fit_module.MANY_SHAPES + 3):
        arrays = random_shapes(rng, 1, count, grid, largest=4)
        got = _first_fit_triton(*(torch.from_numpy(a).to(triton_device) for a in arrays), grid)
        assert np.array_equal(got.cpu().numpy(), first_fit_reference(*arrays, grid))
    assert compiled_variants(first_fit_module._first_fit_kernel) == before
