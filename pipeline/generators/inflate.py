"""The inflate generator: a watertight solid raised from the object's silhouette.

No weights. The silhouette is inflated with a round profile: u solves the Poisson problem
  laplacian(u) = -2 inside the silhouette, u = 0 outside,
and the half-thickness is H = sqrt(u), which gives every strip of half-width r a circular
cross-section of radius r (u = r^2 - x^2) whatever its width; holes stay holes because u is
0 on every boundary (the idea of Igarashi et al. 1999, "Teddy", and Johnston 2002, "Lumo").
The shell is extracted by sparse surface nets and coloured from the image: every voxel of a
column takes the image colour of that column, so the back mirrors the front.

The output is a RawAsset shaped as TRELLIS.2 emits: triangles plus a sparse voxel field of
the surface voxels (base colour, metallic, roughness, alpha), Z up, inside [-0.5, 0.5]^3.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

from pipeline.generators.shell import extract_shell
from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset

__all__ = ["InflateGenerator", "inflate_heights", "solve_inflation"]

log = logging.getLogger("pipeline.generate")

# Voxel material of the inflated solid: dielectric, fairly rough; chosen so the judge's single
# directional light gives soft shading rather than glare on image colours.
METALLIC = 0.0
ROUGHNESS = 0.8
# Multigrid for the inflation (Briggs et al., "A Multigrid Tutorial", 2000): full multigrid
# start, then V-cycles of red-black Gauss-Seidel smoothing with full-weighting restriction
# and bilinear prolongation. Tuned so the solution on a 385-node grid (resolution 384) is
# within 0.5 % of the exact discrete solution (tests/pipeline/test_inflate.py).
SMOOTHING_SWEEPS = 3
V_CYCLES = 2
COARSEST_NODES = 17
COARSEST_SWEEPS = 16
# A mask value above this at a node makes the node part of the solid.
INSIDE_LEVEL = 0.5


def _stencil(u: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours minus 4 u (zero outside the grid): h^2 times the Laplacian."""
    padded = F.pad(u[None, None], (1, 1, 1, 1))[0, 0]
    neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    return neighbours - 4 * u


def _smooth(
    u: torch.Tensor,
    rhs: torch.Tensor,
    colours: list[torch.Tensor],
    sweeps: int,
    omega: float = 1.0,
) -> torch.Tensor:
    """Red-black Gauss-Seidel (SOR when omega > 1) on stencil(u) = -rhs over `colours`."""
    for _ in range(sweeps):
        for colour in colours:
            u = torch.where(colour, u + omega * 0.25 * (_stencil(u) + rhs), u)
    return u


def _checkerboard(inside: torch.Tensor) -> list[torch.Tensor]:
    n = inside.shape[0]
    index = torch.arange(n, device=inside.device)
    parity = (index[:, None] + index[None, :]) % 2
    return [inside & (parity == 0), inside & (parity == 1)]


