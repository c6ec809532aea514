"""relax_charts: a creased strip (developable, so an isometry exists) comes out with its true
edge lengths where the projection shrinks one side; a tilted flat chart keeps its projection
(to float64 rounding); a chart whose relaxed faces break the area guard keeps its projection
while another chart in the same call relaxes; and the result repeats exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import relax as relax_module
from pipeline.charts import Charts, project_charts
from pipeline.relax import relax_charts


def roof(angle_degrees: float, offset: float = 0.0, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A strip of two n x n grids meeting at a ridge along x: each side rises at the angle
    (degrees) from the xy plane. -> positions [V, 3], counter-clockwise faces [F, 3] (from +z)."""
    slope = math.radians(angle_degrees)
    xs = np.linspace(0, 1, n + 1)
    ts = np.linspace(-1, 1, 2 * n + 1)  # across the ridge, signed distance along the surface
    x, t = np.meshgrid(xs, ts, indexing="xy")
    y = np.abs(t) * math.cos(slope) * np.sign(t)
    z = (1 - np.abs(t)) * math.sin(slope)
    positions = np.stack((x + offset, y, z), -1).reshape(-1, 3)
    index = np.arange(len(positions)).reshape(2 * n + 1, n + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    faces = np.concatenate((np.stack((a, b, d), 1), np.stack((a, d, c), 1)))
    return positions, faces


def edge_lengths(points: torch.Tensor) -> torch.Tensor:
    """[F, 3, k] corners -> [F, 3] edge lengths."""
    return (points - points.roll(-1, 1)).norm(dim=2)


def laid_out(*meshes: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, ...]:
    """Meshes as charts of one call, each projected along +z (its mean normal)."""
    positions, faces, chart, offset = [], [], [], 0
    for index, (p, f) in enumerate(meshes):
        positions.append(p)
        faces.append(f + offset)
        chart.append(np.full(len(f), index))
        offset += len(p)
    P = torch.from_numpy(np.concatenate(positions)).float()
    F = torch.from_numpy(np.concatenate(faces))
    chart_t = torch.from_numpy(np.concatenate(chart))
    charts = Charts(chart_t, torch.full_like(chart_t, 4), len(meshes))  # axis +z
    return P, F, project_charts(P, F, charts), chart_t


def test_a_creased_strip_gets_its_true_edge_lengths() -> None:
    P, F, corners, chart = laid_out(roof(40.0))
    true = edge_lengths(P.double()[F])
    before = (edge_lengths(corners) / true).amin()
    relaxed = relax_charts(P, F, corners, chart, 1)
    ratio = edge_lengths(relaxed) / true
    assert float(before) < 0.8  # the projection shrinks the sides across the ridge
    assert float((ratio - 1).abs().max()) < 0.01


def test_a_tilted_flat_chart_keeps_its_projection() -> None:
    """Projected along its own normal a flat chart is isometric already: nothing moves but
    float64 rounding."""
    positions, faces = roof(0.0)
    tilt = math.radians(25)
    rotation = np.array(
        [[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]]
    )
    P, F, corners, chart = laid_out((positions @ rotation.T, faces))
    torch.testing.assert_close(relax_charts(P, F, corners, chart, 1), corners, atol=1e-12, rtol=0)


def test_a_chart_breaking_the_area_guard_keeps_its_projection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the guard at 1.3x the projected area, the 20-degree roof (true / projected area
    1 / cos 20 = 1.06) fails it and stays projected; the 55-degree one (1.74) relaxes."""
    monkeypatch.setattr(relax_module, "MIN_AREA_KEPT", 1.3)
    P, F, corners, chart = laid_out(roof(20.0), roof(55.0, offset=2.0))
    relaxed = relax_charts(P, F, corners, chart, 2)
    first = chart == 0
    assert torch.equal(relaxed[first], corners[first])
    true = edge_lengths(P.double()[F])
    assert float((edge_lengths(relaxed[~first]) / true[~first] - 1).abs().max()) < 0.01


def test_relaxation_repeats_exactly() -> None:
    P, F, corners, chart = laid_out(roof(35.0), roof(60.0, offset=2.0))
    first = relax_charts(P, F, corners, chart, 2)
    assert torch.equal(first, relax_charts(P, F, corners, chart, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_steps_give_the_eager_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the conjugate-gradient step is captured once and replayed as a CUDA graph:
    the same kernels on the same tensors, so the same bits as launching each step."""
    P, F, corners, chart = laid_out(roof(35.0), roof(60.0, offset=2.0))
    P, F, corners, chart = P.cuda(), F.cuda(), corners.cuda(), chart.cuda()
    captured = relax_charts(P, F, corners, chart, 2)
    monkeypatch.setattr(relax_module, "CAPTURE", False)
    eager = relax_charts(P, F, corners, chart, 2)
    assert not torch.equal(captured, corners)  # it relaxed
    assert torch.equal(captured, eager)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_failed_capture_steps_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the CUDA graph cannot be captured, nothing has run: the steps go eagerly and
    give the same bits."""
    P, F, corners, chart = laid_out(roof(35.0), roof(60.0, offset=2.0))
    P, F, corners, chart = P.cuda(), F.cuda(), corners.cuda(), chart.cuda()
    captured = relax_charts(P, F, corners, chart, 2)

    def refuse(self: torch.cuda.CUDAGraph, *args: object, **kwargs: object) -> None:
        raise RuntimeError("capture refused")

    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", refuse)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_end", lambda self: None)
    assert torch.equal(relax_charts(P, F, corners, chart, 2), captured)


def test_rotations_are_the_closest_turns() -> None:
    """Each face's closest rotation (J a scaled turn plus a small symmetric part): the turn by
    atan2(b - c, a + d); orthonormal; the identity for a degenerate face."""
    rng = np.random.default_rng(5)
    angles = rng.uniform(-math.pi, math.pi, 5000)
    scales = rng.uniform(0.1, 3.0, 5000)
    c, s = np.cos(angles), np.sin(angles)
    # J as the code reads it: rows are local axes, J[i, j] = d plane_j / d local_i.
    rotation = np.stack((np.stack((c, s), 1), np.stack((-s, c), 1)), 1)
    shear = rng.normal(0, 0.05, (5000, 2, 2))
    shear = (shear + shear.transpose(0, 2, 1)) / 2  # symmetric: no rotational part
    jacobian = torch.from_numpy(scales[:, None, None] * (rotation + shear))
    jacobian[0] = 0.0  # a degenerate face
    turns = relax_module._rotations(jacobian).numpy()
    a, b = jacobian[:, 0, 0].numpy(), jacobian[:, 0, 1].numpy()
    cc, dd = jacobian[:, 1, 0].numpy(), jacobian[:, 1, 1].numpy()
    theta = np.arctan2(b - cc, a + dd)
    expected = np.stack(
        (np.stack((np.cos(theta), np.sin(theta)), 1), np.stack((-np.sin(theta), np.cos(theta)), 1)),
        1,
    )
    np.testing.assert_allclose(turns, expected, atol=1e-15)
    np.testing.assert_allclose(turns[0], np.eye(2), atol=0)
    np.testing.assert_allclose(turns[1:], rotation[1:], atol=0.2)  # near the true turn
    identity = np.einsum("fij,fkj->fik", turns, turns)
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(2), identity.shape), atol=1e-15)
