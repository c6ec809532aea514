"""field_sample: the Triton kernels against the torch path on the same device and the numpy
reference.

Case: 4M points near a 1M-voxel field, the thin spherical shell of voxels within half a voxel
of a sphere centred in a 1024^3 grid (as a generator's surface), 3 channels; 98% of the points
lie within half a voxel of the sphere, 2% one to three voxels off (most of those reach the cube
search, none the brute force). `quick`: 2k points on a 10k-voxel shell at R = 64. Floor bytes:
coords (int64), attrs and points read once, the [M, C] float32 output written once.

The numpy reference walks one point at a time in Python (about 0.1 ms a point): at full size
it is timed on the first 20k of the points, same field, and its case says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Row, median_ms
from bm_weld import _count, triton_runs_on

from kernels.field_sample import (
    _field_sample_torch,
    _field_sample_triton,
    field_sample_reference,
)
from tests.kernels.test_field_sample import shell_field, shell_points

CHANNELS = 3
REFERENCE_POINTS = 20_000  # at full size


def _floor_bytes(voxels: int, points: int) -> int:
    return voxels * 3 * 8 + voxels * CHANNELS * 4 + points * 3 * 4 + points * CHANNELS * 4


def run(device: str, quick: bool) -> list[Row]:
    resolution, voxels, count = (64, 10_000, 2_000) if quick else (1024, 1_000_000, 4_000_000)
    coords, attrs, radius = shell_field(resolution, voxels, CHANNELS, seed=0)
    points = shell_points(resolution, radius, count, seed=1)
    c, a, p = (torch.from_numpy(x).to(device) for x in (coords, attrs, points))
    N = len(coords)
    case = f"{_count(count)} points, {_count(N)}-voxel shell at R = {resolution}, C = {CHANNELS}"
    repeat = 3 if quick else 20
    timed = {"torch": lambda: _field_sample_torch(c, a, resolution, p)}
    if triton_runs_on(device):
        timed = {"triton": lambda: _field_sample_triton(c, a, resolution, p), **timed}
    results = []
    for impl, fn in timed.items():
        ms = median_ms(fn, device, warmup=1 if quick else 3, repeat=repeat)
        results.append(Row("field_sample", case, impl, ms, _floor_bytes(N, count), repeat))
    # The reference on the host: all the points when quick, else the first REFERENCE_POINTS.
    subset = points if quick else points[:REFERENCE_POINTS]
    if len(subset) < count:
        case = f"first {_count(len(subset))} of the points, same {_count(N)}-voxel shell"
    reference = lambda: field_sample_reference(coords, attrs, resolution, subset)  # noqa: E731
    ms = median_ms(reference, "cpu", warmup=0, repeat=1)  # seconds a run: once
    results.append(Row("field_sample", case, "numpy", ms, _floor_bytes(N, len(subset)), 1))
    return results
