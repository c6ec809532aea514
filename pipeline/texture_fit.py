"""A texture fitted to bilinear sampling: least squares over sub-texel samples of the surface.

The judge samples the base-colour texture bilinearly with no mipmaps (SPEC: how the judge
renders). Texel-centre samples are the texture that bilinear sampling interpolates: exact
at the centres, between them the straight blend of four, which cuts every peak the colour has
between centres and flattens it at charts' edges. `fit_texture` instead finds the texture
whose bilinear reconstruction is closest, in least squares, to the colour at four points per
texel (the quarter points (x + 1/4, y + 1/4) ... (x + 3/4, y + 3/4) in texel units) that
lie on the surface, i.e. inside a face of the layout:

    min_T  sum_samples (B T - c)^2  +  weight * sum_texels (T - T0)^2

B is bilinear sampling at the quarter points: exactly a 2x bilinear upsampling (half-texel
centres, weights 3/4 and 1/4 per axis), separable, so B and its transpose are a handful of
shifted elementwise sums. T0 is the texel-centre bake; `weight` keeps texels that few samples
see (at charts' edges) near it and makes the system positive definite. Solved by conjugate
gradients from T0 (a fixed number of steps, no host syncs); the three channels are solved as
one system (same matrix). Texels no sample reads keep T0 exactly (their rows are weight * I).

Everything is float32 elementwise work and full-tensor sums in a fixed order: the same input
gives the same bits on a device. `fit_texture_reference` is the dense numpy solution of the
same problem, for the tests.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit_texture", "fit_texture_reference", "quarter_samples", "quarter_samples_adjoint"]

# Weight of a texel's pull towards its texel-centre value, against the sum of its samples'
# squared bilinear weights (1.5625 for a texel all of whose 16 quarter points in reach lie
# on the surface). Tuned on Duck and prompt 20 (perf/RESULTS.md): small enough to fit, large
# enough that an edge texel seen by one or two samples does not overshoot.
ANCHOR_WEIGHT = 0.1
# Conjugate-gradient steps: the system is well conditioned (the anchor weight bounds it), so
# the residual stops moving after ~16 (perf/RESULTS.md).
FIT_STEPS = 16


def _upsample_axis(values: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., n, ...] -> [..., 2n, ...]: bilinear at the quarter points along `dim`, zero beyond
    the ends (sample 2m = 1/4 T[m-1] + 3/4 T[m], sample 2m+1 = 3/4 T[m] + 1/4 T[m+1])."""
    n = values.shape[dim]
    zero = torch.zeros_like(values.narrow(dim, 0, 1))
    previous = torch.cat((zero, values.narrow(dim, 0, n - 1)), dim)
    following = torch.cat((values.narrow(dim, 1, n - 1), zero), dim)
    even = 0.25 * previous + 0.75 * values
    odd = 0.75 * values + 0.25 * following
    return torch.stack((even, odd), dim + 1).flatten(dim, dim + 1)


def _upsample_adjoint_axis(samples: torch.Tensor, dim: int) -> torch.Tensor:
    """The transpose of `_upsample_axis`: [..., 2n, ...] -> [..., n, ...]."""
    n = samples.shape[dim] // 2
    shape = list(samples.shape)
    shape[dim : dim + 1] = [n, 2]
    pairs = samples.reshape(shape)
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    zero = torch.zeros_like(even.narrow(dim, 0, 1))
    odd_before = torch.cat((zero, odd.narrow(dim, 0, n - 1)), dim)  # sample 2m - 1
    even_after = torch.cat((even.narrow(dim, 1, n - 1), zero), dim)  # sample 2m + 2
    return 0.75 * (even + odd) + 0.25 * (odd_before + even_after)


def quarter_samples(texture: torch.Tensor) -> torch.Tensor:
    """texture [H, W, C] -> [2H, 2W, C]: bilinear sampling at the texels' quarter points."""
    return _upsample_axis(_upsample_axis(texture, 0), 1)


def quarter_samples_adjoint(samples: torch.Tensor) -> torch.Tensor:
    """samples [2H, 2W, C] -> [H, W, C]: the transpose of `quarter_samples`."""
    return _upsample_adjoint_axis(_upsample_adjoint_axis(samples, 1), 0)


def _check(texture: torch.Tensor, colours: torch.Tensor, inside: torch.Tensor) -> None:
    if texture.ndim != 3 or texture.shape[0] < 2 or texture.shape[1] < 2:
        raise ValueError(f"texture must be [H >= 2, W >= 2, C], got {tuple(texture.shape)}")
    H, W, C = texture.shape
    if tuple(colours.shape) != (2 * H, 2 * W, C):
        raise ValueError(f"colours must be [{2 * H}, {2 * W}, {C}], got {tuple(colours.shape)}")
    if tuple(inside.shape) != (2 * H, 2 * W) or inside.dtype != torch.bool:
        raise ValueError(f"inside must be bool [{2 * H}, {2 * W}], got {tuple(inside.shape)}")
    if not (texture.device == colours.device == inside.device):
        raise ValueError("texture, colours and inside must be on one device")


def fit_texture(
    texture: torch.Tensor,
    colours: torch.Tensor,
    inside: torch.Tensor,
    steps: int = FIT_STEPS,
    weight: float = ANCHOR_WEIGHT,
) -> torch.Tensor:
    """texture [H, W, C] float32 (the texel-centre bake, T0), colours [2H, 2W, C] (the colour at
    each quarter point), inside [2H, 2W] bool (the quarter points on the surface) -> the fitted
    texture [H, W, C] float32, unclamped."""
    _check(texture, colours, inside)
    start = texture.float()
    mask = inside.float()[..., None]  # [2H, 2W, 1]

    def normal(values: torch.Tensor) -> torch.Tensor:  # (B^T M B + weight I) values
        return quarter_samples_adjoint(mask * quarter_samples(values)) + weight * values

    rhs = quarter_samples_adjoint(mask * colours.float()) + weight * start
    fitted = start.clone()
    residual = rhs - normal(fitted)
    direction = residual.clone()
    rr = (residual * residual).sum()
    for _ in range(steps):
        moved = normal(direction)
        length = rr / (direction * moved).sum().clamp_min(1e-30)
        fitted += length * direction
        residual -= length * moved
        rr_next = (residual * residual).sum()
        direction = residual + (rr_next / rr.clamp_min(1e-30)) * direction
        rr = rr_next
    return fitted


def _upsample_matrix(n: int) -> np.ndarray:
    """[2n, n]: `_upsample_axis` as a matrix."""
    matrix = np.zeros((2 * n, n))
    for m in range(n):
        matrix[2 * m, m] += 0.75
        matrix[2 * m + 1, m] += 0.75
        if m > 0:
            matrix[2 * m, m - 1] += 0.25
        if m < n - 1:
            matrix[2 * m + 1, m + 1] += 0.25
    return matrix


def fit_texture_reference(
    texture: np.ndarray, colours: np.ndarray, inside: np.ndarray, weight: float = ANCHOR_WEIGHT
) -> np.ndarray:
    """numpy twin of `fit_texture` solved exactly (dense normal equations, float64): small
    textures only (H * W unknowns per channel)."""
    H, W, C = texture.shape
    B = np.kron(_upsample_matrix(H), _upsample_matrix(W))  # [4HW, HW], row-major texels
    m = inside.reshape(-1).astype(np.float64)
    normal = B.T @ (m[:, None] * B) + weight * np.eye(H * W)
    rhs = B.T @ (m[:, None] * colours.reshape(-1, C)) + weight * texture.reshape(-1, C)
    return np.linalg.solve(normal, rhs).reshape(H, W, C)
