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
import time

import torch
import torch.nn.functional as F

from pipeline.generators.shell import extract_shell
from pipeline.graphs import Repeated
from pipeline.settings import PipelineSettings
from pipeline.types import PreparedImage, RawAsset

__all__ = ["InflateGenerator", "inflate_heights", "solve_inflation"]

log = logging.getLogger("pipeline.generate")

# Voxel material of the inflated solid: dielectric, fairly rough; chosen so the judge's single
# directional light gives soft shading rather than glare on image colours.
METALLIC = 0.0
ROUGHNESS = 0.8
# Coarse-to-fine red-black SOR: each level starts from the coarser level's solution and
# relaxes SWEEPS_PER_LEVEL times. Measured against exact sparse solves at resolution 384
# (385 nodes): within 0.3 % (the crown prompt, thin parts) to 2.3 % (large blobs) of the peak,
# under a node of height everywhere. A textbook multigrid V-cycle was tried and diverged on real
# silhouettes: coarse grids made by node injection bridge one-node gaps and drop thin parts,
# so their corrections do not match the fine problem.
SOR_OMEGA = 1.9
SWEEPS_PER_LEVEL = 60
COARSEST_NODES = 17
COARSEST_SWEEPS = 200
# Sweeps replayed from a captured CUDA graph on CUDA (the tests compare both ways).
CAPTURE = True
# A mask value above this at a node makes the node part of the solid.
INSIDE_LEVEL = 0.5


def _relax(u: torch.Tensor, inside: torch.Tensor, sweeps: int) -> torch.Tensor:
    """Red-black SOR sweeps of laplacian(u) = -2 (node units), u = 0 where not inside. On
    CUDA one sweep is captured as a CUDA graph and replayed (pipeline/graphs.py): ~16 tiny
    kernels a sweep, 500 sweeps a solve at resolution 384."""
    n = u.shape[0]
    index = torch.arange(n, device=u.device)
    parity = (index[:, None] + index[None, :]) % 2
    colours = [inside & (parity == 0), inside & (parity == 1)]
    u = u.clone()  # updated in place by every sweep

    def sweep() -> None:
        for colour in colours:
            padded = F.pad(u[None, None], (1, 1, 1, 1))[0, 0]
            neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
            u.copy_(torch.where(colour, u + SOR_OMEGA * ((neighbours + 2.0) * 0.25 - u), u))

    sweeps_of = Repeated(sweep, u.device, capture=CAPTURE, name="inflate")
    sweeps_of(sweeps)
    sweeps_of.close()
    return u


def solve_inflation(inside: torch.Tensor) -> torch.Tensor:
    """inside: [n, n] bool node mask -> u: [n, n] float32, coarse-to-fine red-black SOR."""
    n = inside.shape[0]
    if n > COARSEST_NODES and (n - 1) % 2 == 0:
        coarse = solve_inflation(inside[::2, ::2])
        # u scales with length squared: one coarse node is two fine ones.
        u = (
            4.0
            * F.interpolate(coarse[None, None], size=(n, n), mode="bilinear", align_corners=True)[
                0, 0
            ]
        )
        u = torch.where(inside, u, torch.zeros_like(u))
        return _relax(u, inside, SWEEPS_PER_LEVEL)
    return _relax(torch.zeros(n, n, device=inside.device), inside, COARSEST_SWEEPS)


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

    def preprocess(self, image: PreparedImage) -> tuple[torch.Tensor, torch.Tensor]:
        """The silhouette and colours on the R x R cells of the (x, z) plane."""
        return _cell_grid(image.to(self.device), self.resolution)

    @torch.inference_mode()  # no autograd bookkeeping: 7-15% less time (perf/RESULTS.md)
    def generate(
        self,
        image: PreparedImage,
        seed: int,
        features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> RawAsset:
        """Deterministic: the seed is accepted for the protocol and does not change the shape.
        The asset's tensors are inference tensors (edit copies of them, not them, outside
        `torch.inference_mode()`), as are the post-processing's.

        features: `preprocess(image)`, when the pipeline already ran it (on a side stream).
        """
        start = time.perf_counter()
        R = self.resolution
        # 1. The silhouette and colours on the R x R cells of the (x, z) plane.
        cell_mask, colour = features if features is not None else self.preprocess(image)
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
