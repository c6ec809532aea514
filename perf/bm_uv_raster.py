"""uv_raster: the Triton kernels against the torch path on the same device and the numpy
reference on the host, on mesh-like atlases (the tests' `jittered_grid`: the unit square as
jittered cells split into two triangles each, tiling it without overlap), conservative as the
atlas and the bake call it.

Cases: about 200k and 1M faces into 2048² and 4096². The numpy reference rasterises one face
at a time and one covered texel at a time in Python, so its cost follows the texel count: it
is timed on its own stated case (5k faces into 256²), beside Triton and torch on that same
case, never scaled to the others. Rows time the private paths (`_uv_raster_triton`,
`_uv_raster_torch`); the public function adds the same input checks to either.
floor_bytes: uvs and faces read once, face ids (int64) and barycentrics written once.

    python perf/kernels.py --ops uv_raster [--quick] [--device cpu]
"""

from __future__ import annotations

import os

import numpy as np
import torch
from bench import Row, median_ms

import kernels.uv_raster as uv_raster_module
from kernels.uv_raster import _uv_raster_torch, uv_raster_reference
from tests.kernels.test_uv_raster import jittered_grid

OP = "uv_raster"
CASES = [(200_000, 2048), (1_000_000, 2048), (200_000, 4096), (1_000_000, 4096)]
REFERENCE_CASE = (5_000, 256)  # faces, texels a side: the numpy reference's own case
QUICK_CASES = [(2_000, 128)]
QUICK_REFERENCE_CASE = (500, 64)


def _floor_bytes(uvs: np.ndarray, faces: np.ndarray, size: int) -> int:
    texels = size * size
    return uvs.nbytes + faces.size * 8 + texels * 8 + texels * 3 * 4


def _triton_runs_on(device: str) -> bool:
    """Natively on CUDA, or on the CPU under Triton's interpreter (slow, a smoke run)."""
    if uv_raster_module.triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _case_rows(device: str, face_count: int, size: int, reference: bool) -> list[Row]:
    uvs, faces = jittered_grid(0, face_count)
    case = f"{len(faces):,} faces into {size}²" + (" (numpy's case)" if reference else "")
    floor = _floor_bytes(uvs, faces, size)
    cuda = torch.device(device).type == "cuda"
    warmup, repeat = (3, 20) if cuda else (1, 3)
    uvs_d, faces_d = torch.from_numpy(uvs).to(device), torch.from_numpy(faces).to(device)
    rows = []
    if _triton_runs_on(device):
        ms = median_ms(
            lambda: uv_raster_module._uv_raster_triton(uvs_d, faces_d, size, size, True),
            device,
            warmup,
            repeat,
        )
        rows.append(Row(OP, case, "triton", ms, floor, repeat))
    ms = median_ms(
        lambda: _uv_raster_torch(uvs_d, faces_d, size, size, True), device, warmup, repeat
    )
    rows.append(Row(OP, case, "torch", ms, floor, repeat))
    if reference:
        ms = median_ms(lambda: uv_raster_reference(uvs, faces, size, size, True), "cpu", 1, 3)
        rows.append(Row(OP, case, "numpy", ms, floor, 3))
    return rows


def run(device: str, quick: bool) -> list[Row]:
    """Rows for every case: triton (where it runs), torch on `device`, numpy on its case."""
    cases, reference_case = (
        (QUICK_CASES, QUICK_REFERENCE_CASE) if quick else (CASES, REFERENCE_CASE)
    )
    rows = _case_rows(device, *reference_case, reference=True)
    for face_count, size in cases:
        rows.extend(_case_rows(device, face_count, size, reference=False))
    return rows
