"""Flat views of a mesh from the judge's four cameras: per pixel, the visible face, its
barycentrics and the 3D point, so any colour can be evaluated there (perf/quality.py).

The cameras are the judge's (../shared/tools/judge_render.py): radius 2, vertical field of view
49.1 degrees, 15 degrees above the object, azimuths 24, 120, 216, 312 (float32, 0 on +Z and
positive toward +X), looking at the origin with +Y up, square images. Back faces are culled:
a face is front-facing when it is counter-clockwise seen from the camera (glTF's winding).

Method (render_view), a z-buffer in torch on any device, deterministic:
  1. project the vertices with the pinhole camera (float64);
  2. cull back faces (the face normal against the direction to the eye) and faces behind the
     camera; each remaining face proposes the pixel centres inside its screen box;
  3. the candidates, in chunks of at most CANDIDATES_PER_CHUNK however large a single face is,
     are tested with the three edge functions (a centre on a shared edge belongs to both faces,
     so no crack opens) and their depth interpolated perspective-correctly;
  4. visibility: per pixel the smallest int64 key (quantised depth << 32 | face id), by
     `scatter_reduce("amin")`: integer atomics only, so the same bits every run;
  5. per visible pixel, the perspective-correct barycentrics of the winning face at the pixel
     centre, i.e. where the pixel's ray meets the face's plane, and the 3D point there.
`render_face_ids_reference` is the brute-force numpy twin of 1-4: every pixel's ray against
every face (Moller & Trumbore 1997), for the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "GRID_AZIMUTHS",
    "VIEW_SIZE",
    "Camera",
    "View",
    "box_candidates",
    "judge_cameras",
    "render_face_ids_reference",
    "render_view",
    "render_views",
]

# The judge's constants (judge_render.py).
VIEW_SIZE = 518
CAM_RADIUS = 2.0
CAM_YFOV_DEG = 49.1
CAM_PHI_DEG = -15.0  # the judge's elevation: y = -r sin(phi), so 15 degrees above
GRID_AZIMUTHS = tuple(float(a) for a in np.linspace(0, 360, 16)[[1, 5, 9, 13]].astype(np.float32))

# (face, pixel) candidates tested at once (~300 bytes each with the temporaries): larger
# chunks only cost page faults on the CPU; on CUDA a few launches per million candidates.
CANDIDATES_PER_CHUNK = 1 << 20
# A pixel centre this far outside an edge (in pixels) still counts as inside: a centre on an
# edge shared by two faces is inside both whatever the rounding, and the depth test picks one.
EDGE_TOLERANCE_PX = 1e-6
# Depths are quantised over [0, DEPTH_FAR) into 31 bits: steps of 4e-9, far below any depth
# gap between two surfaces of a mesh in the unit cube seen from radius 2.
DEPTH_FAR = 8.0
DEPTH_LEVELS = (1 << 31) - 1
# Vertices closer to the camera plane than this are "behind" it (never, in the unit cube).
NEAR = 1e-3
_EMPTY = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class Camera:
    """A pinhole camera; pixel (row i, column j) has its centre at (j + 0.5, i + 0.5)."""

    eye: tuple[float, float, float]
    right: tuple[float, float, float]  # +x on screen
    up: tuple[float, float, float]  # +y on screen (rows grow downward)
    forward: tuple[float, float, float]  # the viewing direction
    size: int  # square image side in pixels
    focal: float  # pixels per unit of (x / depth)

    def footprint(self, depth: torch.Tensor) -> torch.Tensor:
        """The side of one pixel, in world units, at camera depth `depth` (any shape)."""
        return depth / self.focal

    def axes(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> eye [3], rotation [3, 3] (rows: right, up, forward), float64 on `device`."""
        eye = torch.tensor(self.eye, dtype=torch.float64, device=device)
        rows = torch.tensor((self.right, self.up, self.forward), dtype=torch.float64)
        return eye, rows.to(device)


def judge_cameras(size: int = VIEW_SIZE) -> list[Camera]:
    """The judge's four grid views at `size` x `size` pixels."""
    cameras = []
    for azimuth in GRID_AZIMUTHS:
        az = np.deg2rad(np.float32(azimuth))
        phi = np.deg2rad(np.float32(CAM_PHI_DEG))
        eye = np.array(
            [
                CAM_RADIUS * math.cos(phi) * math.sin(az),
                -CAM_RADIUS * math.sin(phi),
                CAM_RADIUS * math.cos(phi) * math.cos(az),
            ]
        )
        forward = -eye / np.linalg.norm(eye)  # looking at the origin
        right = np.cross(forward, (0.0, 1.0, 0.0))
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        focal = (size / 2) / math.tan(math.radians(CAM_YFOV_DEG) / 2)
        as_tuple = lambda v: tuple(float(c) for c in v)  # noqa: E731
        cameras.append(
            Camera(as_tuple(eye), as_tuple(right), as_tuple(up), as_tuple(forward), size, focal)
        )
    return cameras


