"""The mesh stage: raw generator triangles -> a clean, simplified, outward mesh in glTF's frame.

Recipe (process_mesh):
  1. weld vertices that share a position (generators emit soups or near-soups);
  2. drop degenerate faces (on the device, where the raw mesh is);
  3. simplify to the face budget (pipeline/simplify.py: on CUDA rounds of parallel edge
     collapse on the GPU, pipeline/decimate.py; elsewhere slabs cut on the mesh's device and
     simplified in host processes; winding does not matter to either, so the steps below run
     on the small mesh), and weld the slabs back together;
  4. drop degenerate and duplicate faces, wind every manifold piece consistently, outward;
  5. drop unreferenced vertices;
  (3's weld to 5 run on the GPU when the asset is there, pipeline/winding.py, else on the
  host, pipeline/topology.py);
  6. Z up -> Y up, and fit into the unit cube centred at the origin;
  7. smooth area-weighted normals.
"""

from __future__ import annotations

import logging
import time

import torch

from kernels.vertex_normals import vertex_normals
from kernels.weld import weld
from pipeline import winding
from pipeline.profiling import mark
from pipeline.settings import PipelineSettings
from pipeline.simplify import simplify
from pipeline.topology import clean_faces, drop_degenerate, orient_outward
from pipeline.types import Frame, Mesh, RawAsset

__all__ = ["fit_frame", "process_mesh"]

log = logging.getLogger("pipeline.mesh")

NO_FACE_LEFT = "the generator's mesh has no valid face left after cleaning"


def fit_frame(positions_zup: torch.Tensor, margin: float) -> tuple[torch.Tensor, Frame]:
    """[V, 3] Z-up asset positions -> [V, 3] Y-up positions whose largest side is 1 - margin."""
    # glTF is Y up with the front towards +Z; TRELLIS.2's frame is Z up with the camera on -Y:
    # (x, y, z) -> (x, z, -y).
    yup = torch.stack((positions_zup[:, 0], positions_zup[:, 2], -positions_zup[:, 1]), dim=1)
    lo, hi = yup.amin(0), yup.amax(0)
    center = (lo + hi) / 2
    extent = float((hi - lo).amax())
    scale = (1.0 - margin) / extent if extent > 0 else 1.0
    frame = Frame(scale=scale, center=tuple(float(v) for v in center.tolist()))
    return ((yup - center) * scale).float(), frame


def _welded_clean_outward(
    positions: torch.Tensor, faces: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3 (the slabs' weld) to 5 on the device -> positions [V, 3], faces [F, 3]."""
    welded, slab_remap = weld(positions)
    faces = slab_remap[faces]
    mark("mesh.weld_slabs")
    faces = winding.orient_outward(welded, winding.clean_faces(welded, faces))
    if len(faces) == 0:
        raise ValueError(NO_FACE_LEFT)
    mark("mesh.orient")
    positions, faces = winding.compact(welded, faces)
    mark("mesh.compact")
    return positions, faces


# As the atlas: no autograd bookkeeping (pipeline/atlas.py's unwrap).
@torch.inference_mode()
def process_mesh(asset: RawAsset, settings: PipelineSettings) -> Mesh:
    start = time.perf_counter()
    device = asset.vertices.device
    faces_in = len(asset.faces)
    # 1. Weld.
    unique, remap = weld(asset.vertices.float())
    mark("mesh.weld")
    # 2. Degenerate faces.
    faces_t = drop_degenerate(unique, remap[asset.faces.long()])
    mark("mesh.degenerate")
    # 3. Simplify (on the GPU, or the slabs on the host), then weld the slabs.
    budget = settings.faces_kept(device.type)
    positions, faces = simplify(unique, faces_t, budget, settings.simplify_method)
    mark("mesh.simplify")
    if device.type == "cuda":  # the weld, 4 and 5 on the device: the same faces (winding.py)
        positions_t, faces_t = _welded_clean_outward(
            torch.from_numpy(positions).to(device), torch.from_numpy(faces).to(device)
        )
    else:
        welded, slab_remap = weld(torch.from_numpy(positions))
        positions, faces = welded.numpy(), slab_remap.numpy()[faces]
        mark("mesh.weld_slabs")
        # 4. Clean and orient.
        faces = orient_outward(positions, clean_faces(positions, faces))
        if len(faces) == 0:
            raise ValueError(NO_FACE_LEFT)
        mark("mesh.orient")
        # 5. Compact.
        positions_t, faces_t = winding.compact(torch.from_numpy(positions), torch.from_numpy(faces))
        mark("mesh.compact")
    # 6. Output frame.
    positions_out, frame = fit_frame(positions_t.to(device), settings.fit_margin)
    faces_t = faces_t.to(device)
    mark("mesh.frame")
    # 7. Normals.
    normals = vertex_normals(positions_out, faces_t)
    mark("mesh.normals")
    elapsed_ms = (time.perf_counter() - start) * 1e3
    log.info(
        "mesh: %d faces -> %d faces, %d vertices, %.0f ms",
        faces_in,
        len(faces_t),
        len(positions_out),
        elapsed_ms,
    )
    stats = {"faces_in": float(faces_in), "faces_out": float(len(faces_t))}
    return Mesh(positions_out, faces_t, normals, frame, stats)
