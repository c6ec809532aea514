"""Quality numbers of a UV atlas and of the texture baked into it (perf/quality.py).

- `uv_charts`: a chart is a connected component of the UV mesh, faces joined through edges
  whose two UV-vertex indices they share (pipeline.face_graph's components, on the device).
- `overlap_texels`: texels whose centre lies strictly inside faces of two or more distinct
  charts, at the texture's size. Strictly: every edge function above OVERLAP_EPSILON_TEXELS
  (as a distance), so faces that share an edge, or merely touch, never count. Per texel the
  smallest and largest chart id of the faces holding its centre (`scatter_reduce` amin/amax:
  integer atomics, deterministic); the texel overlaps when they differ. A chart folding over
  itself is not counted.
- `utilisation`: the sum of the faces' |UV area| (uv in [0, 1]): the share of the atlas the
  charts cover.
- `margin_share` and `packing_bound`: how much of the atlas the pieces cannot give up
  however they are packed, and so the utilisation a perfect piece-shaped packing of the same
  pieces would reach. Each piece needs its texels (conservative coverage) and half the gutter
  around them (the other half belongs to its neighbour); `margin_share` is the share of texels
  within gutter / 2 (Chebyshev) of a covered texel: that need summed over the pieces, less
  where two pieces' rings meet (counted once). Laid out at s times the scale, the pieces'
  area grows with s^2 and the margin ring, a fixed width along their outlines, with s: the
  bound is u s^2 where u s^2 + (m - u) s = 1 (u the utilisation, m the margin share). An
  estimate (the ring's texels and the outlines' raster do not scale exactly), for telling
  packing waste from the pieces' own shape.
- `fidelity`: PSNR between flat renders of the baked texture (its uint8 values, sampled as
  OpenGL's GL_LINEAR does: texel centres at (i + 0.5) / size, clamped to the edge) and the
  reference colour source evaluated at each pixel's surface point, over the judge's four views
  (perf/flat_render.py), foreground pixels only; and the same over the seam pixels: those with a
  foreground pixel of another chart within SEAM_RADIUS_PX (Chebyshev) whose 3D point lies within
  SEAM_NEAR_FOOTPRINTS pixel footprints, so an occlusion boundary (another part of the object
  behind) is not a seam; and over the other foreground pixels (interior_psnr_db), so seam
  errors stand out from the texel density's.
- `seam_cost_db`: seam PSNR alone cannot tell seams that lose colour from seams that lie
  where the content is hardest (charts are cut at creases, where colour changes too). Two
  layouts of one mesh rendered over the same pixels can: the first's error over the second's
  beside the first's seams only, less that ratio beside neither's seams.
- `source_limited_faces`: a re-baked textured mesh (Duck) may carry more detail on some faces
  than the new texture can hold wherever its charts go: its author gave them more texels per
  unit of surface than `size`^2 spread over the whole surface, the most any atlas that keeps
  the surface's proportions can give every face at once (ours and xatlas both do). Their pixels
  (`face_pixels`) are reported apart, so a layout's own losses show beside the source's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernels.uv_raster import uv_raster
from perf.flat_render import View, box_candidates
from pipeline.bake import ColourSource
from pipeline.face_graph import components, rank_by_first

__all__ = [
    "Fidelity",
    "face_pixels",
    "fidelity",
    "fidelity_of",
    "margin_share",
    "overlap_texels",
    "packing_bound",
    "pixel_errors",
    "psnr_db",
    "reference_colours",
    "sample_bilinear",
    "seam_cost_db",
    "seam_mask",
    "seam_pixels",
    "source_limited_faces",
    "utilisation",
    "uv_areas",
    "uv_charts",
]

# A texel centre is strictly inside a face when it is at least this far (in texels) inside all
# three edges: well above float64 rounding at any texture size, well below a texel.
OVERLAP_EPSILON_TEXELS = 1e-4
# (face, texel) candidates tested at once (~300 bytes each with the temporaries): 4x faster
# than 8M on the CPU (200k faces into 2048², fewer page faults), and still few launches on CUDA.
CANDIDATES_PER_CHUNK = 1 << 20
SEAM_RADIUS_PX = 2
# Two pixels SEAM_RADIUS_PX apart on one surface are at most ~2.8 footprints apart face-on;
# 4 allows for some slant, and a surface behind an occlusion boundary is much farther.
SEAM_NEAR_FOOTPRINTS = 4.0


def uv_charts(faces: torch.Tensor) -> tuple[torch.Tensor, int]:
    """faces [F, 3] int (UV-mesh vertex indices) -> chart per face [F] int64 (on the faces'
    device, numbered by their lowest face) and the number of charts."""
    F = len(faces)
    edges = faces.long()[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).sort(1).values  # [3F, 2]
    key = edges[:, 0] * (int(faces.max()) + 1 if F else 1) + edges[:, 1]
    order = torch.sort(key, stable=True).indices
    same = key[order][1:] == key[order][:-1]  # consecutive corners of one edge
    owner = order // 3  # [3F] the face of each sorted edge
    # Every face on an edge joins (pipeline.face_graph.edge_pairs only joins two-face edges).
    return rank_by_first(components(F, owner[:-1][same], owner[1:][same]), bound=F)


def uv_areas(corners: torch.Tensor) -> torch.Tensor:
    """corners [F, 3, 2] (each face's UVs) -> [F] float64 |UV area|."""
    corners = corners.double()
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return 0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs()


def utilisation(uvs: torch.Tensor, faces: torch.Tensor) -> float:
    """uvs [V, 2], faces [F, 3] -> the sum of |UV area| of the faces (float64)."""
    return float(uv_areas(uvs[faces.long()]).sum())


def margin_share(uvs: torch.Tensor, faces: torch.Tensor, size: int, gutter: int) -> float:
    """uvs [V, 2] in [0, 1], faces [F, 3] -> the share of a size x size atlas within gutter / 2
    texels (Chebyshev) of a texel the faces cover conservatively."""
    covered = uv_raster(uvs.float(), faces, size, size, conservative=True).face_ids >= 0
    reach = gutter // 2
    grown = torch.nn.functional.max_pool2d(
        covered[None, None].float(), 2 * reach + 1, stride=1, padding=reach
    )
    return float(grown.mean())


def packing_bound(utilisation: float, margin: float) -> float:
    """The utilisation at the scale s where utilisation s^2 + (margin - utilisation) s = 1:
    the pieces' area grows with s^2, their margin ring with s (module docstring)."""
    if utilisation <= 0:
        return 0.0
    ring = margin - utilisation
    s = (-ring + math.sqrt(ring * ring + 4 * utilisation)) / (2 * utilisation)
    return utilisation * s * s


def overlap_texels(
    uvs: torch.Tensor, faces: torch.Tensor, chart_of_face: torch.Tensor, size: int
) -> int:
    """uvs [V, 2] in [0, 1], faces [F, 3], chart_of_face [F] int64 -> texels of a size x size
    texture whose centre lies strictly inside faces of two or more charts."""
    device = uvs.device
    texels = uvs.double()[faces.long()] * size  # [F, 3, 2] in texel units
    lo, hi = texels.amin(1), texels.amax(1)  # [F, 2]
    start = torch.ceil(lo - 0.5).clamp(0, size).long()  # first centre (c + 0.5) >= lo
    stop = torch.floor(hi - 0.5).clamp(-1, size - 1).long()
    extent = (stop - start + 1).clamp(min=0)  # [F, 2]
    lowest = torch.full((size * size,), torch.iinfo(torch.int64).max, device=device)
    highest = torch.full((size * size,), -1, dtype=torch.int64, device=device)
    edges = texels.roll(-1, 1) - texels  # [F, 3, 2]: edge i runs from corner i to i + 1
    lengths = torch.linalg.vector_norm(edges, dim=2)  # [F, 3]
    orientation = torch.sign(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0])
    for face, x, y in box_candidates(
        start[:, 0], start[:, 1], extent[:, 0], extent[:, 1], CANDIDATES_PER_CHUNK
    ):
        centre = torch.stack((x, y), 1).double() + 0.5  # [N, 2]
        offset = centre[:, None] - texels[face]  # [N, 3, 2]
        edge = edges[face]
        cross = edge[..., 0] * offset[..., 1] - edge[..., 1] * offset[..., 0]  # [N, 3]
        distance = cross * orientation[face, None] / lengths[face].clamp(min=1e-300)
        inside = (distance > OVERLAP_EPSILON_TEXELS).all(1) & (orientation[face] != 0)
        texel, chart = (y * size + x)[inside], chart_of_face[face[inside]]
        lowest.scatter_reduce_(0, texel, chart, "amin")
        highest.scatter_reduce_(0, texel, chart, "amax")
    return int(((highest >= 0) & (lowest != highest)).sum())