def _restrict(residual: torch.Tensor) -> torch.Tensor:
    """Full weighting onto the even nodes: [n, n] -> [(n + 1) / 2, (n + 1) / 2]."""
    kernel = torch.tensor(
        [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=residual.device
    )
    smoothed = F.conv2d(residual[None, None], (kernel / 16)[None, None], padding=1)[0, 0]
    return smoothed[::2, ::2]


def _prolong(coarse: torch.Tensor, n: int) -> torch.Tensor:
    return F.interpolate(coarse[None, None], size=(n, n), mode="bilinear", align_corners=True)[0, 0]


def _v_cycle(u: torch.Tensor, rhs: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    n = inside.shape[0]
    colours = _checkerboard(inside)
    if n <= COARSEST_NODES or (n - 1) % 2:
        # Solve this level outright: SOR at the optimal factor for an n x n square converges
        # in O(n) sweeps.
        omega = 2 / (1 + math.sin(math.pi / n))
        return _smooth(u, rhs, colours, max(COARSEST_SWEEPS, 2 * n), omega)
    u = _smooth(u, rhs, colours, SMOOTHING_SWEEPS)
    residual = torch.where(inside, rhs + _stencil(u), torch.zeros_like(u))
    # The error e solves stencil(e) = -residual; a coarse node spans two fine ones, so the
    # coarse stencil carries 4 times the fine right-hand side.
    coarse_inside = inside[::2, ::2]
    error = _v_cycle(
        torch.zeros_like(coarse_inside, dtype=u.dtype), 4 * _restrict(residual), coarse_inside
    )
    u = torch.where(inside, u + _prolong(error, n), u)
    return _smooth(u, rhs, colours, SMOOTHING_SWEEPS)


def solve_inflation(inside: torch.Tensor) -> torch.Tensor:
    """inside: [n, n] bool node mask -> u: [n, n] float32 with stencil(u) = -2 inside, 0 out."""
    n = inside.shape[0]
    rhs = torch.where(inside, 2.0, 0.0).float()
    if n > COARSEST_NODES and (n - 1) % 2 == 0:
        # Full multigrid: the coarser problem's solution is the starting point (u scales with
        # length squared: one coarse node is two fine ones).
        u = 4.0 * _prolong(solve_inflation(inside[::2, ::2]), n)
        u = torch.where(inside, u, torch.zeros_like(u))
    else:
        u = torch.zeros(n, n, device=inside.device)
    for _ in range(V_CYCLES):
        u = _v_cycle(u, rhs, inside)
    return u


def _cell_grid(image: PreparedImage, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prepared image resampled to the R x R cells of the (x, z) plane.

    Returns mask [R, R] and colour [R, R, 3], indexed [i, k] with i along +x (image columns)
    and k along +z (image rows, bottom to top).
    """
    mask = image.mask[None, None].float()
    premultiplied = (image.rgb.permute(2, 0, 1)[None] * mask).float()
    both = torch.cat((premultiplied, image.rgb.permute(2, 0, 1)[None].float(), mask), dim=1)
    cells = F.interpolate(both, size=(R, R), mode="bilinear", antialias=True, align_corners=False)[
        0
    ]  # [7, R rows, R cols]
    cells = cells.flip(1).permute(2, 1, 0)  # -> [i (x), k (z up), 7]
    cell_mask = cells[..., 6].clamp(0, 1)
    # Mask-weighted colour where the object covers the cell; the prepared (background-free)
    # colour at the silhouette's edge, so no background colour leaks into the side voxels.
    weighted = cells[..., 0:3] / cell_mask.clamp(min=1e-6)[..., None]
    colour = torch.where((cell_mask > 0.05)[..., None], weighted, cells[..., 3:6])
    return cell_mask, colour.clamp(0, 1)


def inflate_heights(cell_mask: torch.Tensor, depth: float) -> torch.Tensor:
    """[R, R] cell mask -> [R + 1, R + 1] signed half-thickness on the nodes (node units)."""
    R = cell_mask.shape[0]
    node_mask = F.avg_pool2d(F.pad(cell_mask[None, None], (1, 1, 1, 1)), 2, stride=1)[0, 0]
    inside = node_mask > INSIDE_LEVEL
    inside[0, :] = inside[-1, :] = inside[:, 0] = inside[:, -1] = False
    if not bool(inside.any()):  # a speck thinner than a node: keep the strongest node
        flat = torch.argmax(node_mask[1:-1, 1:-1])
        inside[1 + flat // (R - 1), 1 + flat % (R - 1)] = True
    u = solve_inflation(inside)
    # Outside nodes get a negative height proportional to how far the mask is below the
    # iso-level, so the silhouette crossing lands between nodes rather than on them.
    outside = (node_mask - INSIDE_LEVEL) * 2.0 - 0.05
    heights = torch.where(inside, depth * u.clamp(min=0).sqrt(), outside)
    # The solid must stay clear of the grid's y faces for the shell to close.
    return heights.clamp(max=R / 2 - 2)


class InflateGenerator:
    name = "inflate"

    def __init__(self, settings: PipelineSettings, device: torch.device) -> None:
        self.resolution = settings.resolution + settings.resolution % 2  # surface nets: R even
        self.depth = settings.inflate_depth
        self.device = device

    def generate(self, image: PreparedImage, seed: int) -> RawAsset:
        """Deterministic: the seed is accepted for the protocol and does not change the shape."""
        start = time.perf_counter()
        R = self.resolution
        image = image.to(self.device)
        # 1. The silhouette and colours on the R x R cells of the (x, z) plane.
        cell_mask, colour = _cell_grid(image, R)
        # 2. Inflate: the signed half-thickness on the nodes.
        heights = inflate_heights(cell_mask, self.depth)
        # 3. Extract the closed shell and its surface voxels.
        shell = extract_shell(heights)
        # 4. Colour the surface voxels from their column.
        cells = shell.cells
        rgb = colour[cells[:, 0], cells[:, 2]]
        attrs = torch.cat(
            (rgb, torch.tensor([METALLIC, ROUGHNESS, 1.0], device=rgb.device).expand(len(rgb), 3)),
            dim=1,
        )
        asset = RawAsset(
            vertices=(shell.vertices / R - 0.5).float(),
            faces=shell.faces,
            coords=cells.to(torch.int32),
            attrs=attrs.float().contiguous(),
            resolution=R,
        )
        log.info(
            "generate inflate: %dx%d image -> %d faces, %d voxels at %d^3, %.0f ms",
            image.mask.shape[1],
            image.mask.shape[0],
            len(asset.faces),
            len(asset.coords),
            R,
            (time.perf_counter() - start) * 1e3,
        )
        return asset
