"""The atlas stage: cut the mesh into charts and lay them out in one square texture.

Methods (settings.atlas_method):
- "charts" (default): normal-cone charts projected along their mean normal (or axis),
  relaxed towards isometry (pipeline/relax.py: the projection shrinks tilted faces), and
  cut into tiles where that saves texture (pipeline/charts.py), each turned to its smallest
  bounding box, shelf packed at the largest uniform scale with a gutter
  (pipeline/packing.py), then small pieces nested into the room large ones leave, at a
  larger scale where all fit (pipeline/nesting.py); on CUDA, up to 3072 pieces, every piece
  is laid by its shape instead, at 32 trial scales at once (pipeline/raster_layout.py, the
  first fit in kernels/first_fit.py); faces found to overlap at the bake
  resolution are split off and moved into free room, the rest staying on the same texel
  grid, until none does. Torch on the mesh's device (the GPU in production; the same code on
  the CPU elsewhere), the overlap check the Triton raster (kernels/uv_raster.py). Every step
  is bounded (at most MAX_LAYOUT_ROUNDS packings), so it cannot hang. Where the pieces are too
  many for the gutter's boxes (each takes at least (gutter + 1)^2 texels), the packing halves
  the gutter down to 1 texel, and past that gives every piece a cell of an even grid at its
  own scale (packing.cell_corners), so no input is left without a layout.
- "xatlas": xatlas (MIT) in a child process killed after settings.atlas_timeout_s, falling
  back to "charts"; kept for comparison, since it takes seconds to minutes at our face counts.

Recipe (unwrap): 1. charts, fold-overs split off, relaxed (new fold-overs split off); 2.
tiles, turned; faces overlapping within their tile on a shelf strip split off (as connected
groups, then alone where a group still overlaps); 3. pack and nest, check overlaps, split
and move, repeat; 4. give each (vertex, piece) pair its own vertex, so UV seams become
vertex splits.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
import torch

from kernels import triton_available
from kernels.components import components_one_program
from kernels.first_fit import compile_variants
from kernels.uv_raster import UVRaster, uv_overlaps, uv_raster
from pipeline.charts import (
    isolate_faces,
    pleated_faces,
    project_charts,
    segment_charts,
    separate,
    tile_charts,
)
from pipeline.face_graph import components, edge_pairs, rank_by_first
from pipeline.nesting import nest_faces, nest_pieces
from pipeline.packing import (
    Packing,
    box_sizes,
    cell_corners,
    pack_rectangles,
    shelves,
    texel_corners,
)
from pipeline.profiling import mark
from pipeline.raster_layout import grid_cells
from pipeline.relax import relax_charts
from pipeline.settings import PipelineSettings
from pipeline.types import Mesh, UVMesh

__all__ = ["Layout", "chart_atlas", "unwrap", "warm_up_kernels"]

log = logging.getLogger("pipeline.atlas")

# Layouts tried: after each of the first NEIGHBOUR_ROUNDS, faces found overlapping (and their
# neighbours in the piece: the overlap's margin, which the next layout's texel centres may
# hit) become pieces of their own; after the later ones, every face of a piece that still
# overlaps does (a triangle alone cannot overlap anything). Each new layout has a new scale,
# so its texel centres can find a fold the previous grid missed; on the shared prompts one or
# two layouts suffice.
MAX_LAYOUT_ROUNDS = 6
NEIGHBOUR_ROUNDS = 2
# The share of the texture the tiles are sized for: the packing then finds the real scale.
EXPECTED_UTILISATION = 0.6
# Turns tried per piece (over a quarter turn; the packer's transposition covers the rest):
# each piece keeps the one whose bounding box is smallest. Ragged diagonal pieces fill their
# boxes far better turned.
ORIENTATIONS = 12
# Face turns whose boxes are taken at once: all 12 turns of an 80k-face mesh in one set of
# launches (~150 MB of float64 temporaries at most). With the elementwise turns (`_oriented`)
# the prompts' atlas took 5.7-13.9 ms less than with the GEMM's turns one at a time, 0-6 ms of
# it from taking them at once (H100: perf/RESULTS.md, 2026-11-25).
ORIENT_BATCH = 1 << 20


@dataclass(frozen=True)
class Layout:
    piece_of_face: torch.Tensor  # [F] int64, pieces 0..count-1: a seam runs between pieces
    corner_uvs: torch.Tensor  # [F, 3, 2] float32 in [0, 1]
    raster: UVRaster  # the conservative raster of the final layout, for the bake to reuse
    stats: dict[str, float]


def _boxes(
    corners: torch.Tensor, piece: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, 3, 2] corners of pieces `piece` [F] -> each piece's box corners lo, hi [C, 2]."""
    lo = corners.new_full((count, 2), math.inf)
    hi = corners.new_full((count, 2), -math.inf)
    index = piece[:, None].expand(-1, 2)
    lo = lo.scatter_reduce(0, index, corners.amin(1), "amin")
    hi = hi.scatter_reduce(0, index, corners.amax(1), "amax")
    return lo, hi


