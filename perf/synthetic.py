"""A TRELLIS-like test mesh of any size, and the high-frequency colour painted on it.

`synthetic_mesh(faces)` is what a voxel generator's decoder emits before our simplification:
a dense marching-cubes surface (scikit-image; Lewiner et al. 2003) of a blobby implicit solid
(a smooth union of spheres and tori, with low-amplitude noise, and one detached piece), with
the defects such meshes carry:
- open boundaries: two small caps removed, and a slab cut through the handle's top;
- non-manifold edges: a fin (a ribbon of faces standing on the surface) along part of one
  grid-plane contour, so each of its base edges has three faces.
Y up, fitted into the unit cube (largest side FIT_SIDE), outward counter-clockwise winding,
face count within FACE_TOLERANCE of the request. Deterministic for a seed.

`procedural_colour(points)` is a colour source (pipeline/bake.py) of the 3D point alone:
stripes of ~PERIODS periods across the object and hard-edged flat regions, so the bake's
texel density and its seams both show in a re-render.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kernels.vertex_normals import vertex_normals
from pipeline.settings import PipelineSettings
from pipeline.types import Frame, Mesh

__all__ = ["procedural_colour", "synthetic_mesh"]

FIT_SIDE = 1 - PipelineSettings().fit_margin  # largest side, as the pipeline's fit leaves it
# Marching-cubes faces of the solid scale with the grid's side squared; the first estimate
# (from a PROBE_RESOLUTION grid) lands within a few percent, one correction when it does not.
PROBE_RESOLUTION = 48
FACE_TOLERANCE = 0.15  # the returned mesh has faces within this fraction of the request
GRID_RETRY_TOLERANCE = 0.06  # redo the marching cubes once when it misses by more than this
MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
SMOOTH_UNION = 0.03  # polynomial smooth-min radius joining the blobs (world units)
NOISE_AMPLITUDE = 0.006
NOISE_WAVES = 6
NOISE_PERIODS = (4.0, 9.0)  # per unit, the range of the noise waves' frequencies
# A bound on the field's gradient: 1 for the smooth union of distances, plus the noise's
# amplitude / sqrt(waves) * waves * 2 pi * 9 = 0.83.
LIPSCHITZ = 1.85
# The marching cubes run only in cells whose first node lies within this many grid steps of
# the surface: a cell the surface crosses has every node within LIPSCHITZ * sqrt(3) = 3.2.
BAND_CELLS = 4.0
# The field is evaluated only in blocks of BLOCK^3 cells near the surface: ~7x fewer points
# than the whole grid at 1M faces. POINTS_PER_CHUNK bounds the memory of one evaluation.
BLOCK = 4
POINTS_PER_CHUNK = 1 << 22
CAP_RADIUS = 0.05
FIN_HEIGHT = 0.03
PERIODS = 30.0  # colour stripes across the unit cube
REGIONS = 5.0  # cells of the hard-edged colour regions across the unit cube
_FLAT_COLOURS = ((0.95, 0.55, 0.1), (0.1, 0.3, 0.8), (0.9, 0.9, 0.85))

# (centre, radius) of the spheres and (centre, axis, major, minor) of the tori.
_SPHERES = (((0.0, -0.1, 0.0), 0.26), ((0.05, 0.2, 0.05), 0.16))
_TORI = (
    ((-0.26, -0.05, 0.0), (0.0, 0.0, 1.0), 0.14, 0.045),  # a handle on the side
    ((0.0, -0.32, 0.0), (0.0, 1.0, 0.0), 0.24, 0.04),  # a ring around the base
)
_DETACHED = ((0.3, 0.32, -0.22), 0.07)  # a floating piece, as generators leave


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def _field(points: torch.Tensor, waves: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """points [..., 3] -> [...] signed distance-like field, negative inside."""
    value = None
    for centre, radius in _SPHERES:
        d = torch.linalg.vector_norm(points - points.new_tensor(centre), dim=-1) - radius
        value = d if value is None else _smooth_min(value, d, SMOOTH_UNION)
    for centre, axis, major, minor in _TORI:
        local = points - points.new_tensor(centre)
        along = (local * points.new_tensor(axis)).sum(-1)
        across = torch.linalg.vector_norm(
            local - along[..., None] * points.new_tensor(axis), dim=-1
        )
        d = torch.hypot(across - major, along) - minor
        value = _smooth_min(value, d, SMOOTH_UNION)
    # Elementwise (no matmul), so a point's value never depends on the batch it is in.
    phase = phases + sum(points[..., i, None] * waves[:, i] for i in range(3))
    noise = torch.sin(phase).sum(-1) * (NOISE_AMPLITUDE / math.sqrt(len(phases)))
    centre, radius = _DETACHED
    detached = torch.linalg.vector_norm(points - points.new_tensor(centre), dim=-1) - radius
    return torch.minimum(value + noise, detached)


def _noise_waves(seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> wave vectors [NOISE_WAVES, 3] and phases [NOISE_WAVES], float32, from the seed."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(NOISE_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = 2 * math.pi * rng.uniform(*NOISE_PERIODS, size=(NOISE_WAVES, 1))
    waves = torch.tensor(directions * frequencies, dtype=torch.float32, device=device)
    phases = rng.uniform(0, 2 * math.pi, NOISE_WAVES)
    return waves, torch.tensor(phases, dtype=torch.float32, device=device)


def _grid_field(resolution: int, seed: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The field on resolution^3 nodes spanning [-0.5, 0.5]^3, in a narrow band.

    -> values [N, N, N] float32 (axes x, y, z) and band [N, N, N] bool, the nodes within
    BAND_CELLS steps of the surface. The nodes fall into blocks of BLOCK^3; a block whose
    centre is too far from the surface for the field to change sign over it, or to come within
    reach of a band node's cell, is not evaluated: its nodes hold the centre's value (the right
    sign). So every corner of every cell the marching cubes visit is evaluated.
    """
    N, h = resolution, 1.0 / (resolution - 1)
    waves, phases = _noise_waves(seed, device)
    band_width = BAND_CELLS * h
    # 1. The field at the block centres, and the blocks near the surface.
    blocks = -(-N // BLOCK)  # nodes up to blocks * BLOCK >= N
    centres_1d = (torch.arange(blocks, device=device) * BLOCK + BLOCK / 2) * h - 0.5
    centres = torch.stack(torch.meshgrid(centres_1d, centres_1d, centres_1d, indexing="ij"), -1)
    coarse = _field(centres, waves, phases)  # [B, B, B]
    # A band node's cell corners lie within sqrt(3) h of it, and any node of a block within
    # BLOCK / 2 * sqrt(3) h of the block's centre: those blocks are all evaluated.
    reach = LIPSCHITZ * (BLOCK / 2 + 1) * math.sqrt(3) * h + band_width
    active = torch.nonzero(coarse.abs() < reach)  # [A, 3] block indices
    # 2. Every node takes its block's centre value; the active blocks' nodes are evaluated.
    values = coarse.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    values = values.repeat_interleave(BLOCK, 2)[:N, :N, :N].contiguous()
    evaluated = torch.zeros_like(values, dtype=torch.bool)
    steps = torch.arange(BLOCK, device=device)  # each node belongs to one block
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    per_chunk = max(1, POINTS_PER_CHUNK // len(offsets))
    for start in range(0, len(active), per_chunk):
        nodes = (active[start : start + per_chunk, None] * BLOCK + offsets).reshape(-1, 3)
        nodes = nodes[(nodes < N).all(1)]  # [<= A' * BLOCK^3, 3], each node once
        flat = (nodes[:, 0] * N + nodes[:, 1]) * N + nodes[:, 2]
        values.view(-1)[flat] = _field(nodes.float() * h - 0.5, waves, phases)
        evaluated.view(-1)[flat] = True
    band = evaluated & (values.abs() < band_width)
    return values.cpu().numpy(), band.cpu().numpy()


def _marching_cubes(
    resolution: int, seed: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> grid-index vertices [V, 3] float32, faces [F, 3] int64, vertex normals [V, 3]."""
    from skimage.measure import marching_cubes  # optional dependency: fails here, not at import

    values, band = _grid_field(resolution, seed, device)
    vertices, faces, normals, _ = marching_cubes(values, 0.0, mask=band)
    return vertices.astype(np.float32), faces.astype(np.int64), normals.astype(np.float32)


def _pick_resolution(target_faces: int, seed: int, device: torch.device) -> int:
    probe = len(_marching_cubes(PROBE_RESOLUTION, seed, device)[1])
    side = PROBE_RESOLUTION * math.sqrt(target_faces / probe)
    return int(np.clip(round(side), MIN_RESOLUTION, MAX_RESOLUTION))


def _fin(
    vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, plane: float, h: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ribbon on the edges that run in the grid plane z = plane (a contour of the surface),
    on the x > 0 side -> new vertices [K, 3] (grid units) and faces [2E, 3] (indices into the
    concatenation)."""
    corners = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # [3F, 2] directed edges
    on_plane = vertices[:, 2] == plane
    chosen = on_plane[corners].all(1) & (vertices[corners, 0] > vertices[:, 0].mean()).all(1)
    edges = np.unique(np.sort(corners[chosen], axis=1), axis=0)  # [E, 2]
    base = np.unique(edges)
    lifted = vertices[base] + FIN_HEIGHT / h * normals[base]
    top = np.searchsorted(base, edges) + len(vertices)  # [E, 2] the lifted copies
    a, b = edges[:, 0], edges[:, 1]
    ribbon = np.stack((np.stack((a, b, top[:, 1]), 1), np.stack((a, top[:, 1], top[:, 0]), 1)), 1)
    return lifted, ribbon.reshape(-1, 3)


def _cut(positions: np.ndarray, faces: np.ndarray, h: float) -> np.ndarray:
    """[F] bool: faces kept after the caps and the slab are removed."""
    centroids = positions[faces].mean(1)
    keep = np.ones(len(faces), bool)
    for direction in ((0.0, 0.0, 1.0), (0.6, -0.6, 0.5)):  # the caps: extreme points
        tip = positions[np.argmax(positions @ np.asarray(direction))]
        keep &= np.linalg.norm(centroids - tip, axis=1) > CAP_RADIUS
    # The slab: across the handle torus, above its centre, so the handle becomes a hook.
    (cx, cy, _), _, _, _ = _TORI[0]
    keep &= ~((np.abs(centroids[:, 0] - cx) < 1.5 * h) & (centroids[:, 1] > cy))
    return keep


def synthetic_mesh(faces: int, seed: int = 0, device: torch.device | str = "cpu") -> Mesh:
    """A TRELLIS-like mesh of about `faces` faces (see the module docstring), on `device`."""
    if faces < 1000:
        raise ValueError(f"synthetic meshes start at 1000 faces, got {faces}")
    device = torch.device(device)
    # 1. Marching cubes at the grid side that gives the face count.
    resolution = _pick_resolution(faces, seed, device)
    vertices, triangles, normals = _marching_cubes(resolution, seed, device)
    if abs(len(triangles) / faces - 1) > GRID_RETRY_TOLERANCE:
        resolution = round(resolution * math.sqrt(faces / len(triangles)))
        vertices, triangles, normals = _marching_cubes(resolution, seed, device)
    h = 1.0 / (resolution - 1)
    # 2. Outward counter-clockwise winding (the signed volume is positive).
    a, b, c = (vertices[triangles[:, i]].astype(np.float64) for i in range(3))
    if np.einsum("fk,fk->", a, np.cross(b, c)) < 0:
        triangles = triangles[:, ::-1].copy()
    # 3. The fin, along the contour of the grid plane through the middle.
    lifted, ribbon = _fin(vertices, triangles, normals, float(resolution // 2), h)
    positions = np.concatenate((vertices, lifted)) * h - 0.5
    # 4. Open boundaries, then drop the vertices no face uses.
    triangles = np.concatenate((triangles[_cut(positions, triangles, h)], ribbon))
    used, remap = np.unique(triangles, return_inverse=True)
    positions, triangles = positions[used], remap.reshape(-1, 3)
    # 5. Fit into the unit cube, Y up (the grid's axes are already x, y, z).
    lo, hi = positions.min(0), positions.max(0)
    positions = (positions - (lo + hi) / 2) * (FIT_SIDE / (hi - lo).max())
    positions_t = torch.from_numpy(positions.astype(np.float32)).to(device)
    faces_t = torch.from_numpy(triangles.astype(np.int64)).to(device)
    if abs(len(triangles) / faces - 1) > FACE_TOLERANCE:
        raise RuntimeError(f"synthetic mesh has {len(triangles)} faces for {faces} requested")
    normals_t = vertex_normals(positions_t, faces_t)
    return Mesh(positions_t, faces_t, normals_t, Frame(1.0, (0.0, 0.0, 0.0)))


def procedural_colour(
    face: torch.Tensor, barycentrics: torch.Tensor, points: torch.Tensor
) -> torch.Tensor:
    """A colour source: points [T, 3] (face ids and barycentrics unused) -> [T, 3] in [0, 1].

    Stripes of PERIODS periods per unit; a lattice of REGIONS cells per unit paints a third of
    its cells a flat colour (one of _FLAT_COLOURS) and inverts the stripes in another third, so
    region borders are hard edges."""
    x, y, z = points.float().unbind(-1)
    w = 2 * math.pi * PERIODS
    stripes = 0.5 + 0.4 * torch.stack(
        (
            torch.sin(w * x + 2.0 * torch.sin(w / 7 * y)),
            torch.sin(w * (0.8 * y + 0.3 * z) + 0.7),
            torch.sin(w * (0.9 * z - 0.4 * x)),
        ),
        -1,
    )
    cx, cy, cz = (torch.floor(REGIONS * (c + 0.5)).long() for c in (x, y, z))
    region = (cx + cy + cz) % 3  # [T]
    flat = points.new_tensor(_FLAT_COLOURS)[(cx + 2 * cz) % len(_FLAT_COLOURS)]  # [T, 3]
    inverted = torch.where((region == 2)[:, None], 1 - stripes, stripes)
    return torch.where((region == 1)[:, None], flat, inverted)
