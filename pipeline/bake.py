"""The bake stage: the voxel field's colour, written into the atlas texture.

Recipe (bake):
  1. rasterise the faces in UV space with conservative coverage (or reuse the atlas's raster),
     so every texel that bilinear sampling can read at a chart's edge holds the chart's colour;
  2. each covered texel's 3D point, from its clamped barycentrics, taken back into the
     generator's frame;
  3. the voxel field sampled there, trilinear over the present voxels (never black);
  4. every other texel (gutters, empty space) takes the colour of its nearest covered texel,
     so no background can bleed across seams, with or without mipmaps.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from kernels.dilate import dilate
from kernels.field_sample import field_sample
from kernels.uv_raster import UVRaster, uv_raster
from pipeline.settings import PipelineSettings
from pipeline.types import RawAsset, TexturedMesh, UVMesh

__all__ = ["bake"]

log = logging.getLogger("pipeline.bake")


def bake(mesh: UVMesh, asset: RawAsset, settings: PipelineSettings) -> TexturedMesh:
    start = time.perf_counter()
    size = settings.texture_size
    device = mesh.positions.device
    # 1. Coverage.
    raster: UVRaster = mesh.raster
    if raster is None or raster.face_ids.shape != (size, size):
        raster = uv_raster(mesh.uvs, mesh.faces, size, size, conservative=True)
    covered = raster.face_ids >= 0  # [H, W]
    face = raster.face_ids[covered]  # [T]
    # 2. Texel -> surface point -> the asset's frame.
    corners = mesh.positions[mesh.faces[face]]  # [T, 3, 3]
    points = (raster.barycentrics[covered][:, :, None] * corners).sum(1)
    points = mesh.frame.to_asset(points)
    # 3. Colour from the field.
    colour = field_sample(
        asset.coords.to(device), asset.attrs[:, :3].to(device), asset.resolution, points
    )
    texture = torch.zeros(size, size, 3, dtype=torch.float32, device=device)
    texture[covered] = colour.clamp(0, 1)
    # 4. Fill the rest from the nearest covered texel.
    texture = dilate(texture, covered)
    base_color = (texture * 255 + 0.5).to(torch.uint8).cpu().numpy()
    log.info(
        "bake: %d faces -> %dx%d texture, %.1f%% texels covered, %.0f ms",
        len(mesh.faces),
        size,
        size,
        100 * float(covered.float().mean()),
        (time.perf_counter() - start) * 1e3,
    )
    return TexturedMesh(
        positions=mesh.positions.cpu().numpy().astype(np.float32),
        normals=mesh.normals.cpu().numpy().astype(np.float32),
        uvs=mesh.uvs.cpu().numpy().astype(np.float32),
        faces=mesh.faces.cpu().numpy().astype(np.uint32),
        base_color=base_color,
    )