def _outline(pairs: tuple[torch.Tensor, torch.Tensor], piece: torch.Tensor) -> torch.Tensor:
    """[F] bool: faces with an edge no other face of their piece shares (its outline)."""
    a, b = pairs
    same = (piece[a] == piece[b]).long()
    shared = torch.zeros(len(piece), dtype=torch.int64, device=piece.device)
    shared = shared.index_add(0, a, same).index_add(0, b, same)
    return shared < 3


def _place(
    corners: torch.Tensor,
    piece: torch.Tensor,
    count: int,
    size: int,
    gutter: int,
    pairs: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, int | None]:
    """Pack the pieces -> [F, 3, 2] float64 corner positions in texels, and the gutter they
    got: the gutter asked for, else (too many pieces for its boxes) the widest of its halves
    down to 1 texel that fits them, else None: every piece in a cell of its own (sharing
    texels where the cells are under two texels)."""
    lo, hi = _boxes(corners, piece, count)
    extents = (hi - lo).cpu().numpy()
    outline = _outline(pairs, piece)
    trial = gutter
    while True:
        shelved = pack_rectangles(extents, size, trial)
        if shelved is not None:
            packing = nest_pieces(corners, piece, lo, extents, shelved, size, trial, outline)
            return texel_corners(corners, piece, lo, packing), trial
        if trial <= 1:
            return cell_corners(corners, piece, lo, hi - lo, size), None
        trial //= 2


