"""The bake stage: the voxel field's colour, written into the atlas texture.

Recipe (bake):
  1. rasterise the faces in UV space with conservative coverage (or reuse the atlas's raster),
     so every texel that bilinear sampling can read at a chart's edge holds the chart's colour;
  2. each covered texel's 3D point: its centre's barycentrics in its face, extended beyond
     the face's edges where the centre lies outside it (a conservative texel), so a texel at a
     chart's edge holds the colour the surface continues with, not the edge's colour again:
     bilinear sampling between it and the texel inside then follows the colour across the
     last texel instead of flattening it (measured on the H100 in perf/RESULTS.md). Centres
     more than EXTRAPOLATION_LIMIT outside (slivers thinner than a texel) keep the clamped
     point. Then taken back into the generator's frame;
  3. the voxel field sampled there, trilinear over the present voxels (never black);
  4. the texels around the coverage that bilinear sampling reads take the colour of their
     nearest covered texel (the mean of the equidistant nearest ones in one UV chart,
     kernels/ring_fill.py), so no background can bleed across seams; every other texel
     (gutters, empty space; read by no sample, only by mipmaps) a smooth fill of the sampled
     colours (pull-push, then each of JPEG's 8 x 8 blocks relaxed towards its harmonic fill),
     which JPEG codes with less ringing into the charts and fewer bytes than a nearest-colour
     one (pipeline/texture_fill.py);
  5. with the fit on (settings.bake_fit; by default on CUDA): the colour at four points per
     texel on the surface (a centre raster at twice the size), and the texture whose
     bilinear sampling matches them best in least squares, starting from steps 1-4
     (pipeline/texture_fit.py). Texels no bilinear sample of the surface reads keep step 4's
     colour. Where the GPU runs out of memory inside this step, the bake keeps step 4's
     texture (a warning says so) rather than failing the request;
  6. for a JPEG texture (settings.texture_format) with settings.jpeg_fill (by default on
     CUDA): the texels no sample reads in each of JPEG's 8 x 8 blocks moved so the block sits
     nearer the lattice the encoder rounds it to at settings.jpeg_quality, so that rounding
     moves the texels samples read less (pipeline/jpeg_fill.py). The sampled texels keep
     their bits. The metallicRoughness texture skips steps 5 and 6.

Material (settings.material): each of metallic and roughness is either a factor or, where the
generator's field varies, a channel of a metallicRoughness texture (glTF's layout: G roughness,
B metallic, R unused) with factor 1. "roughness" (the default) takes the field's roughness and
settings.metallic; "field" takes both from the field; "constant" takes settings.metallic and
settings.roughness. A field channel that is one uint8 level over every voxel (inflate's are) is
a factor at that level / 255; where a texture is made, a channel given as a factor holds 255
and the factor. The varying channels go through steps 1-4 beside the colour (one raster, one
field lookup, one fill; not fitted: they only shape the light's highlight). The colour texture
is the same bits either way. Where only roughness varies and metallicFactor is 0 (the default),
the texture is one grey channel: glTF reads its value as both G and B, and B times 0 is 0, so
it says the same with a third of the samples, and a JPEG of it has no colour components to mix
into the roughness (measured in perf/RESULTS.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from kernels.field_sample import field_sample
from kernels.uv_raster import UVRaster, uv_raster
from pipeline.face_graph import components
from pipeline.jpeg_fill import project_free_texels
from pipeline.settings import PipelineSettings
from pipeline.texture_fill import fill_texture, sampled_texels
from pipeline.texture_fit import fit_texture
from pipeline.types import Frame, RawAsset, TexturedMesh, UVMesh

__all__ = [
    "ColourSource",
    "bake",
    "bake_texture",
    "centre_texture",
    "field_colour",
    "field_levels",
    "field_values",
    "fit_enabled",
    "fitted_texture",
    "jpeg_fill_enabled",
    "jpeg_ready",
    "material_factors",
    "quantise",
    "quarter_colours",
    "texture_raster",
]

log = logging.getLogger("pipeline.bake")


# A colour source: (face ids [T], barycentrics [T, 3], points [T, 3] in the output frame) ->
# colours [T, 3] in [0, 1]. The bake reads the generator's voxel field; perf/quality.py also
# re-bakes meshes that carry their own texture, from that texture.
# Barycentrics may lie slightly outside [0, 1] (step 2): a source defined only on the face
# itself (an image texture) clamps them.
ColourSource = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Lowest barycentric coordinate a texel centre may have and still be extended to: a
# conservative texel's centre is within 0.71 texel of its face, so only faces under a texel
# or so across reach it.
EXTRAPOLATION_LIMIT = -1.0
# Quarter points coloured at once by the fit (step 5): at 2048² there are 7–12M. Whole, the
# colour source's temporaries took the bake's peak GPU memory from 0.5–0.7 GiB to 1.5–2.7;
# in chunks of 2M to 1.0–1.2, as fast (H100, prompt 20, Duck, 1M synthetic faces;
# perf/RESULTS.md).
QUARTER_CHUNK = 1 << 21


def field_values(
    asset: RawAsset, frame: Frame, device: torch.device, channels: int
) -> ColourSource:
    """The voxel field's first `channels` attributes (base colour RGB, metallic, roughness,
    alpha) at each point, taken back into the asset's frame."""
    coords, values = asset.coords.to(device), asset.attrs[:, :channels].to(device)

    def sample(face: torch.Tensor, bary: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return field_sample(coords, values, asset.resolution, frame.to_asset(points))

    return sample


def field_colour(asset: RawAsset, frame: Frame, device: torch.device) -> ColourSource:
    """The voxel field's base colour at each point, taken back into the asset's frame."""
    return field_values(asset, frame, device, 3)


def field_levels(asset: RawAsset) -> tuple[float | None, float | None]:
    """(metallic, roughness) of the field: each as its uint8 level / 255 (what a texture of it
    would give) where it is one level over every voxel, None where it varies."""
    levels = quantise(asset.attrs[:, 3:5].clamp(0, 1))  # [N, 2] uint8
    low, high = torch.stack((levels.amin(0), levels.amax(0))).tolist()  # one host sync
    metallic, roughness = (a / 255 if a == b else None for a, b in zip(low, high, strict=True))
    return metallic, roughness


def material_factors(asset: RawAsset, settings: PipelineSettings) -> tuple[float | None, ...]:
    """(metallic, roughness) factors for settings.material; None: the field's texture."""
    if settings.material == "constant":
        return settings.metallic, settings.roughness
    metallic, roughness = field_levels(asset)
    return (metallic if settings.material == "field" else settings.metallic), roughness


def fit_enabled(settings: PipelineSettings, device: torch.device) -> bool:
    """Whether the bake fits the texture to bilinear sampling (step 5) on `device`."""
    return settings.bake_fit == "on" or (settings.bake_fit == "auto" and device.type == "cuda")


def jpeg_fill_enabled(settings: PipelineSettings, device: torch.device) -> bool:
    """Whether the bake sets a JPEG texture's free texels for the encoder (step 6) on `device`."""
    wanted = settings.jpeg_fill == "on" or (settings.jpeg_fill == "auto" and device.type == "cuda")
    return wanted and settings.texture_format == "jpeg"


def bake_texture(
    mesh: UVMesh,
    size: int,
    colour: ColourSource,
    fit: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor:
    """The [size, size, 3] float32 texture in [0, 1]: every covered texel from `colour`, the
    rest filled (step 4); with `fit`, then fitted to bilinear sampling (step 5); with a
    `jpeg_quality`, its free texels then set for a JPEG of that quality (step 6)."""
    texture = centre_texture(mesh, size, colour)
    if fit:
        texture = fitted_texture(mesh, size, colour, texture)
    return texture if jpeg_quality is None else jpeg_ready(mesh, size, texture, jpeg_quality)


def texture_raster(mesh: UVMesh, size: int) -> UVRaster:
    """The conservative UV raster at `size`: the atlas's where it has one of that size."""
    raster = mesh.raster
    if raster is None or raster.face_ids.shape != (size, size):
        raster = uv_raster(mesh.uvs, mesh.faces, size, size, conservative=True)
    return raster


def jpeg_ready(mesh: UVMesh, size: int, texture: torch.Tensor, quality: int) -> torch.Tensor:
    """Step 6: the texels no bilinear sample reads moved so each JPEG block of `texture` sits
    nearer the lattice a JPEG of `quality` rounds it to (pipeline/jpeg_fill.py)."""
    free = ~sampled_texels(texture_raster(mesh, size).face_ids >= 0)
    return project_free_texels(texture, free, quality)


def centre_texture(mesh: UVMesh, size: int, source: ColourSource) -> torch.Tensor:
    """Steps 1-4: the [size, size, C] float32 texture in [0, 1], C the source's channels: every
    covered texel from `source` at its (extended) centre, the rest filled (step 4)."""
    # 1. Coverage.
    raster = texture_raster(mesh, size)
    covered = raster.face_ids >= 0  # [H, W]
    face = raster.face_ids[covered]  # [T]
    barycentrics = _extended(mesh, covered, face, raster.barycentrics[covered], size)  # [T, 3]
    # 2. Texel -> surface point.
    corners = mesh.positions[mesh.faces[face]]  # [T, 3, 3]
    points = (barycentrics[:, :, None] * corners).sum(1)
    # 3. Colour there.
    values = source(face, barycentrics, points).float().clamp(0, 1)  # [T, C]
    texture = values.new_zeros(size, size, values.shape[1])
    texture[covered] = values
    # 4. Fill the rest: the sampled ring from the nearest covered texel, the others smoothly.
    return fill_texture(texture, covered, (raster.face_ids, uv_charts(mesh)))


def uv_charts(mesh: UVMesh) -> torch.Tensor:
    """[F] int64: each face's UV chart, faces joined through shared vertices (a UV mesh has a
    vertex per (position, uv) pair), labelled by its smallest vertex."""
    faces = mesh.faces
    joined = components(len(mesh.uvs), faces[:, :2].reshape(-1), faces[:, 1:].reshape(-1))
    return joined[faces[:, 0]]


def fitted_texture(
    mesh: UVMesh, size: int, colour: ColourSource, texture: torch.Tensor
) -> torch.Tensor:
    """Step 5: `texture` (steps 1-4 of `colour`) fitted to bilinear sampling of the colour at
    each texel's quarter points on the surface; `texture` itself when the GPU runs out of
    memory on the way."""
    try:
        colours, inside = quarter_colours(mesh, size, colour)
        return fit_texture(texture, colours, inside).clamp(0, 1)
    except torch.OutOfMemoryError as error:
        message = str(error).splitlines()[0]
    # Out of the except block its frames are gone, and with them the step's temporaries.
    if texture.is_cuda:
        torch.cuda.empty_cache()
    log.warning("bake: the fit ran out of memory (%s): keeping the texel-centre texture", message)
    return texture


def quarter_colours(
    mesh: UVMesh, size: int, colour: ColourSource
) -> tuple[torch.Tensor, torch.Tensor]:
    """([2S, 2S, 3] float32 colours, [2S, 2S] bool inside): the colour at every texel's quarter
    points that lie in a face (a centre raster at twice the size), zero elsewhere; taken
    QUARTER_CHUNK points at a time, so the colour source's temporaries stay small."""
    quarter = uv_raster(mesh.uvs, mesh.faces, 2 * size, 2 * size, conservative=False)
    inside = quarter.face_ids >= 0  # [2S, 2S]
    where = torch.nonzero(inside.reshape(-1)).squeeze(1)  # [Q]
    face_ids = quarter.face_ids.reshape(-1)
    weights = quarter.barycentrics.reshape(-1, 3)
    colours = torch.zeros(4 * size * size, 3, dtype=torch.float32, device=inside.device)
    for chunk in torch.split(where, QUARTER_CHUNK):
        face, barycentrics = face_ids[chunk], weights[chunk]
        points = (barycentrics[:, :, None] * mesh.positions[mesh.faces[face]]).sum(1)
        colours[chunk] = colour(face, barycentrics, points).float().clamp(0, 1)
    return colours.reshape(2 * size, 2 * size, 3), inside


def _extended(
    mesh: UVMesh, covered: torch.Tensor, face: torch.Tensor, clamped: torch.Tensor, size: int
) -> torch.Tensor:
    """[T, 3] barycentrics of the covered texels' centres in their faces, beyond the edges
    too, down to EXTRAPOLATION_LIMIT; the raster's clamped ones elsewhere (step 2)."""
    rows, columns = torch.nonzero(covered, as_tuple=True)
    # Each face's terms once (float64), then gathered per texel one column at a time.
    corner = mesh.uvs.double()[mesh.faces]  # [F, 3, 2]
    e1, e2 = corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0]
    twice = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    e1x, e1y, e2x, e2y, twice = (t[face] for t in (e1[:, 0], e1[:, 1], e2[:, 0], e2[:, 1], twice))
    # The texel centre's uv less its face's first corner's.
    dx = (columns.double() + 0.5) / size - corner[:, 0, 0][face]
    dy = (rows.double() + 0.5) / size - corner[:, 0, 1][face]
    b1 = (dx * e2y - dy * e2x) / twice
    b2 = (e1x * dy - e1y * dx) / twice
    extended = torch.stack((1 - b1 - b2, b1, b2), 1)
    usable = torch.isfinite(extended).all(1) & (extended.amin(1) >= EXTRAPOLATION_LIMIT)
    return torch.where(usable[:, None], extended, clamped.double()).to(clamped.dtype)


def quantise(texture: torch.Tensor) -> torch.Tensor:
    """Texture values in [0, 1] (any shape) -> the uint8 levels the GLB stores (rounded)."""
    return (texture * 255 + 0.5).to(torch.uint8)


# As the atlas: no autograd bookkeeping (pipeline/atlas.py's unwrap).
@torch.inference_mode()
def bake(mesh: UVMesh, asset: RawAsset, settings: PipelineSettings) -> TexturedMesh:
    start = time.perf_counter()
    size = settings.texture_size
    device = mesh.positions.device
    fit = fit_enabled(settings, device)
    metallic, roughness = material_factors(asset, settings)
    textured = metallic is None or roughness is None
    # The colour, and where a texture is made the field's metallic and roughness too (its
    # channels 3 and 4), through steps 1-4 at once.
    channels = 5 if textured else 3
    values = centre_texture(mesh, size, field_values(asset, mesh.frame, device, channels))
    texture = values[..., :3]
    if fit:
        texture = fitted_texture(mesh, size, field_colour(asset, mesh.frame, device), texture)
    if jpeg_fill_enabled(settings, device):
        texture = jpeg_ready(mesh, size, texture, settings.jpeg_quality)
    metallic_roughness = None
    if textured:
        metallic_levels, roughness_levels = quantise(values[..., 3:5]).unbind(2)  # [S, S] uint8
        if metallic == 0.0 and roughness is None:  # B is multiplied by 0: grey is G and B
            metallic_roughness = roughness_levels.contiguous().cpu().numpy()
        else:
            full = torch.full_like(metallic_levels, 255)  # a channel given by its factor
            blue = metallic_levels if metallic is None else full
            green = roughness_levels if roughness is None else full
            layers = (torch.zeros_like(full), green, blue)
            metallic_roughness = torch.stack(layers, 2).cpu().numpy()
        metallic = 1.0 if metallic is None else metallic
        roughness = 1.0 if roughness is None else roughness
    base_color = quantise(texture).cpu().numpy()
    log.info(
        "bake: %d faces -> %dx%d texture%s%s, %.0f ms",
        len(mesh.faces),
        size,
        size,
        " (fitted to bilinear sampling)" if fit else "",
        " and metallicRoughness texture" if metallic_roughness is not None else "",
        (time.perf_counter() - start) * 1e3,
    )
    return TexturedMesh(
        positions=mesh.positions.cpu().numpy().astype(np.float32),
        normals=mesh.normals.cpu().numpy().astype(np.float32),
        uvs=mesh.uvs.cpu().numpy().astype(np.float32),
        faces=mesh.faces.cpu().numpy().astype(np.uint32),
        base_color=base_color,
        metallic=float(metallic),
        roughness=float(roughness),
        metallic_roughness=metallic_roughness,
    )