@dataclass
class View:
    """One rendered view; background pixels hold face -1 and zeros elsewhere."""

    camera: Camera
    face_ids: torch.Tensor  # [H, W] int64, -1: background
    barycentrics: torch.Tensor  # [H, W, 3] float32, of the face's corners in order
    points: torch.Tensor  # [H, W, 3] float32, the surface point seen at the pixel centre
    depth: torch.Tensor  # [H, W] float32, the point's camera depth (along `forward`)

    @property
    def foreground(self) -> torch.Tensor:
        return self.face_ids >= 0  # [H, W] bool


def box_candidates(
    x0: torch.Tensor, y0: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor, chunk: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every (box, x, y) of the integer boxes [x0, x0 + nx) x [y0, y0 + ny), in chunks.

    x0, y0, nx, ny: [B] int64 (nx, ny >= 0). Yields (box index, x, y), each [<= chunk] int64,
    boxes in order and rows within a box in order; a box larger than `chunk` spans chunks.
    One host synchronisation per call (the total count).
    """
    counts = nx * ny  # [B]
    ends = torch.cumsum(counts, 0)  # [B]
    total = int(ends[-1]) if len(ends) else 0
    for start in range(0, total, chunk):
        index = torch.arange(start, min(start + chunk, total), device=x0.device)
        box = torch.searchsorted(ends, index, right=True)
        local = index - (ends[box] - counts[box])
        width = nx[box]
        yield box, x0[box] + local % width, y0[box] + local // width


def _project(
    positions: torch.Tensor, camera: Camera
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """positions [V, 3] -> screen x [V], y [V] (pixels, rows down) and depth [V], float64."""
    eye, rows = camera.axes(positions.device)
    local = (positions.double() - eye) @ rows.T  # [V, 3]: right, up, forward
    depth = local[:, 2]
    half = camera.size / 2
    safe = torch.where(depth > NEAR, depth, torch.ones_like(depth))
    return half + camera.focal * local[:, 0] / safe, half - camera.focal * local[:, 1] / safe, depth


def _front_faces(positions: torch.Tensor, faces: torch.Tensor, camera: Camera) -> torch.Tensor:
    """[F] bool: counter-clockwise seen from the eye (the normal points toward it)."""
    eye, _ = camera.axes(positions.device)
    corners = positions.double()[faces]  # [F, 3, 3]
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return ((eye - corners[:, 0]) * normal).sum(1) > 0


def _edge_functions(
    sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
) -> torch.Tensor:
    """Corner screen coordinates sx, sy [N, 3] and points qx, qy [N] -> [N, 3]: e_i, the
    doubled signed area of the triangle (q, next corner, corner after), so e_i / sum is the
    screen-space barycentric of corner i."""
    e = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        e.append((sx[:, j] - qx) * (sy[:, k] - qy) - (sy[:, j] - qy) * (sx[:, k] - qx))
    return torch.stack(e, 1)


def render_view(
    positions: torch.Tensor, faces: torch.Tensor, camera: Camera, chunk: int = CANDIDATES_PER_CHUNK
) -> View:
    """positions [V, 3] float, faces [F, 3] int64 (on one device) -> the View from `camera`."""
    if positions.ndim != 2 or positions.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"positions [V, 3], faces [F, 3]; got {positions.shape}, {faces.shape}")
    device, size = positions.device, camera.size
    faces = faces.long()
    # 1. Project.
    sx, sy, depth = _project(positions, camera)
    fsx, fsy, fdepth = sx[faces], sy[faces], depth[faces]  # [F, 3] each
    # 2. Cull, and the pixel centres (c + 0.5) inside each face's screen box.
    keep = _front_faces(positions, faces, camera) & (fdepth > NEAR).all(1)
    x0 = torch.ceil(fsx.amin(1) - 0.5 - EDGE_TOLERANCE_PX).clamp(0, size).long()
    x1 = torch.floor(fsx.amax(1) - 0.5 + EDGE_TOLERANCE_PX).clamp(-1, size - 1).long()
    y0 = torch.ceil(fsy.amin(1) - 0.5 - EDGE_TOLERANCE_PX).clamp(0, size).long()
    y1 = torch.floor(fsy.amax(1) - 0.5 + EDGE_TOLERANCE_PX).clamp(-1, size - 1).long()
    nx, ny = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
    live = torch.nonzero(keep & (nx > 0) & (ny > 0)).squeeze(1)  # [L] face ids, ascending
    # [F, 3]: edge i, opposite corner i, runs from corner i + 1 to corner i + 2.
    edge_lengths = torch.hypot(fsx.roll(-2, 1) - fsx.roll(-1, 1), fsy.roll(-2, 1) - fsy.roll(-1, 1))
    # 3-4. Test the candidates, keep the nearest per pixel.
    keys = torch.full((size * size,), _EMPTY, dtype=torch.int64, device=device)
    for box, px, py in box_candidates(x0[live], y0[live], nx[live], ny[live], chunk):
        face = live[box]
        csx, csy = fsx[face], fsy[face]  # [N, 3]
        e = _edge_functions(csx, csy, px.double() + 0.5, py.double() + 0.5)  # [N, 3]
        area = e.sum(1, keepdim=True)  # doubled signed screen area, the same for every q
        sign = torch.sign(area)
        inside = ((e * sign) >= -EDGE_TOLERANCE_PX * edge_lengths[face]).all(1) & (area[:, 0] != 0)
        inverse_depth = (e / area / fdepth[face]).sum(1)  # perspective-correct 1 / depth
        level = (1.0 / inverse_depth / DEPTH_FAR * DEPTH_LEVELS).clamp(0, DEPTH_LEVELS).long()
        key = (level << 32) | face
        pixel = py * size + px
        keys.scatter_reduce_(0, pixel[inside], key[inside], "amin")
    # 5. The winners' barycentrics and points.
    visible = keys != _EMPTY  # [H * W]
    face_ids = torch.where(visible, keys & 0xFFFFFFFF, torch.full_like(keys, -1))
    pixels = torch.nonzero(visible).squeeze(1)
    face = face_ids[pixels]
    px, py = (pixels % size).double() + 0.5, (pixels // size).double() + 0.5
    e = _edge_functions(fsx[face], fsy[face], px, py)
    weights = (e / e.sum(1, keepdim=True) / fdepth[face]).clamp(min=0)  # [P, 3]
    barycentrics = weights / weights.sum(1, keepdim=True)
    points = (barycentrics[:, :, None] * positions.double()[faces[face]]).sum(1)  # [P, 3]
    eye, rows = camera.axes(device)
    bary_image = torch.zeros(size * size, 3, dtype=torch.float32, device=device)
    point_image = torch.zeros(size * size, 3, dtype=torch.float32, device=device)
    depth_image = torch.zeros(size * size, dtype=torch.float32, device=device)
    bary_image[pixels] = barycentrics.float()
    point_image[pixels] = points.float()
    depth_image[pixels] = ((points - eye) @ rows[2]).float()
    return View(
        camera,
        face_ids.reshape(size, size),
        bary_image.reshape(size, size, 3),
        point_image.reshape(size, size, 3),
        depth_image.reshape(size, size),
    )


def render_views(positions: torch.Tensor, faces: torch.Tensor, size: int = VIEW_SIZE) -> list[View]:
    """The judge's four views of the mesh (positions [V, 3], faces [F, 3], one device)."""
    return [render_view(positions, faces, camera) for camera in judge_cameras(size)]


def render_face_ids_reference(
    positions: np.ndarray, faces: np.ndarray, camera: Camera
) -> np.ndarray:
    """numpy brute force: positions [V, 3], faces [F, 3] -> [H, W] int64 face ids (-1: none).

    Every pixel centre's ray against every front face; the nearest hit wins, ties to the lowest
    face id. Memory H * W * F: tiny meshes only.
    """
    size = camera.size
    eye, right, up, forward = (
        np.asarray(v, np.float64) for v in (camera.eye, camera.right, camera.up, camera.forward)
    )
    centres = (np.arange(size) + 0.5 - size / 2) / camera.focal
    # Ray directions with unit component along `forward`, so the hit distance t is the depth.
    directions = (
        forward[None, None]
        + centres[None, :, None] * right[None, None]
        - centres[:, None, None] * up[None, None]
    ).reshape(-1, 1, 3)  # [P, 1, 3]
    corners = positions.astype(np.float64)[faces]  # [F, 3, 3]
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    front = np.einsum("fk,fk->f", np.cross(b - a, c - a), eye - a) > 0  # [F]
    # Moller-Trumbore: eye + t d = a + u (b - a) + v (c - a).
    e1, e2, s = b - a, c - a, eye - a  # [F, 3]
    p = np.cross(directions, e2[None])  # [P, F, 3]
    det = np.einsum("pfk,fk->pf", p, e1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.einsum("pfk,fk->pf", p, s) / det
        q = np.cross(s, e1)  # [F, 3]
        v = np.einsum("pk,fk->pf", directions[:, 0], q) / det
        t = np.einsum("fk,fk->f", q, e2)[None] / det
    hit = front[None] & (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > NEAR)
    t = np.where(hit, t, np.inf)
    nearest = np.argmin(t, axis=1)  # first of equal minima: the lowest face id
    found = np.isfinite(t[np.arange(len(t)), nearest])
    return np.where(found, nearest, -1).reshape(size, size).astype(np.int64)