def sample_bilinear(texture: torch.Tensor, uv: torch.Tensor, wrap: str = "clamp") -> torch.Tensor:
    """texture [H, W, C] (any dtype; row 0 is v = 0), uv [T, 2] -> [T, C] float32, as OpenGL's
    GL_LINEAR samples it: texel centres at (i + 0.5) / size; wrap "clamp" (to the edge) or
    "repeat"."""
    H, W, C = texture.shape
    x = uv[:, 0].double() * W - 0.5
    y = uv[:, 1].double() * H - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0).float()[:, None], (y - y0).float()[:, None]
    x0, y0 = x0.long(), y0.long()

    def index(i: torch.Tensor, n: int) -> torch.Tensor:
        return i.remainder(n) if wrap == "repeat" else i.clamp(0, n - 1)

    xs, ys = (index(x0, W), index(x0 + 1, W)), (index(y0, H), index(y0 + 1, H))
    flat = texture.reshape(H * W, C)

    def at(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        return flat[row * W + column].float()

    top = at(ys[0], xs[0]) * (1 - fx) + at(ys[0], xs[1]) * fx
    bottom = at(ys[1], xs[0]) * (1 - fx) + at(ys[1], xs[1]) * fx
    return top * (1 - fy) + bottom * fy


def reference_colours(views: list[View], colour: ColourSource) -> list[torch.Tensor]:
    """Per view, the colour source at its foreground pixels (row-major) -> [P, 3] in [0, 1]."""
    out = []
    for view in views:
        fg = view.foreground
        out.append(
            colour(view.face_ids[fg], view.barycentrics[fg], view.points[fg]).float().clamp(0, 1)
        )
    return out


def seam_mask(view: View, chart_of_face: torch.Tensor) -> torch.Tensor:
    """[H, W] bool: foreground pixels within SEAM_RADIUS_PX of a foreground pixel of another
    chart whose point is within SEAM_NEAR_FOOTPRINTS footprints of theirs."""
    r = SEAM_RADIUS_PX
    fg = view.foreground
    chart = torch.where(fg, chart_of_face[view.face_ids.clamp(min=0)], -1)  # [H, W]
    H, W = chart.shape
    padded_chart = torch.nn.functional.pad(chart, (r, r, r, r), value=-1)
    padded_points = torch.nn.functional.pad(view.points.permute(2, 0, 1), (r, r, r, r))
    near = (SEAM_NEAR_FOOTPRINTS * view.camera.footprint(view.depth)) ** 2  # [H, W]
    seam = torch.zeros_like(fg)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            other = padded_chart[r + dy : r + dy + H, r + dx : r + dx + W]
            points = padded_points[:, r + dy : r + dy + H, r + dx : r + dx + W]
            gap = ((points - view.points.permute(2, 0, 1)) ** 2).sum(0)
            seam |= (other >= 0) & (other != chart) & (gap < near)
    return seam & fg


def psnr_db(squared_error: torch.Tensor, count: int) -> float | None:
    """PSNR (peak 1) of a summed squared error over `count` values; None when count is 0."""
    if count == 0:
        return None
    mse = float(squared_error) / count
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@dataclass(frozen=True)
class Fidelity:
    psnr_db: float | None  # over every foreground pixel of the four views
    seam_psnr_db: float | None  # over the seam pixels; None when there is none
    interior_psnr_db: float | None  # over the other foreground pixels
    foreground_pixels: int
    seam_pixels: int


def pixel_errors(
    views: list[View],
    reference: list[torch.Tensor],
    uvs: torch.Tensor,
    faces: torch.Tensor,
    texture: torch.Tensor,
) -> torch.Tensor:
    """views and their reference colours [P, 3] (`reference_colours`), the UV mesh's uvs
    [V', 2] and faces [F, 3] (the face ids of the views), texture [S, S, 3] in uint8 levels
    (uint8, or floats on the same 0-255 scale) -> [P] float64:
    each foreground pixel's squared colour error summed over the channels, the views' pixels
    one after another (row-major)."""
    errors = []
    for view, expected in zip(views, reference, strict=True):
        fg = view.foreground
        face = view.face_ids[fg]
        uv = (view.barycentrics[fg][:, :, None].double() * uvs.double()[faces[face].long()]).sum(1)
        baked = sample_bilinear(texture, uv) / 255.0
        errors.append(((baked - expected) ** 2).sum(1).double())
    return torch.cat(errors)


def seam_pixels(views: list[View], chart_of_face: torch.Tensor) -> torch.Tensor:
    """[P] bool: `seam_mask` at the views' foreground pixels, in `pixel_errors`' order."""
    return torch.cat([seam_mask(view, chart_of_face)[view.foreground] for view in views])


def fidelity_of(errors: torch.Tensor, seams: torch.Tensor) -> Fidelity:
    """`pixel_errors` and `seam_pixels` -> Fidelity."""
    total, seam_total = errors.sum(), errors[seams].sum()
    count, seam_count = len(errors), int(seams.sum())
    return Fidelity(
        psnr_db(total, 3 * count),
        psnr_db(seam_total, 3 * seam_count),
        psnr_db(total - seam_total, 3 * (count - seam_count)),
        count,
        seam_count,
    )


def fidelity(
    views: list[View],
    reference: list[torch.Tensor],
    uvs: torch.Tensor,
    faces: torch.Tensor,
    texture: torch.Tensor,
    chart_of_face: torch.Tensor,
) -> Fidelity:
    """`pixel_errors`' arguments and the charts of the faces -> Fidelity."""
    errors = pixel_errors(views, reference, uvs, faces, texture)
    return fidelity_of(errors, seam_pixels(views, chart_of_face))


def seam_cost_db(
    errors: torch.Tensor, seams: torch.Tensor, other_errors: torch.Tensor, other_seams: torch.Tensor
) -> float | None:
    """How much worse (dB) a layout renders the pixels beside its own seams, where a second
    layout of the same mesh has none, than that layout renders them, less the same difference
    over the pixels beside neither's seams (the two textures' difference in general). Both
    [P] `pixel_errors` and `seam_pixels` over the same views. About 0 where seam pixels are
    only harder content (seams lie on creases, where colour changes); > 0 where the seams
    themselves lose colour. None when either pixel set is empty or error-free."""
    own, neither = seams & ~other_seams, ~seams & ~other_seams
    sums = [e[m].sum() for m in (own, neither) for e in (errors, other_errors)]
    if not own.any() or not neither.any() or any(float(s) == 0 for s in sums):
        return None
    own_ratio = float(sums[0]) / float(sums[1])  # this layout's MSE over the other's, own seams
    neither_ratio = float(sums[2]) / float(sums[3])
    return 10 * math.log10(own_ratio / neither_ratio)


def source_limited_faces(
    positions: torch.Tensor, faces: torch.Tensor, source_texels: torch.Tensor, size: int
) -> torch.Tensor:
    """positions [V, 3], faces [F, 3], source_texels [F] (the texels of its source texture each
    face's source UVs cover) and the baked texture's side -> [F] bool: the faces whose source
    has more texels per unit area than size^2 over the mesh's whole surface area."""
    corners = positions.double()[faces.long()]
    area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = area.norm(dim=1) / 2
    total = float(area.sum())
    if total == 0:
        return torch.zeros(len(faces), dtype=torch.bool, device=faces.device)
    return source_texels.double() > area * (size * size / total)


def face_pixels(views: list[View], chosen: torch.Tensor) -> torch.Tensor:
    """chosen [F] bool -> [P] bool: the views' foreground pixels on chosen faces, in
    `pixel_errors`' order."""
    return torch.cat([chosen[view.face_ids[view.foreground]] for view in views])
