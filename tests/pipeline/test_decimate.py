"""decimate: the GPU rounds of parallel edge collapses keep a closed surface closed, manifold,
consistently wound and on its shape; hold an open border's outline; leave lone triangles,
small closed pieces and non-manifold edges alone; give the same bits twice; and
simplify runs them on CUDA only, and its slabs finish where they stop short."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline import decimate as decimate_module
from pipeline import simplify as simplify_module
from pipeline.decimate import decimate
from tests.triton_caches import compiled_variants


def as_tensors(mesh: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)


def edge_uses(faces: np.ndarray) -> dict[tuple[int, int], int]:
    """Each directed edge's count (corner k -> k+1)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys, counts = np.unique(directed, axis=0, return_counts=True)
    return {(int(a), int(b)): int(c) for (a, b), c in zip(keys, counts, strict=True)}


def components(vertex_count: int, faces: np.ndarray) -> int:
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(vertex_count,) * 2)
    return connected_components(graph, directed=False)[0]


def height_field(n: int) -> trimesh.Trimesh:
    """An open square sheet z = 0.1 sin(3x) cos(2y) over [0, 1]^2, n x n quads."""
    x, y = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    points = np.stack([x, y, 0.1 * np.sin(3 * x) * np.cos(2 * y)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).ravel()
    b, c, d = a + n + 1, a + 1, a + n + 2
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([c, b, d], 1)])
    return trimesh.Trimesh(points, faces, process=False)


def test_a_closed_sphere_stays_closed_manifold_wound_and_round() -> None:
    positions, faces = as_tensors(trimesh.creation.icosphere(subdivisions=5))
    out_positions, out_faces = decimate(positions, faces, 2000)
    f = out_faces.numpy()
    assert 1999 <= len(f) <= 2000
    uses = edge_uses(f)
    assert set(uses.values()) == {1}  # every directed edge once: consistent winding
    assert all((b, a) in uses for a, b in uses)  # and its twin: closed, two faces an edge
    assert len(out_positions) - len(uses) // 2 + len(f) == 2  # Euler: still a sphere
    radius = torch.linalg.vector_norm(out_positions, dim=1)
    assert float((radius - 1).abs().max()) < 5e-3
    again = decimate(positions, faces, 2000)
    assert torch.equal(again[0], out_positions) and torch.equal(again[1], out_faces)