def _folded_faces(
    corners: torch.Tensor,
    piece: torch.Tensor,
    count: int,
    soup: torch.Tensor,
    size: int,
    gutter: int,
    scale: float,
) -> torch.Tensor:
    """[F] bool: faces sharing a texel centre with another face when the pieces lie on
    shelves at `scale`, `size` texels wide and as tall as they need (pieces do not meet, so
    these are overlaps within a piece)."""
    if count == 0:
        return torch.zeros(len(piece), dtype=torch.bool, device=piece.device)
    lo, hi = _boxes(corners, piece, count)
    sizes, transposed = box_sizes((hi - lo).cpu().numpy(), scale, gutter)
    origins = shelves(sizes, size, np.iinfo(np.int64).max)
    if origins is None:  # a piece wider than the texture: the packing scales it down anyway
        return torch.zeros(len(piece), dtype=torch.bool, device=piece.device)
    height = int((origins[:, 1] + sizes[:, 1]).max())
    texels = texel_corners(corners, piece, lo, Packing(scale, origins + gutter // 2, transposed))
    extent = torch.tensor([size, height], dtype=texels.dtype, device=texels.device)
    uvs = (texels / extent).reshape(-1, 2).float()
    # Overlap is a texel centre strictly inside two faces, the same in either coverage mode;
    # centre coverage proposes fewer texels (the torch raster: 0.7-0.8 of the time on a CPU).
    return uv_overlaps(uvs, soup, size, height, conservative=False)


def _oriented(corners: torch.Tensor, piece: torch.Tensor, count: int) -> torch.Tensor:
    """[F, 3, 2] corners, each piece turned rigidly to the smallest of ORIENTATIONS boxes."""
    if count == 0:
        return corners
    angles = torch.arange(ORIENTATIONS, dtype=corners.dtype, device=corners.device)
    angles = angles * (math.pi / 2 / ORIENTATIONS)
    cos, sin = torch.cos(angles), torch.sin(angles)
    rotation = torch.stack((torch.stack((cos, -sin), 1), torch.stack((sin, cos), 1)), 1)
    # The turns' boxes in batches of up to ORIENT_BATCH faces in all, one set of scatters a
    # batch: meshes up to ~87k faces take all turns at once, larger ones a few at a time.
    # The trial turns are elementwise products (a matrix product of 2 x 2 turns batched over
    # the faces ran as a float64 GEMM, ~0.4 ms a turn for 80k faces on the H100); they only
    # rank the boxes (rounded apart from the product below by a few ulps at most: on the 26
    # inputs measured every piece kept the turn it kept before), the product turns the corners.
    x, y = corners[None, ..., 0], corners[None, ..., 1]  # [1, F, 3]
    batch = max(1, ORIENT_BATCH // max(len(piece), 1))
    areas = []
    for first in range(0, ORIENTATIONS, batch):
        c, s = cos[first : first + batch, None, None], sin[first : first + batch, None, None]
        turned = torch.stack((x * c - y * s, x * s + y * c), -1).reshape(-1, 3, 2)  # [T * F]
        shift = torch.arange(len(c), device=piece.device)[:, None] * count
        lo, hi = _boxes(turned, (piece + shift).reshape(-1), len(c) * count)
        areas.append((hi - lo).prod(1).reshape(len(c), count))
    best = torch.argmin(torch.cat(areas).T.contiguous(), dim=1)  # [count], first of equals
    return torch.einsum("fck,fjk->fcj", corners, rotation[best[piece]])


def _with_piece_neighbours(
    pairs: tuple[torch.Tensor, torch.Tensor], piece: torch.Tensor, flagged: torch.Tensor
) -> torch.Tensor:
    """[F] bool: the flagged faces and their edge neighbours in the same piece."""
    a, b = pairs
    same = piece[a] == piece[b]
    # Integer counts, not masked writes: nothing waits on the device for a count.
    hits = torch.zeros(len(piece), dtype=torch.int32, device=piece.device)
    hits = hits.index_add(0, a, (same & flagged[b]).int()).index_add(
        0, b, (same & flagged[a]).int()
    )
    return flagged | (hits > 0)


def _connected_groups(
    pairs: tuple[torch.Tensor, torch.Tensor], piece: torch.Tensor, flagged: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Each connected group of flagged faces (through edges, within a piece) becomes a piece of
    its own; renumbered by first face -> (piece [F], count)."""
    a, b = pairs
    joined = flagged[a] & flagged[b] & (piece[a] == piece[b])
    group = components(len(piece), a[joined], b[joined])  # the group's smallest face
    return rank_by_first(torch.where(flagged, len(piece) + group, piece), bound=2 * len(piece))


def chart_atlas(positions: torch.Tensor, faces: torch.Tensor, size: int, gutter: int) -> Layout:
    """positions [V, 3], faces [F, 3] (one device) -> the layout of the faces in the texture."""
    pairs = edge_pairs(faces, len(positions))
    charts = segment_charts(positions, faces, pairs)
    mark("atlas.segment")
    # Local fold-overs are found without a texel grid; the raster below catches the rest.
    corners = project_charts(positions, faces, charts)
    isolated = pleated_faces(corners, faces, charts.chart_of_face)
    charts = isolate_faces(charts, isolated)
    mark("atlas.pleats")
    corners = relax_charts(positions, faces, corners, charts.chart_of_face, charts.count)
    pleated = pleated_faces(corners, faces, charts.chart_of_face)  # relaxing may pleat anew
    charts = isolate_faces(charts, pleated)
    isolated |= pleated
    mark("atlas.relax")
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = float((0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs()).sum())
    expected_scale = math.sqrt(EXPECTED_UTILISATION * size * size / max(area, 1e-12))
    piece, count = tile_charts(corners, charts.chart_of_face, expected_scale, gutter, size)
    corners = _oriented(corners, piece, count)
    mark("atlas.tiles")
    soup = torch.arange(3 * len(faces), device=faces.device).reshape(-1, 3)
    # Pieces that overlap themselves (a relaxed saddle, a curled projection) lose those faces
    # before packing, so the packing has room for them; the rounds below catch the rest.
    grid = (size, gutter, expected_scale)
    folded = _folded_faces(corners, piece, count, soup, *grid)
    folded = _with_piece_neighbours(pairs, piece, folded & ~isolated) & ~isolated
    if bool(folded.any()):
        # The folded faces leave their pieces as connected groups, which usually takes the
        # layers of a curl apart; faces of a group that still overlaps go alone. Only the
        # pieces that lost faces are turned and checked again: the rest stay as they were.
        lost = torch.zeros(count, dtype=torch.bool, device=piece.device)
        lost[piece[folded]] = True
        touched = torch.nonzero(lost[piece]).squeeze(1)  # every face of those pieces
        piece, count = _connected_groups(pairs, piece, folded)
        local, local_count = rank_by_first(piece[touched], bound=count)
        corners[touched] = _oriented(corners[touched], local, local_count)
        again = _folded_faces(corners[touched], local, local_count, soup[: len(touched)], *grid)
        folded = torch.zeros_like(folded)
        folded[touched] = again
        folded = _with_piece_neighbours(pairs, piece, folded & ~isolated) & ~isolated
        if bool(folded.any()):
            isolated |= folded
            piece, count = separate(piece, count, folded)
    mark("atlas.folds")
    texels, placed_gutter = _place(corners, piece, count, size, gutter, pairs)
    rounds = repacks = 0
    for layout_round in range(MAX_LAYOUT_ROUNDS):
        rounds += 1
        uvs = (texels / size).reshape(-1, 2).float()
        raster = uv_raster(uvs, soup, size, size, conservative=True)
        overlapping = raster.overlapping & ~isolated
        if not bool(overlapping.any()):
            break
        if layout_round == MAX_LAYOUT_ROUNDS - 1:
            log.warning("atlas: %d faces still overlap", int(overlapping.sum()))
            break
        if placed_gutter is None:  # one cell per piece: no room left to take faces apart
            log.warning(
                "atlas: %d pieces exceed a %d^2 texture: %d faces share texels",
                count,
                size,
                int(overlapping.sum()),
            )
            break
        if layout_round >= NEIGHBOUR_ROUNDS:
            # Every face of a piece that still overlaps goes alone: a triangle alone overlaps
            # nothing (its neighbours are at least the gutter away).
            spoilt = torch.zeros(count, dtype=torch.bool, device=piece.device)
            spoilt[piece[overlapping]] = True
            overlapping = spoilt[piece] & ~isolated
        else:
            overlapping = _with_piece_neighbours(pairs, piece, overlapping) & ~isolated
        isolated |= overlapping
        piece, count = separate(piece, count, overlapping)
        # The faces taken out move into free space and the rest stay, on the same texel grid,
        # so nothing new can overlap; only where there is no room is everything packed anew.
        moved = nest_faces(texels, overlapping, size, placed_gutter or 0)
        if moved is None:
            repacks += 1
            texels, placed_gutter = _place(corners, piece, count, size, gutter, pairs)
        else:
            texels = moved
    mark("atlas.layout")  # every round of packing, raster and overlap isolation
    given = placed_gutter if placed_gutter is not None else 0  # cells: no gutter kept
    if given < gutter:
        log.warning(
            "atlas: %d pieces left room for a %d-texel gutter, not %d", count, given, gutter
        )
    u, v = texels[:, 1] - texels[:, 0], texels[:, 2] - texels[:, 0]
    covered = float((0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs()).sum())
    stats = {
        "charts": float(charts.count),
        "pieces": float(count),
        "isolated_faces": float(isolated.sum()),
        "layout_rounds": float(rounds),  # rasters taken
        "repacks": float(repacks),  # rounds with no free room for the moved faces
        "utilisation": covered / (size * size),
        "gutter": float(given),  # below the one asked for: too many pieces for it
    }
    return Layout(piece, (texels / size).float(), raster, stats)


def _split_seams(
    mesh: Mesh, piece: torch.Tensor, corner_uvs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One vertex per (vertex, piece): -> positions, normals, uvs, faces on the mesh's device."""
    V = len(mesh.positions)
    keys = piece.repeat_interleave(3) * V + mesh.faces.reshape(-1)
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    corner = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique_keys),), len(keys), device=keys.device)
    first = first.scatter_reduce(0, inverse, corner, "amin")
    source = unique_keys % V
    uvs = corner_uvs.reshape(-1, 2)[first]
    return mesh.positions[source], mesh.normals[source], uvs, inverse.reshape(-1, 3)


def _xatlas_child(
    connection: Connection,
    positions: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    size: int,
    gutter: int,
) -> None:
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(positions, faces, normals)
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = size, gutter, True
    atlas.generate(xatlas.ChartOptions(), pack)
    connection.send(atlas[0])


def _xatlas(mesh: Mesh, settings: PipelineSettings) -> UVMesh | None:
    """xatlas in a child process; None when it fails or outlasts settings.atlas_timeout_s."""
    parent, child = multiprocessing.get_context("spawn").Pipe(duplex=False)
    arrays = (
        mesh.positions.cpu().numpy(),
        mesh.faces.cpu().numpy().astype(np.uint32),
        mesh.normals.cpu().numpy(),
    )
    process = multiprocessing.get_context("spawn").Process(
        target=_xatlas_child,
        args=(child, *arrays, settings.texture_size, settings.gutter),
        daemon=True,
    )
    process.start()
    child.close()  # only the child holds its end now: its death ends our poll at once
    try:
        if not parent.poll(settings.atlas_timeout_s):
            log.warning("xatlas outlasted %.0f s: using our chart atlas", settings.atlas_timeout_s)
            return None
        vmapping, indices, uvs = parent.recv()
    except (EOFError, OSError):
        log.warning("xatlas failed: using our chart atlas")
        return None
    finally:
        process.kill()
        process.join()
    source = torch.from_numpy(vmapping.astype(np.int64)).to(mesh.positions.device)
    return UVMesh(
        positions=mesh.positions[source],
        faces=torch.from_numpy(indices.astype(np.int64)).to(mesh.faces.device),
        normals=mesh.normals[source],
        uvs=torch.from_numpy(uvs).to(mesh.positions.device),
        frame=mesh.frame,
        stats={"charts": -1.0, "xatlas": 1.0},
    )


# No autograd bookkeeping on the atlas's ~2000 small ops (its outputs are inference tensors):
# H100, alternating in one process, Duck 67.2 -> 62.5 ms, the same layouts (perf/RESULTS.md).
@torch.inference_mode()
def unwrap(mesh: Mesh, settings: PipelineSettings) -> UVMesh:
    start = time.perf_counter()
    if settings.atlas_method == "xatlas":
        result = _xatlas(mesh, settings)
        if result is not None:
            return result
    layout = chart_atlas(mesh.positions, mesh.faces, settings.texture_size, settings.gutter)
    positions, normals, uvs, faces = _split_seams(mesh, layout.piece_of_face, layout.corner_uvs)
    mark("atlas.seams")
    log.info(
        "atlas charts: %d faces -> %d charts in %d pieces, %d vertices, utilisation %.2f, %.0f ms",
        len(faces),
        layout.stats["charts"],
        layout.stats["pieces"],
        len(positions),
        layout.stats["utilisation"],
        (time.perf_counter() - start) * 1e3,
    )
    return UVMesh(positions, faces, normals, uvs, mesh.frame, layout.stats, layout.raster)


def warm_up_kernels(settings: PipelineSettings, device: torch.device) -> None:
    """Compile the atlas's Triton kernels in the variants that depend on the input, which a
    warm-up generation's small mesh does not reach: the first fit for many pieces (and few)
    at this texture's grid, and the one-program components of the fold grouping. Without
    this the first requests that met them paid ~0.4 s each (H100: 4 of the 24 prompts after
    the server's warm-up, perf/RESULTS.md). Nothing to do off CUDA or without Triton."""
    if device.type != "cuda" or not triton_available():
        return
    compile_variants(grid_cells(settings.texture_size, settings.gutter)[1], device)
    pair = torch.tensor([0], dtype=torch.int64, device=device)
    components_one_program(2, pair, pair + 1)
