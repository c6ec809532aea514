"""fill_ring: the torch path (each device) and the Triton kernel (natively on CUDA, under the
interpreter on the CPU) against the numpy reference, bit for bit, with and without charts, on
one to five channels and partial tiles; ring texels that are covered or have no covered
neighbour keep their value; the chart rule is exercised (ties inside one chart and across
two); bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.ring_fill import RING_TAPS, _ring_torch, _ring_triton, fill_ring, fill_ring_reference


def ring_of(covered: torch.Tensor) -> torch.Tensor:
    """The uncovered texels with a covered one among their 8 neighbours."""
    grown = torch.nn.functional.max_pool2d(covered[None, None].float(), 3, 1, 1)[0, 0] > 0
    return grown & ~covered


def case(seed: int, H: int, W: int, C: int, share: float, charts: int, dtype=torch.float32):
    """A random coverage with its 8-neighbour ring plus stray ring texels (covered ones and
    ones with no covered neighbour), random colours, a face per covered texel in `charts`
    random charts (one face id -1)."""
    generator = torch.Generator().manual_seed(seed)
    covered = torch.rand(H, W, generator=generator) < share
    ring = ring_of(covered) | (torch.rand(H, W, generator=generator) < 0.05)
    image = torch.rand(H, W, C, generator=generator, dtype=torch.float64).to(dtype)
    face_ids = torch.full((H, W), -1, dtype=torch.long)
    face_ids[covered] = torch.randperm(int(covered.sum()), generator=generator)
    face_ids[tuple(torch.nonzero(covered)[0])] = -1  # out of range: read as face 0 everywhere
    chart = torch.randint(0, charts, (int(covered.sum()),), generator=generator)
    return image, covered, ring, (face_ids, chart)


def reference(image, covered, ring, charts) -> np.ndarray:
    arrays = None if charts is None else tuple(t.cpu().numpy() for t in charts)
    return fill_ring_reference(
        image.cpu().numpy(), covered.cpu().numpy(), ring.cpu().numpy(), arrays
    )


def on(device: str, image, covered, ring, charts):
    moved = None if charts is None else tuple(t.to(device) for t in charts)
    return image.to(device), covered.to(device), ring.to(device), moved


SHAPES = [(13, 17, 3, 0.3, 3), (40, 33, 5, 0.1, 4), (8, 128, 1, 0.5, 1), (31, 150, 3, 0.05, 6)]


def shaped_case(shape: tuple, seed: int, with_charts: bool, dtype=torch.float32):
    """`case` for one of SHAPES (H, W, C, share, charts), the charts dropped unless asked."""
    H, W, C, share, charts = shape
    image, covered, ring, labels = case(seed + H * W + C, H, W, C, share, charts, dtype)
    return image, covered, ring, labels if with_charts else None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_charts", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_path_matches_the_reference(
    device: str, shape: tuple, with_charts: bool, dtype: torch.dtype
) -> None:
    inputs = shaped_case(shape, 0, with_charts, dtype)
    out = _ring_torch(*on(device, *inputs))
    np.testing.assert_array_equal(out.cpu().numpy(), reference(*inputs))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_charts", [False, True])
def test_triton_kernel_matches_the_reference(
    triton_device: str, shape: tuple, with_charts: bool
) -> None:
    inputs = shaped_case(shape, 1, with_charts)
    args = on(triton_device, *inputs)
    out = _ring_triton(*args, block=(8, 128))
    np.testing.assert_array_equal(out.cpu().numpy(), reference(*inputs))
    assert torch.equal(_ring_triton(*args, block=(8, 128)), out)  # the same bits twice


def test_the_chart_rule_is_exercised_and_others_keep_their_value() -> None:
    image, covered, ring, labels = case(3, 40, 33, 3, 0.1, 4)
    plain = fill_ring(image, covered, ring)
    charted = fill_ring(image, covered, ring, labels)
    face_ids, chart = labels
    H, W = covered.shape
    label = chart[face_ids.clamp(min=0)]  # [H, W] each covered texel's chart
    ties = mixed = means = 0
    for y, x in torch.nonzero(ring & ~covered).tolist():
        taps = [(y + dy, x + dx) for dy, dx in RING_TAPS]
        ok = [0 <= ty < H and 0 <= tx < W and bool(covered[ty, tx]) for ty, tx in taps]
        near = [p for p, o in zip(taps[:4], ok[:4], strict=True) if o]
        near = near or [p for p, o in zip(taps[4:], ok[4:], strict=True) if o]
        if not near:  # no covered neighbour: its own value
            assert torch.equal(charted[y, x], image[y, x]) and torch.equal(plain[y, x], image[y, x])
            continue
        assert torch.equal(plain[y, x], image[near[0]])  # without charts: the first alone
        same = [p for p in near if label[p] == label[near[0]]]
        ties += len(near) > 1
        mixed += len(same) < len(near)
        means += len(same) > 1
        expected = torch.stack([image[p] for p in same]).mean(0)
        torch.testing.assert_close(charted[y, x], expected, rtol=0, atol=1e-6)
    assert ties and mixed and means  # ties within one chart and across two occur
    outside = ~(ring & ~covered)
    assert torch.equal(charted[outside], image[outside]) and torch.equal(
        plain[outside], image[outside]
    )


def test_fill_ring_takes_edge_neighbours_before_diagonals_in_a_fixed_order() -> None:
    covered = torch.zeros(5, 6, dtype=torch.bool)
    covered[0, 0] = covered[0, 1] = covered[1, 0] = True  # (1, 1): edges (0, 1), (1, 0)
    covered[4, 5] = True  # (3, 4): only the diagonal (+1, +1); (4, 4): its right neighbour
    image = torch.arange(30, dtype=torch.float32).reshape(5, 6, 1).expand(5, 6, 2).clone()
    ring = ring_of(covered)
    out = fill_ring(image, covered, ring)
    assert out[1, 1, 0] == 1  # up before left, and both before the diagonal (0, 0)
    assert out[1, 2, 0] == 1 and out[2, 1, 0] == 6  # only diagonals: (-1, -1) first
    assert out[3, 4, 0] == 29 and out[4, 4, 0] == 29 and out[3, 5, 0] == 29
    assert torch.equal(out[~ring], image[~ring]) and torch.equal(out[..., 0], out[..., 1])
    strided = torch.cat((image, image), 2)[..., ::2]  # a view with other strides
    assert not strided.is_contiguous() and torch.equal(fill_ring(strided, covered, ring), out)
    stray = ring | torch.eye(5, 6, dtype=torch.bool)  # (0, 0) covered, (2, 2) no neighbour
    assert torch.equal(fill_ring(image, covered, stray), out)


def test_fill_ring_with_charts_takes_the_mean_of_the_nearest_in_the_first_ones_chart() -> None:
    covered = torch.zeros(5, 6, dtype=torch.bool)
    covered[0, 0] = covered[0, 1] = covered[1, 0] = True
    covered[2, 0] = covered[2, 2] = covered[4, 5] = True
    image = torch.arange(30, dtype=torch.float32).reshape(5, 6, 1).expand(5, 6, 2).clone()
    ring = ring_of(covered)
    face_ids = torch.full((5, 6), -1)
    face_ids[covered] = torch.arange(6)  # faces 0..5 in row-major order
    one_chart = torch.zeros(6, dtype=torch.long)
    out = fill_ring(image, covered, ring, (face_ids, one_chart))
    assert out[1, 1, 0] == (1 + 6) / 2  # its two edge neighbours, not the diagonal (0, 0)
    assert out[2, 1, 0] == (12 + 14) / 2  # left and right
    assert out[3, 1, 0] == (12 + 14) / 2  # diagonals alone: the two covered ones
    assert out[1, 2, 0] == 14 and out[3, 4, 0] == 29  # one nearest: its colour
    # (2, 0) and (2, 2) in charts of their own: a tie between them takes the first tap's.
    apart = torch.tensor([0, 0, 0, 1, 2, 3])
    split = fill_ring(image, covered, ring, (face_ids, apart))
    assert split[2, 1, 0] == 12 and split[3, 1, 0] == 12  # left, then up-left, first
    assert split[1, 1, 0] == (1 + 6) / 2  # (0, 1) and (1, 0) share chart 0
    plain = fill_ring(image, covered, ring)  # no charts: the first tap's everywhere
    assert torch.equal(split[2:], plain[2:]) and plain[1, 1, 0] == 1
    assert torch.equal(out[~ring], image[~ring]) and torch.equal(out[..., 0], out[..., 1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fill_ring_is_the_cpu_fill_ring_at_a_texture_size() -> None:
    image, covered, ring, labels = case(11, 1024, 1024, 5, 0.4, 50)
    cpu = fill_ring(image, covered, ring, labels)
    cuda = fill_ring(*on("cuda", image, covered, ring, labels))
    assert torch.equal(cuda.cpu(), cpu)


def test_bad_arguments_are_refused() -> None:
    image, covered, ring, labels = case(5, 8, 9, 3, 0.3, 2)
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        fill_ring(image[..., 0], covered, ring)
    with pytest.raises(ValueError, match="ring must be"):
        fill_ring(image, covered, ring[:4])
    with pytest.raises(ValueError, match="face_ids must be"):
        fill_ring(image, covered, ring, (labels[0][:, :3], labels[1]))
    strided = torch.cat((image, image), 2)[..., :3]  # any strides in, a contiguous image out
    out = fill_ring(strided, covered, ring, labels)
    assert out.is_contiguous() and torch.equal(out, fill_ring(image, covered, ring, labels))