def test_untouched_vertices_keep_their_exact_positions() -> None:
    """Scaled and moved off the origin, as assets are: each result vertex is either an input
    vertex bit for bit or a collapse's point, well away from any."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    positions, faces = as_tensors(sphere)
    positions = positions * 0.37 + torch.tensor([0.123, -4.56, 7.89])
    out_positions, _ = decimate(positions, faces, 4000)
    # Direct differences: the matrix-product form's rounding depends on the host's BLAS (an
    # exact match came out 1.2e-7 apart on an AMD EPYC CI host).
    nearest = torch.cdist(
        out_positions.double(), positions.double(), compute_mode="donot_use_mm_for_euclid_dist"
    ).amin(1)
    assert 0 < int((nearest == 0).sum()) < len(out_positions)
    assert bool(((nearest == 0) | (nearest > 1e-4)).all())
    assert torch.equal(decimate(positions, faces, len(faces))[1], faces)  # under: unchanged


def test_an_open_sheet_keeps_its_outline() -> None:
    sheet = height_field(60)
    positions, faces = as_tensors(sheet)
    out_positions, out_faces = decimate(positions, faces, 600)
    assert len(out_faces) <= 600
    uses = edge_uses(out_faces.numpy())
    border = {v for a, b in uses if (b, a) not in uses for v in (a, b)}
    xy = out_positions[sorted(border), :2].numpy()
    off_square = np.minimum(np.minimum(xy[:, 0], 1 - xy[:, 0]), np.minimum(xy[:, 1], 1 - xy[:, 1]))
    assert np.abs(off_square).max() < 1e-3  # open-edge vertices stay on the square's sides
    lo, hi = out_positions[:, :2].amin(0), out_positions[:, :2].amax(0)
    assert torch.allclose(lo, torch.zeros(2), atol=1e-4) and torch.allclose(
        hi, torch.ones(2), atol=1e-4
    )
    assert components(len(out_positions), out_faces.numpy()) == 1


def test_lone_triangles_and_small_closed_pieces_stay() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    pieces = [sphere]
    generator = np.random.default_rng(0)
    for k in range(12):
        box = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
        pieces.append(box.apply_translation([2 + k * 0.1, 0, 0]))
    lone = generator.random((40, 3, 3)) * 0.02 + np.array([0, 3, 0])
    soup = trimesh.Trimesh(lone.reshape(-1, 3), np.arange(120).reshape(40, 3), process=False)
    mesh = trimesh.util.concatenate([*pieces, soup])
    positions, faces = as_tensors(mesh)
    before = components(len(positions), faces.numpy())
    out_positions, out_faces = decimate(positions, faces, 1000)
    assert components(len(out_positions), out_faces.numpy()) == before
    # The soup's triangles are all still there, untouched.
    kept = {tuple(np.round(t, 6).ravel()) for t in out_positions[out_faces].numpy()}
    assert all(tuple(np.round(t, 6).ravel()) in kept for t in lone.astype(np.float32))


def test_non_manifold_edges_stay_put() -> None:
    """A T: a vertical sheet standing on a flat one along the line x = 0.5, every edge of
    that line used by four faces: its vertices keep their exact places."""
    n = 40
    flat = height_field(n)
    flat.vertices[:, 2] = 0.0
    junction = np.arange(n + 1) + (n // 2) * (n + 1)  # the flat sheet's vertices at x = 0.5
    y, z = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 0.5, n // 2 + 1), indexing="ij")
    wall = np.stack([np.full_like(y, 0.5), y, z], -1).reshape(-1, 3)  # [n + 1, n / 2 + 1]
    index = np.arange(len(wall)).reshape(n + 1, n // 2 + 1) + len(flat.vertices)
    index[:, 0] = junction  # the wall's foot is the flat sheet's line
    i, j = np.meshgrid(np.arange(n), np.arange(n // 2), indexing="ij")
    a, b, c, d = index[i, j], index[i + 1, j], index[i, j + 1], index[i + 1, j + 1]
    wall_faces = np.concatenate(
        [
            np.stack([a.ravel(), b.ravel(), c.ravel()], 1),
            np.stack([c.ravel(), b.ravel(), d.ravel()], 1),
        ]
    )
    positions = torch.tensor(np.concatenate([flat.vertices, wall]), dtype=torch.float32)
    faces = torch.tensor(np.concatenate([flat.faces, wall_faces]))
    out_positions, out_faces = decimate(positions, faces, 400)
    assert len(out_faces) < len(faces) // 4
    for v in junction:
        assert (out_positions == positions[v]).all(1).any()


def test_simplify_runs_the_rounds_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(positions: torch.Tensor, faces: torch.Tensor, target: int):
        calls.append((len(faces), target))
        return decimate(positions, faces, target)

    monkeypatch.setattr(simplify_module, "decimate", spy)
    positions, faces = as_tensors(trimesh.creation.icosphere(subdivisions=5))
    simplify_module.simplify(positions, faces, 1000)  # on the CPU: the slabs
    assert calls == []
    if not torch.cuda.is_available():
        return
    simplify_module.simplify(positions.cuda(), faces.cuda(), 1000, "slabs")
    assert calls == []
    _, triangles = simplify_module.simplify(positions.cuda(), faces.cuda(), 1000)
    assert calls == [(len(faces), 1000)]
    assert 999 <= len(triangles) <= 1000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_slabs_finish_where_the_rounds_stop_short(monkeypatch: pytest.MonkeyPatch) -> None:
    def halfway(positions: torch.Tensor, faces: torch.Tensor, target: int):
        return decimate(positions, faces, 4 * target)  # as if the rounds ran out of collapses

    monkeypatch.setattr(simplify_module, "decimate", halfway)
    positions, faces = as_tensors(trimesh.creation.icosphere(subdivisions=5))
    _, triangles = simplify_module.simplify(positions.cuda(), faces.cuda(), 1000)
    assert abs(len(triangles) - 1000) <= 20


def test_a_round_without_safe_collapses_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = []
    real = decimate_module._independent

    def counted(*args):
        rounds.append(1)
        return real(*args)

    monkeypatch.setattr(decimate_module, "_independent", counted)
    generator = torch.Generator().manual_seed(1)
    positions = torch.rand(3000, 3, generator=generator)
    faces = torch.arange(3000).reshape(1000, 3)
    _out_positions, out_faces = decimate(positions, faces, 100)
    assert len(out_faces) == 1000 and len(rounds) == 1


def test_chosen_edges_have_no_shared_or_adjacent_ends() -> None:
    positions, faces = as_tensors(trimesh.creation.icosphere(subdivisions=3))
    V = len(positions)
    low, high, _ = decimate_module._edges(faces, V)
    rank = torch.randperm(len(low), generator=torch.Generator().manual_seed(2))
    candidate = rank < len(low) // 2
    chosen = decimate_module._independent(low, high, rank, candidate, V)
    assert len(chosen) > len(low) // 40 and bool(candidate[chosen].all())
    adjacent = {(int(a), int(b)) for a, b in zip(low, high, strict=True)}
    adjacent |= {(b, a) for a, b in adjacent} | {(v, v) for v in range(V)}
    ends = [(int(low[e]), int(high[e])) for e in chosen]
    for i, first in enumerate(ends):
        for second in ends[i + 1 :]:
            assert not any((u, w) in adjacent for u in first for w in second)


def test_priorities_are_distinct_and_ordered_by_cost() -> None:
    generator = torch.Generator().manual_seed(3)
    cost = torch.rand(200_000, generator=generator, dtype=torch.float64)
    cost[::3] = 0.0  # a flat region's ties
    cost[::7] = torch.inf
    keys = decimate_module._priority(cost)
    assert len(torch.unique(keys)) == len(keys)
    ordered = cost.float()[torch.argsort(keys)]
    assert bool((ordered[1:] >= ordered[:-1]).all())
    zeros = torch.nonzero(cost[torch.argsort(keys)] == 0).squeeze(1)
    first = torch.argsort(keys)[zeros[:100]]
    assert not bool((first[1:] > first[:-1]).all())  # ties not in index order


def test_the_threshold_takes_about_the_share_of_allowed_edges() -> None:
    generator = torch.Generator().manual_seed(4)
    cost = torch.rand(1_000_000, generator=generator, dtype=torch.float64)
    allowed = torch.rand(1_000_000, generator=generator) < 0.6
    keys = decimate_module._priority(cost)
    taken = allowed & (keys < decimate_module._threshold(keys, allowed))
    share = int(taken.sum()) / int(allowed.sum())
    assert abs(share - decimate_module.SHARE) < 0.01
    small = allowed[:5000]  # under SAMPLE: exact
    taken = small & (keys[:5000] < decimate_module._threshold(keys[:5000], small))
    assert int(taken.sum()) == int(int(small.sum()) * decimate_module.SHARE)


def round_variants() -> int:
    """Variants of the round's Triton kernels this process has compiled (natively)."""
    from kernels import (
        apply_collapses,
        collapse_checks,
        edge_collapse,
        edge_modes,
        independent_edges,
    )

    kernels = (
        edge_collapse._collapse_kernel,
        edge_modes._flags_kernel,
        edge_modes._modes_kernel,
        independent_edges._near_kernel,
        independent_edges._ring_kernel,
        independent_edges._pick_kernel,
        independent_edges._claim_kernel,
        collapse_checks._owner_kernel,
        collapse_checks._link_kernel,
        collapse_checks._turn_kernel,
        collapse_checks._verdict_kernel,
        apply_collapses._apply_kernel,
        apply_collapses._faces_kernel,
    )
    return compiled_variants(*kernels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_rounds_kernels_give_the_twins_mesh_and_compile_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole decimation through the round's Triton kernels gives the bits of the same one
    through their torch twins (on the GPU too), and after one mesh, meshes of other vertex
    and edge counts (so other alignments of the kernels' buffers) compile nothing more: each
    new variant would cost a request."""
    from kernels import (
        apply_collapses,
        collapse_checks,
        edge_collapse,
        edge_modes,
        independent_edges,
    )

    meshes = [
        (*as_tensors(trimesh.creation.icosphere(subdivisions=5)), 3000),
        (*as_tensors(height_field(61)), 900),  # open: the boundary modes
    ]
    got = [decimate(p.cuda(), f.cuda(), target) for p, f, target in meshes]
    before = round_variants()
    for n, target in ((37, 500), (40, 700), (53, 1111)):
        mesh = as_tensors(height_field(n))
        decimate(mesh[0].cuda(), mesh[1].cuda(), target)
    assert round_variants() == before
    for module in (apply_collapses, collapse_checks, edge_collapse, edge_modes, independent_edges):
        monkeypatch.setattr(module, "triton", None)
    expected = [decimate(p.cuda(), f.cuda(), target) for p, f, target in meshes]
    for (p, f), (p_twin, f_twin), (_, _, target) in zip(got, expected, meshes, strict=True):
        assert torch.equal(p, p_twin) and torch.equal(f, f_twin)
        assert target - 1 <= len(f) <= target
