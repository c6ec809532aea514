"""texture_fit: the conjugate-gradient fit reaches the dense least-squares solution; an exact
texture stays as it is; texels no sample reads keep their value bit for bit; the fit
reconstructs a colour that varies within a texel better than texel-centre samples do, at
points it was not fitted to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.quarter_normal import quarter_samples
from pipeline.texture_fit import fit_texture, fit_texture_reference
from tests.kernels.test_quarter_normal import bilinear_at

# float32 sums of a few thousand terms against float64.
FLOAT32_TOLERANCE = 1e-5
# CG steps that take the tiny systems below to the dense solution.
CONVERGED_STEPS = 200


def random_case(seed: int, H: int, W: int, share: float = 0.6):
    generator = torch.Generator().manual_seed(seed)
    texture = torch.rand(H, W, 3, generator=generator)
    colours = torch.rand(2 * H, 2 * W, 3, generator=generator)
    inside = torch.rand(2 * H, 2 * W, generator=generator) < share
    return texture, colours, inside


@pytest.mark.parametrize(
    ("seed", "H", "W", "share"), [(0, 6, 7, 0.6), (1, 9, 4, 0.2), (2, 5, 5, 1.0)]
)
def test_the_fit_reaches_the_dense_least_squares_solution(seed, H, W, share):
    texture, colours, inside = random_case(seed, H, W, share)
    fitted = fit_texture(texture, colours, inside, steps=CONVERGED_STEPS)
    expected = fit_texture_reference(texture.numpy(), colours.numpy(), inside.numpy())
    assert np.abs(fitted.numpy() - expected).max() < FLOAT32_TOLERANCE


def test_an_exact_texture_is_kept():
    texture, _, inside = random_case(3, 12, 10)
    colours = quarter_samples(texture)  # what the texture already reconstructs
    fitted = fit_texture(texture, colours, inside)
    assert (fitted - texture).abs().max() < FLOAT32_TOLERANCE


def test_texels_no_sample_reads_keep_their_value_exactly():
    texture, colours, _ = random_case(4, 16, 16)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[2:10, 3:12] = True  # quarter points of texels 1..4 x 1..5
    fitted = fit_texture(texture, colours, inside)
    # Quarter point k is read by texels floor(k / 2) - 1 .. floor(k / 2) + 1.
    reached = torch.zeros(16, 16, dtype=torch.bool)
    reached[0:6, 0:7] = True
    assert torch.equal(fitted[~reached], texture[~reached])
    assert not torch.equal(fitted[reached], texture[reached])


def test_the_fit_reconstructs_a_colour_between_texel_centres_better():
    # A colour that turns within a few texels, on a round patch: the texel-centre texture
    # flattens its peaks; the fit must do better at points it never saw (eighth points).
    H = W = 24

    def colour(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            (
                0.5 + 0.4 * torch.sin(1.3 * x),
                0.5 + 0.4 * torch.cos(0.9 * y),
                0.5 + 0.3 * torch.sin(x + y),
            ),
            -1,
        ).float()

    def on_patch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - 12) ** 2 + (y - 12) ** 2 < 8**2

    grid = lambda n, step, offset: torch.arange(n, dtype=torch.float64) * step + offset  # noqa: E731
    ys, xs = torch.meshgrid(grid(H, 1, 0.5), grid(W, 1, 0.5), indexing="ij")
    texture = colour(xs, ys)
    qy, qx = torch.meshgrid(grid(2 * H, 0.5, 0.25), grid(2 * W, 0.5, 0.25), indexing="ij")
    fitted = fit_texture(texture, colour(qx, qy), on_patch(qx, qy))
    ey, ex = torch.meshgrid(grid(8 * H, 0.125, 0.0625), grid(8 * W, 0.125, 0.0625), indexing="ij")
    probe = on_patch(ex, ey)
    truth = colour(ex, ey)[probe]
    error_centres = (bilinear_at(texture.double(), ex, ey)[probe] - truth).pow(2).mean()
    error_fitted = (bilinear_at(fitted.double(), ex, ey)[probe] - truth).pow(2).mean()
    assert error_fitted < 0.5 * error_centres


def test_same_input_same_bits():
    texture, colours, inside = random_case(5, 33, 17)
    assert torch.equal(fit_texture(texture, colours, inside), fit_texture(texture, colours, inside))


def test_bad_shapes_are_refused():
    texture, colours, inside = random_case(6, 4, 4)
    with pytest.raises(ValueError, match="colours must be"):
        fit_texture(texture, colours[:-1], inside)
    with pytest.raises(ValueError, match="inside must be"):
        fit_texture(texture, colours, inside.float())
    with pytest.raises(ValueError, match="texture must be"):
        fit_texture(texture[:1], colours[:2], inside[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu_and_repeats_bit_for_bit():
    texture, colours, inside = random_case(8, 257, 129)
    on_cpu = fit_texture(texture, colours, inside)
    args = (texture.cuda(), colours.cuda(), inside.cuda())
    first, second = fit_texture(*args), fit_texture(*args)
    assert torch.equal(first, second)
    assert (first.cpu() - on_cpu).abs().max() < 1e-4
