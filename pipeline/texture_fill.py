"""The baked texture's empty texels: the nearest chart colour where bilinear sampling reads
them, a fill that JPEG codes cheaply everywhere else.

Bilinear sampling of a point on the surface reads the texels whose centres lie within one texel
of it along each axis: texels of the (conservative) coverage and of the one-texel ring around
it. The ring takes the colour of its nearest covered texels, so a sample at a chart's edge
reads only that chart's colours: from the ring texel's 8 neighbours alone (the nearest covered
texels are among them: any other is at least 2 texels away), where several are nearest the mean
of those in the UV chart of the first of them (kernels/ring_fill.py; the bake passes each
face's chart, 0.7-0.8 ms on the H100 for the prompts' meshes). One Triton launch on CUDA
(0.40-0.43 ms at 2048² on the H100, where the jump flood that filled the whole texture before
took 0.40-0.58), torch on the CPU (0.09-0.14 s on a 2-core CPU, where the exact distance
transform took 0.35-0.58 s). The chart mean renders +0.00 to +0.12 dB over the first nearest
alone on seven prompts on the CPU path, +0.00 to +0.07 on CUDA (after the fit, which refits the
ring), beside the seams through the JPEG +0.04 to +0.11 and -0.01 to +0.09; the mean over every
nearest one mixed two charts' colours where their rings touch across a narrow gutter
(perf/RESULTS.md, 2026-11-25).

No sample of the surface reads any other texel, and the judge renders without mipmaps: what
they hold matters to the texture's encoding, and to mipmaps where a renderer makes them. A
nearest-colour fill there leaves a hard step wherever the regions of two charts meet, often
inside one of the 8 x 8 blocks JPEG codes, and the coarse quantisation of the block's high
frequencies rings into the charts' own texels. So:
  1. pull-push (as in Gortler et al., "The Lumigraph", 1996): the sampled texels' colour and
     count averaged 2 x 2 level by level up to one texel, then, from the top down, each
     level's texels that hold no sampled texel take the level above's colour, upsampled
     bilinearly: a smooth fill of the whole texture;
  2. then, per 8 x 8 block of the texture (JPEG's blocks: pipeline/jpeg.py encodes from the
     texture's corner), the free texels relaxed towards the block's harmonic fill (each the
     mean of its neighbours inside the block; SMOOTH_ROUNDS rounds of red-black successive
     over-relaxation from step 1's values, kernels/block_smooth.py), so each block holds as
     little high frequency as its sampled texels allow: a block of one flat chart and its
     fill is flat. A block with no sampled texel takes its mean (what the harmonic fill of
     nothing fixed is).
Every value is a weighted mean of chart colours: never a background, so mipmaps still average
chart colours only. Measured on the H100 (perf/RESULTS.md, 2026-11-24), the 24 prompts at the
384 grid against the nearest fill everywhere: through the default JPEG +0.02 to +1.15 dB of
render PSNR (median +0.14, seams +0.39), 14-49% fewer texture bytes, ~3 ms more at 2048²;
the texels that samples read the same bits.

Deterministic: fixed-order sums, pooling and upsampling (no atomics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.block_smooth import BLOCK, relax_blocks
from kernels.ring_fill import fill_ring

__all__ = ["block_smooth", "fill_texture", "pull_push", "sampled_texels"]

# JPEG's block side: pipeline/jpeg.py's strips are whole blocks from the texture's corner.
JPEG_BLOCK = BLOCK
# Red-black successive over-relaxation of each block's free texels, from the pull-push start.
# Scratch scripts on the 2-core CI CPU, flat random colours on small square charts in four
# layouts: 20 rounds at 1.7 came within 6% of the JPEG error of 400 rounds at 1.8, and within
# 8% of their bytes on three layouts (38% more on the one of the largest charts); 24 for a
# margin (the H100 measurements in perf/RESULTS.md are at 24).
SMOOTH_ROUNDS = 24
OVER_RELAXATION = 1.7
# A covered texel's weight at a level is the share of its block covered, at least 4^-levels;
# this only keeps empty blocks' 0 / 0 at 0.
TINY_WEIGHT = 1e-30


def sampled_texels(covered: torch.Tensor) -> torch.Tensor:
    """[H, W] bool: the covered texels and the one-texel ring (8-neighbourhood) around them,
    every texel that bilinear sampling of a covered point can read."""
    grown = F.max_pool2d(covered[None, None].float(), 3, stride=1, padding=1)
    return grown[0, 0] > 0


def pull_push(image: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """image [H, W, C] float, filled [H, W] bool -> the filled texels as they are, every other
    one the pull-push mean of the filled texels around it (zero where none is filled)."""
    weight = filled.to(image.dtype)[None, None]  # [1, 1, H, W]
    colour = (image * weight[0, 0, :, :, None]).permute(2, 0, 1)[None]  # [1, C, H, W]
    levels: list[tuple[torch.Tensor, torch.Tensor]] = []
    while max(colour.shape[-2:]) > 1:
        levels.append((colour, weight))
        odd = (0, colour.shape[-1] % 2, 0, colour.shape[-2] % 2)  # an odd side: one zero row
        if any(odd):
            colour, weight = F.pad(colour, odd), F.pad(weight, odd)
        colour, weight = F.avg_pool2d(colour, 2), F.avg_pool2d(weight, 2)
    mean = colour / weight.clamp(min=TINY_WEIGHT)
    for colour, weight in reversed(levels):
        height, width = colour.shape[-2:]
        up = F.interpolate(mean, scale_factor=2.0, mode="bilinear", align_corners=False)
        own = colour / weight.clamp(min=TINY_WEIGHT)
        mean = torch.where(weight > 0, own, up[..., :height, :width])
    return torch.where(filled[..., None], image, mean[0].permute(1, 2, 0))


def block_smooth(image: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """image [H, W, C] float, fixed [H, W] bool -> the fixed texels as they are; in each
    JPEG_BLOCK block holding fixed and free texels the free ones relaxed towards the block's
    harmonic fill; a block with no fixed texel its mean (step 2 of the module docstring)."""
    H, W, C = image.shape
    side = JPEG_BLOCK
    pad = (0, -W % side, 0, -H % side)  # a partial block: JPEG repeats the edge, as here
    x = image.permute(2, 0, 1)  # [C, H, W], a view
    if any(pad):
        x = F.pad(x[None], pad, mode="replicate")[0]
    keep = F.pad(fixed, pad, value=False)
    rows, cols = x.shape[1] // side, x.shape[2] // side
    grid = x.view(C, rows, side, cols, side)
    some = keep.view(rows, side, cols, side).any(3).any(1)[None, :, None, :, None]
    # A new tensor in the image's channel-last order: relax_blocks takes any strides.
    grid = torch.where(some, grid, grid.mean((2, 4), keepdim=True))
    keep = keep | ~some[0].expand(rows, side, cols, side).reshape(keep.shape)
    x = grid.view(C, rows * side, cols * side)
    x = relax_blocks(x, keep, SMOOTH_ROUNDS, OVER_RELAXATION)
    return x[:, :H, :W].permute(1, 2, 0).contiguous()


def fill_texture(
    image: torch.Tensor,
    covered: torch.Tensor,
    charts: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """image [H, W, C] float with the covered texels set, covered [H, W] bool -> every texel
    set: the covered ones unchanged, the ring bilinear sampling reads from its nearest covered
    texels, the rest smooth within JPEG's blocks (see the module docstring). `charts`: as
    `fill_ring` takes it (without it a ring texel takes the first nearest alone)."""
    sampled = sampled_texels(covered)
    ringed = fill_ring(image, covered, sampled & ~covered, charts)
    return block_smooth(pull_push(ringed, sampled), sampled)
