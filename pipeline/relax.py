"""Relaxation of projected charts towards isometry (as-rigid-as-possible), on the GPU.

A chart projected along one direction keeps the faces that face it at their true size but
shrinks tilted faces across the tilt (by cos of the angle, down to SMOOTH_MIN_COS): their
texels are stretched on the surface, and a bilinear render of them errs most exactly there,
at the charts' edges. `relax_charts` lays every chart out again, all at once, as close to an
isometry as a flat layout allows: the local/global iteration of Liu et al. 2008 ("A
local/global approach to mesh parameterization"). Per round,
  1. local: each face's best rotation R_f, the rotation part of its Jacobian J_f (the linear
     map from the face's own isometric 2D frame to the chart's plane; closed form in 2D);
  2. global: the corners that minimise sum_f area_f |J_f - R_f|^2 (a Poisson system, one
     block per chart, its translation free) by CG_STEPS of Jacobi-preconditioned conjugate
     gradients, warm-started from the previous layout.
The projection is the start, so a chart only moves towards its true shape. Every sum is a
`face_graph.SegmentSums` over corners sorted once (exact fixed-point integer sums): same
input, same bytes.
A chart that comes out with any face turned over, or squeezed below MIN_AREA_KEPT of its
projected area, keeps its projection: the relaxation never adds a fold, and the
atlas's raster still catches any overlap it might open between distant faces.
"""

from __future__ import annotations

import torch

from pipeline.face_graph import SegmentSums, flat_rows, take_rows
from pipeline.graphs import Repeated

__all__ = ["relax_charts"]

# Local/global rounds and conjugate-gradient steps per round. Warm-started, the first round
# removes most of the tilt shrink. Measured on prompt 20's inflate mesh (CPU): the area-
# weighted 5th percentile of a face's singular-value ratio goes 0.60 (projection) -> 0.87 at
# 3 x 12, 0.88 at 3 x 24; 2 x 16 reaches 0.86: rounds matter more than steps.
ROUNDS = 3
CG_STEPS = 12
# A relaxed face must keep at least this share of its projected signed area (else its chart
# keeps the projection): no face turns over or collapses.
MIN_AREA_KEPT = 0.25
# Conjugate-gradient steps replayed from a captured CUDA graph on CUDA (pipeline/graphs.py; the
# tests compare both ways).
CAPTURE = True


def _local_frames(positions: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per face: its corners in its own isometric 2D frame [F, 3, 2] and its area [F]."""
    p = positions.double()[faces]  # [F, 3, 3]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    normal = torch.cross(e1, e2, dim=1)
    area = normal.norm(dim=1) / 2
    x = e1 / e1.norm(dim=1, keepdim=True).clamp_min(1e-300)
    y = torch.cross(normal / (2 * area[:, None]).clamp_min(1e-300), x, dim=1)
    local = torch.zeros(len(faces), 3, 2, dtype=torch.float64, device=positions.device)
    local[:, 1, 0] = e1.norm(dim=1)
    local[:, 2, 0] = (e2 * x).sum(1)
    local[:, 2, 1] = (e2 * y).sum(1)
    return local, area


def _gradients(local: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """[F, 2, 3]: G with J = G @ corners ([3, 2] -> [2, 2]) for each face's local frame."""
    (x1, y1), (x2, y2) = local[:, 1].unbind(1), local[:, 2].unbind(1)
    twice = (2 * area).clamp_min(1e-300)
    # Gradients of the three barycentric functions in the local frame.
    gx = torch.stack((y1 - y2, y2, -y1), 1) / twice[:, None]
    gy = torch.stack((x2 - x1, -x2, x1), 1) / twice[:, None]
    return torch.stack((gx, gy), 1)


def _signed_areas(corners: torch.Tensor) -> torch.Tensor:
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return 0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])


def _rotations(jacobian: torch.Tensor) -> torch.Tensor:
    """[F, 2, 2] (maps local -> plane, as J[:, i, j] = d plane_j / d local_i) -> the closest
    rotations in the same convention."""
    a, b = jacobian[:, 0, 0], jacobian[:, 0, 1]
    c, d = jacobian[:, 1, 0], jacobian[:, 1, 1]
    angle = torch.atan2(b - c, a + d)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack((torch.stack((cos, sin), 1), torch.stack((-sin, cos), 1)), 1)


