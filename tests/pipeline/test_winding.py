"""pipeline/winding.py (the device path of the clean-up and orientation) against
pipeline/topology.py (the host path): the same faces wherever the pieces can be wound
consistently; a consistent cut where they cannot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pipeline.winding as winding
from pipeline import topology
from pipeline.mesh import process_mesh
from pipeline.settings import PipelineSettings
from pipeline.types import RawAsset
from tests.pipeline.test_topology import (
    assert_rewound_rows,
    flip_some,
    icosphere,
    inconsistent_edges,
    tetrahedron,
)


def both(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(host path, device path on torch) of clean-up then orientation."""
    host = topology.orient_outward(positions, topology.clean_faces(positions, faces))
    p, f = torch.from_numpy(positions), torch.from_numpy(faces)
    device = winding.orient_outward(p, winding.clean_faces(p, f)).numpy()
    return host, device


def spheres(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """count icospheres of different sizes apart, faces shuffled and half of them flipped,
    a few repeated (some reversed) and a few collapsed."""
    rng = np.random.default_rng(seed)
    positions, faces = [], []
    for k in range(count):
        p, f = icosphere(1 + k % 3, centre=(3.0 * k, 0, 0))
        faces.append(f + sum(len(q) for q in positions))
        positions.append(p * (1 + k % 2))
    p, f = np.concatenate(positions), np.concatenate(faces)
    f = flip_some(f[rng.permutation(len(f))], seed)
    repeats = f[rng.choice(len(f), 20)]
    repeats[::2] = repeats[::2, ::-1]
    collapsed = f[rng.choice(len(f), 5)]
    collapsed[:, 1] = collapsed[:, 0]
    extra = np.concatenate((repeats, collapsed))
    where = rng.choice(len(f) + 1, len(extra))
    return p, np.insert(f, where, extra, axis=0)


def moebius(segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A Moebius strip: no consistent winding exists."""
    t = np.arange(segments) * 2 * np.pi / segments
    rows = []
    for side in (-0.3, 0.3):
        half = t / 2
        rows.append(
            np.stack(
                (
                    (1 + side * np.cos(half)) * np.cos(t),
                    (1 + side * np.cos(half)) * np.sin(t),
                    side * np.sin(half),
                ),
                axis=1,
            )
        )
    positions = np.concatenate(rows)  # inner ring 0..n-1, outer ring n..2n-1
    n = segments
    faces = []
    for i in range(n):
        j = (i + 1) % n
        # The last segment joins the strip to itself with its sides swapped.
        a, b = i, n + i
        c, d = (j, n + j) if j else (n + j, j)
        faces += [[a, b, c], [b, d, c]]
    return positions, np.array(faces, np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_shuffled_spheres_give_the_host_paths_faces(seed: int) -> None:
    positions, faces = spheres(6, seed)
    host, device = both(positions, faces)
    assert np.array_equal(device, host)
    assert inconsistent_edges(device) == []


def test_the_tetrahedron_inside_out_and_a_face_with_its_reverse() -> None:
    positions, faces = tetrahedron()
    for variant in (faces, faces[:, ::-1].copy(), np.concatenate((faces, faces[:1, ::-1]))):
        host, device = both(positions, variant)
        assert np.array_equal(device, host)


def test_non_manifold_edges_and_open_strips_give_the_host_paths_faces() -> None:
    rng = np.random.default_rng(3)
    # A fan of four faces on one edge (non-manifold) and an open strip, winding scrambled.
    positions = rng.normal(size=(40, 3))
    fan = [[0, 1, k] for k in range(2, 6)]
    strip = [[k, k + 1, k + 2] if k % 2 == 0 else [k + 1, k, k + 2] for k in range(10, 30)]
    faces = flip_some(np.array(fan + strip, np.int64), 4)
    host, device = both(positions, faces)
    assert np.array_equal(device, host)
    assert inconsistent_edges(device) == []


def test_a_moebius_strip_gets_one_inconsistent_edge_like_the_host_path() -> None:
    positions, faces = moebius()
    faces = flip_some(faces, 5)
    host, device = both(positions, faces)
    assert_rewound_rows(device, faces)
    assert len(inconsistent_edges(device)) == len(inconsistent_edges(host)) == 1
    again = both(positions, faces)[1]
    assert np.array_equal(device, again)


def test_manifold_pairs_equal_the_host_paths() -> None:
    positions, faces = spheres(3, 9)
    faces = topology.clean_faces(positions, faces)
    for got, want in zip(
        winding.manifold_pairs(torch.from_numpy(faces)),
        topology.manifold_pairs(faces),
        strict=True,
    ):
        assert np.array_equal(got.numpy(), want)


def test_face_parities_settle_on_a_long_chain_numbered_at_random() -> None:
    """A path of 50k faces in random order (the hooking's slow case): every face's root is the
    smallest, parities compose along the path."""
    rng = np.random.default_rng(11)
    n = 50_000
    order = torch.from_numpy(rng.permutation(n))
    flips = torch.from_numpy(rng.random(n - 1) < 0.5)
    root, parity = winding.face_parities(n, order[:-1], order[1:], flips)
    assert torch.equal(root, torch.zeros(n, dtype=torch.int64))
    along = torch.cat((torch.zeros(1, dtype=torch.int64), torch.cumsum(flips.long(), 0) % 2))
    expected = torch.empty(n, dtype=torch.int64)
    expected[order] = along ^ along[order == 0]  # relative to face 0 wherever it sits
    assert torch.equal(parity, expected)


@pytest.mark.parametrize("base", [7, 1 << 21, 1 << 40])
def test_stable_order_of_rows_equals_lexsort(base: int) -> None:
    rng = np.random.default_rng(base % 1000)
    keys = rng.integers(0, base, size=(3000, 3))
    keys[100:200] = keys[:100]  # ties keep index order
    got = winding._stable_order(torch.from_numpy(keys)).numpy()
    assert np.array_equal(got, np.lexsort(keys.T[::-1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_mesh_stage_on_cuda_gives_the_host_paths_mesh() -> None:
    # The host's slabs on both: the GPU rounds (CUDA's default) simplify differently.
    settings = dataclasses.replace(
        PipelineSettings(device="cpu"), face_budget=4000, simplify_method="slabs"
    )
    positions, faces = spheres(8, 13)
    asset = RawAsset(
        vertices=torch.from_numpy(positions / 40).float(),
        faces=torch.from_numpy(faces),
        coords=torch.zeros(1, 3, dtype=torch.int32),
        attrs=torch.full((1, 6), 0.5),
        resolution=64,
    )
    on_host = process_mesh(asset, settings)
    on_gpu = process_mesh(
        dataclasses.replace(asset, vertices=asset.vertices.cuda(), faces=asset.faces.cuda()),
        settings,
    )
    assert torch.equal(on_gpu.faces.cpu(), on_host.faces)
    assert torch.equal(on_gpu.positions.cpu(), on_host.positions)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_compact_keeps_the_used_vertices_in_order_like_numpys_unique(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(17)
    positions = rng.normal(size=(5000, 3)).astype(np.float32)
    faces = rng.integers(0, 5000, size=(3000, 3))  # about half the vertices used
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    got_positions, got_faces = winding.compact(
        torch.from_numpy(positions), torch.from_numpy(faces), dtype
    )
    assert got_faces.dtype == dtype
    assert np.array_equal(got_positions.numpy(), positions[used])
    assert np.array_equal(got_faces.numpy(), inverse.reshape(-1, 3))
