"""The atlas stage: cut the mesh into charts and lay them out in one square texture.

Methods (settings.atlas_method):
- "box" (default): axis-facing charts projected along their axis (pipeline/charts.py), shelf
  packed at the largest uniform scale with a gutter (pipeline/packing.py); charts found to
  overlap themselves at the bake resolution are split until none does. Every step is bounded
  (at most MAX_SPLIT_ROUNDS packings), so it cannot hang.
- "xatlas": xatlas (MIT) in a child process killed after settings.atlas_timeout_s, falling
  back to "box"; kept for comparison, since it takes seconds to minutes at our face counts.

Recipe (unwrap): 1. charts; 2. pack and check overlaps, split, repeat; 3. give each
(vertex, chart) pair its own vertex, so UV seams become vertex splits.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from multiprocessing.connection import Connection

import numpy as np
import torch

from kernels.uv_raster import UVRaster, uv_raster
from pipeline.charts import (
    Charts,
    isolate_faces,
    pleated_faces,
    project_charts,
    segment_charts,
)
from pipeline.packing import pack_rectangles
from pipeline.profiling import mark
from pipeline.settings import PipelineSettings
from pipeline.topology import manifold_pairs
from pipeline.types import Mesh, UVMesh

__all__ = ["box_atlas", "unwrap"]

log = logging.getLogger("pipeline.atlas")

# Layouts tried: after each, faces found overlapping (and their neighbours in the chart: the
# overlap's margin, which the next layout's texel centres may hit) become charts of their
# own; a triangle alone cannot overlap itself. One or two rounds on the shared prompts.
MAX_LAYOUT_ROUNDS = 4


def _chart_boxes(corners: np.ndarray, chart: np.ndarray, count: int) -> np.ndarray:
    """corners [F, 3, 2], chart [F] -> [C, 2, 2] (min, max) of each chart's corners.

    Every chart id in 0..count-1 has at least one face.
    """
    flat_chart = np.repeat(chart, 3)
    order = np.argsort(flat_chart, kind="stable")
    flat = corners.reshape(-1, 2)[order]
    starts = np.searchsorted(flat_chart[order], np.arange(count))
    return np.stack((np.minimum.reduceat(flat, starts), np.maximum.reduceat(flat, starts)), 1)


def _place(corners: np.ndarray, charts: Charts, size: int, gutter: int) -> np.ndarray:
    """Pack the charts; returns [F, 3, 2] corner UVs in texel units."""
    chart = charts.chart_of_face
    boxes = _chart_boxes(corners, chart, charts.count)
    packing = pack_rectangles(boxes[:, 1] - boxes[:, 0], size, gutter)
    local = (corners - boxes[chart, 0][:, None, :]) * packing.scale  # [F, 3, 2] from box corner
    local = np.where(packing.transposed[chart][:, None, None], local[..., ::-1], local)
    return local + packing.origins[chart][:, None, :]


def _with_chart_neighbours(faces: np.ndarray, charts: Charts, flagged: np.ndarray) -> np.ndarray:
    """[F] bool: the flagged faces and their edge neighbours in the same chart."""
    a, b, _ = manifold_pairs(faces)
    same = charts.chart_of_face[a] == charts.chart_of_face[b]
    grown = flagged.copy()
    grown[a[same & flagged[b]]] = True
    grown[b[same & flagged[a]]] = True
    return grown


def box_atlas(
    positions: np.ndarray, faces: np.ndarray, size: int, gutter: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, UVRaster, dict[str, float]]:
    """positions [V, 3], faces [F, 3] -> chart per face [F], corner UVs [F, 3, 2] in [0, 1],
    and the conservative raster of the final layout, for the bake to reuse."""
    charts = segment_charts(positions, faces)
    mark("atlas.segment")
    # Local fold-overs are found without a texel grid; the raster below catches the rest.
    isolated = pleated_faces(project_charts(positions, faces, charts), faces, charts)
    charts = isolate_faces(charts, isolated)
    mark("atlas.pleats")
    soup = torch.arange(3 * len(faces), device=device).reshape(-1, 3)
    for _ in range(MAX_LAYOUT_ROUNDS):
        texels = _place(project_charts(positions, faces, charts), charts, size, gutter)
        uvs = torch.from_numpy((texels / size).reshape(-1, 2).astype(np.float32)).to(device)
        raster = uv_raster(uvs, soup, size, size, conservative=True)
        overlapping = raster.overlapping.cpu().numpy() & ~isolated
        if not overlapping.any():
            break
        overlapping = _with_chart_neighbours(faces, charts, overlapping) & ~isolated
        isolated |= overlapping
        charts = isolate_faces(charts, overlapping)
    else:
        log.warning(
            "atlas: %d faces still overlap after %d layouts",
            int(overlapping.sum()),
            MAX_LAYOUT_ROUNDS,
        )
    mark("atlas.layout")  # every round of packing, raster and overlap isolation
    u, v = texels[:, 1] - texels[:, 0], texels[:, 2] - texels[:, 0]
    area = 0.5 * np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])
    stats = {
        "charts": float(charts.count),
        "isolated_faces": float(isolated.sum()),
        "utilisation": float(area.sum() / (size * size)),
    }
    return charts.chart_of_face, (texels / size).astype(np.float32), raster, stats


def _split_seams(
    mesh: Mesh, chart: np.ndarray, corner_uvs: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One vertex per (vertex, chart): -> positions, normals, uvs, faces on the mesh's device."""
    faces = mesh.faces.cpu().numpy()
    V = len(mesh.positions)
    keys = (np.repeat(chart, 3) * V + faces.reshape(-1)).astype(np.int64)
    unique_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    source = torch.from_numpy(unique_keys % V).to(mesh.positions.device)
    uvs = torch.from_numpy(corner_uvs.reshape(-1, 2)[first]).to(mesh.positions.device)
    new_faces = torch.from_numpy(inverse.reshape(-1, 3).astype(np.int64)).to(mesh.faces.device)
    return mesh.positions[source], mesh.normals[source], uvs, new_faces


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
            log.warning("xatlas outlasted %.0f s: using the box atlas", settings.atlas_timeout_s)
            return None
        vmapping, indices, uvs = parent.recv()
    except (EOFError, OSError):
        log.warning("xatlas failed: using the box atlas")
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


def unwrap(mesh: Mesh, settings: PipelineSettings) -> UVMesh:
    start = time.perf_counter()
    if settings.atlas_method == "xatlas":
        result = _xatlas(mesh, settings)
        if result is not None:
            return result
    positions = mesh.positions.cpu().numpy()
    faces = mesh.faces.cpu().numpy()
    chart, corner_uvs, raster, stats = box_atlas(
        positions, faces, settings.texture_size, settings.gutter, mesh.positions.device
    )
    new_positions, normals, uvs, new_faces = _split_seams(mesh, chart, corner_uvs)
    mark("atlas.seams")
    log.info(
        "atlas box: %d faces -> %d charts, %d vertices, utilisation %.2f, %.0f ms",
        len(faces),
        stats["charts"],
        len(new_positions),
        stats["utilisation"],
        (time.perf_counter() - start) * 1e3,
    )
    return UVMesh(new_positions, new_faces, normals, uvs, mesh.frame, stats, raster)