def relax_charts(
    positions: torch.Tensor,
    faces: torch.Tensor,
    corners: torch.Tensor,
    chart: torch.Tensor,
    count: int,
) -> torch.Tensor:
    """positions [V, 3], faces [F, 3], projected corners [F, 3, 2] (float64, every chart
    counter-clockwise), chart [F] in 0..count-1 -> relaxed corners [F, 3, 2].
    """
    F = len(faces)
    if F == 0:
        return corners
    device = corners.device
    local, area = _local_frames(positions, faces)
    # Faces too thin to have a frame take no part in the energy (they follow their corners).
    projected = _signed_areas(corners)
    weight = torch.where((area > 0) & (projected > 0), area, 0.0)  # [F]
    G = torch.where(weight[:, None, None] > 0, _gradients(local, area), 0.0)  # [F, 2, 3]
    # One unknown per (chart, vertex): the corners of a chart that share a vertex move as one.
    V = int(positions.shape[0])
    slot_key = chart[:, None] * V + faces  # [F, 3]
    keys, slot = torch.unique(slot_key.reshape(-1), return_inverse=True)
    segments = SegmentSums(slot, len(keys))
    # Each slot's position: its first corner's (the corners of a slot agree: one projection).
    uv = corners.reshape(-1, 2)[segments.order[segments.starts]]  # [S, 2]
    slot = slot.reshape(F, 3)
    # Per face the 3 x 3 block of the system, area_f G_f^T G_f; per corner in slot order, its
    # row of that block and the slots of its face, so L @ x is one gather and one segment sum.
    K = (G[:, :, :, None] * G[:, :, None, :]).sum(1) * weight[:, None, None]  # [F, 3, 3]
    face_of = torch.div(segments.order, 3, rounding_mode="floor")
    row = K.reshape(-1, 3)[segments.order]  # [3F, 3]
    neighbours = flat_rows(slot[face_of], 2)  # [3F, 3, 2]
    corner_slots = flat_rows(slot, 2)  # [F, 3, 2]

    def apply(values: torch.Tensor) -> torch.Tensor:  # L @ values, [S, 2] -> [S, 2]
        gathered = take_rows(values, neighbours)  # [3F, 3, 2]
        return segments.sorted((row[:, :, None] * gathered).sum(1))

    diagonal = segments(torch.diagonal(K, dim1=1, dim2=2).reshape(-1, 1))  # [S, 1]
    inverse_diagonal = torch.where(diagonal > 0, 1 / diagonal.clamp_min(1e-300), 0.0)
    # Conjugate-gradient state, written in place so that one captured step serves every
    # round: L uv = rhs by Jacobi-preconditioned CG (the u and v columns are independent).
    uv = uv.clone()
    residual, direction, rz = torch.empty_like(uv), torch.empty_like(uv), uv.new_empty(2)

    def cg_step() -> None:
        moved = apply(direction)
        length = rz / (direction * moved).sum(0).clamp_min(1e-300)
        uv.add_(length * direction)
        residual.sub_(length * moved)
        z = residual * inverse_diagonal
        rz_next = (residual * z).sum(0)
        direction.mul_(rz_next / rz.clamp_min(1e-300)).add_(z)
        rz.copy_(rz_next)

    steps = Repeated(cg_step, device, capture=CAPTURE, name="relaxation")
    for _ in range(ROUNDS):
        # 1. Local: each face's target rotation from the current layout.
        corner_uv = take_rows(uv, corner_slots)  # [F, 3, 2]
        rotation = _rotations((G[:, :, :, None] * corner_uv[:, None, :, :]).sum(2))
        # 2. Global: L uv = sum_f area_f G_f^T R_f, warm-started from uv.
        target = (G[:, :, :, None] * rotation[:, :, None, :]).sum(1) * weight[:, None, None]
        residual.copy_(segments(target.reshape(-1, 2)) - apply(uv))
        z = residual * inverse_diagonal
        direction.copy_(z)
        rz.copy_((residual * z).sum(0))
        steps(CG_STEPS)
    steps.close()
    relaxed = take_rows(uv, corner_slots)  # [F, 3, 2]
    # Charts with a face turned over or squeezed keep their projection.
    bad = (_signed_areas(relaxed) < MIN_AREA_KEPT * projected) & (weight > 0)
    bad |= ~torch.isfinite(relaxed).all(2).all(1)
    spoilt = torch.zeros(count, dtype=torch.bool, device=device)
    spoilt[chart[bad]] = True
    return torch.where(spoilt[chart][:, None, None], corners, relaxed)
