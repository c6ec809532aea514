"""Background removal for prompts that arrive without alpha, and the interface it plugs into.

`Matting` is what prepare calls: rgb [H, W, 3] uint8 -> matte [H, W] float32 in [0, 1], or
None when no object is found. `ClassicalMatting` needs no weights (OpenCV + numpy);
`pipeline.birefnet.BiRefNetMatting` (a model, pinned weights) implements the same protocol and
falls back to the classical one. `make_matting` picks one from the MATTING setting.

The classical method assumes what competition prompts look like: one object, roughly centred,
whose background reaches the image border.
- Plain backgrounds (white, grey, a smooth studio sweep): a quadratic colour surface in CIELAB
  is fitted to the border band (robust to object pixels touching it). A pixel is background
  when it lies within the fitted colour's noise and connects to the border, or sits on the
  edge and is nearer the background than the object (the alpha = 0.5 contour). Enclosed
  regions are holes only when they match the background as closely as the border does.
- Cluttered backgrounds (the surface does not explain the border): GrabCut (Rother et al.,
  "GrabCut: interactive foreground extraction using iterated graph cuts", SIGGRAPH 2004)
  seeded with the border band as background, on a small copy for speed.

Constants were tuned on the 24 shared prompts (../shared/data/prompts) composited on white,
mid grey (128), white re-encoded as JPEG q90, a noisy white-to-grey sweep re-encoded as JPEG,
and a blurred random-shape clutter (tests/pipeline/conftest.py builds them), to maximise the
mean IoU of matte > 0.5 against alpha > 127 at the prompt's full resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

    from pipeline.settings import PipelineSettings

__all__ = ["ClassicalMatting", "Matting", "classical_matte", "make_matting"]

log = logging.getLogger("pipeline.prepare")

# Long side of the copy the colour analysis runs on. Mean IoU on white: 0.987 at 512,
# 0.990 at 768, 0.991 at 1024 for 1.6x the time of 768.
WORK_SIDE = 768
# Width of the border band sampled as background, as a fraction of the long side. The
# prompts keep their object at least 3 % of the side away from the border.
BORDER_BAND = 0.02
# Least-squares fits of the background surface, each on the previous fit's inliers, on every
# BORDER_SAMPLE_STRIDE-th band pixel (about 15 000 samples at 768 px: plenty for 6 unknowns).
SURFACE_FITS = 3
BORDER_SAMPLE_STRIDE = 3
# The background is "plain" when this share of the border lies within PLAIN_RESIDUAL (CIELAB
# delta E) of the fitted surface. Measured share: 1.00 on every white, grey, white JPEG and
# sweep variant, 0.13-0.57 on the clutter; 0.75 also lets an object cover a quarter of the
# border (a disc cut by a corner of the tests covers 16 %).
PLAIN_RESIDUAL = 8.0
PLAIN_SHARE = 0.75
# Percentile of the background samples' residuals taken as the background's noise level.
NOISE_PERCENTILE = 90.0
# Background tolerance (delta E) = max(TOLERANCE_MIN, TOLERANCE_NOISE_GAIN * noise). 4 keeps
# grey metal on a grey background (mean IoU on grey 0.977 at 8, 0.983 at 4).
TOLERANCE_MIN = 4.0
TOLERANCE_NOISE_GAIN = 2.0
# The edge rule: within EDGE_RADIUS work pixels of the background, a pixel whose distance from
# the background is under HALF_CONTRAST of the largest distance nearby (the object's colour)
# is more background than object. Mean IoU on white 0.975 without it, 0.990 with it (white
# JPEG: 0.970, 0.989).
EDGE_RADIUS = 2
HALF_CONTRAST = 0.5
# An enclosed background-coloured region is a hole when its HOLE_QUANTILE distance from the
# background is within max(HOLE_TOLERANCE_MIN, HOLE_NOISE_GAIN * noise): a real hole is as
# flat as the border, grey paint on a grey background is not. The low quantile ignores the JPEG
# ringing that fills small holes (white JPEG min IoU 0.79 with the median, 0.88 with it).
HOLE_QUANTILE = 0.1
HOLE_TOLERANCE_MIN = 1.5
HOLE_NOISE_GAIN = 1.5
# Enclosed regions this small (work pixels) are noise inside the object, never holes.
SPECK_PIXELS = 4
# Connected parts smaller than this fraction of the largest are dropped: dust and noise of
# real backgrounds. Small, so detached leaves and berries stay (on the composites 0.02 and
# 0.002 score the same, 0.990 on white: they have no dust).
KEEP_COMPONENT_RATIO = 0.002
# Gaussian blur of the binary matte (work pixels) before upsampling: an anti-aliased edge.
EDGE_SIGMA = 0.7
# GrabCut: long side of its copy, iterations, seed band and RNG seed. Clutter mean IoU 0.797
# at 192 px x 4 iterations (about 0.3 s on two cores), 0.793 at 256 px (1.6x the time),
# 0.774 with 2 iterations, 0.807 with 6 (1.4x the time).
GRABCUT_SIDE = 192
GRABCUT_ITERATIONS = 4
GRABCUT_BAND = 0.03
GRABCUT_SEED = 404
# GrabCut fits 5-component colour mixtures: fewer unknown pixels than this cannot be modelled.
GRABCUT_MIN_PIXELS = 64


class Matting(Protocol):
    """Background removal: rgb [H, W, 3] uint8 -> matte [H, W] float32 in [0, 1] or None."""

    name: str

    def matte(self, rgb: np.ndarray) -> np.ndarray | None: ...


@dataclass(frozen=True)
class ClassicalMatting:
    """Weight-free matting: border colour surface + flood fill, GrabCut on clutter."""

    name: str = "classical"

    def matte(self, rgb: np.ndarray) -> np.ndarray | None:
        return classical_matte(rgb)


def make_matting(settings: PipelineSettings, device: torch.device) -> tuple[Matting, str]:
    """(the matting MATTING asks for, why): classical; birefnet (or the load fails); auto =
    BiRefNet when its pinned weights are found (fetched first with FETCH_WEIGHTS) and the device
    is CUDA (on a CPU it takes seconds a prompt), else classical."""
    if settings.matting == "classical":
        return ClassicalMatting(), "MATTING=classical"
    if settings.matting == "auto" and device.type != "cuda":
        return ClassicalMatting(), f"MATTING=auto: BiRefNet only on CUDA (device {device})"
    from pipeline.birefnet import BiRefNetMatting
    from pipeline.weights import BIREFNET, ensure, weights_root

    root = weights_root(settings.weights_dir)
    explicit = settings.matting == "birefnet"
    if ensure(root, (BIREFNET,), settings.fetch_weights):
        why = f"BiRefNet weights ({BIREFNET.describe()}) missing in {root}"
        if explicit:
            raise RuntimeError(f"MATTING=birefnet: {why}")
        return ClassicalMatting(), f"MATTING=auto: {why}"
    try:
        matting = BiRefNetMatting.load(BIREFNET.path(root), device)
    except Exception as error:
        if explicit:
            raise
        log.exception("BiRefNet failed to load")
        return ClassicalMatting(), f"MATTING=auto: BiRefNet failed to load ({error})"
    return matting, f"MATTING={settings.matting}: BiRefNet {BIREFNET.describe()} from {root}"


def classical_matte(rgb: np.ndarray) -> np.ndarray | None:
    """rgb: [H, W, 3] uint8 -> matte [H, W] float32 in [0, 1], or None when nothing is found.

    Deterministic and thread-safe (GrabCut's RNG is per thread and seeded just before it).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    # 1. Work on a copy whose long side is WORK_SIDE (area filter: noise averages out).
    small = _resize_long_side(rgb, WORK_SIDE)
    lab = cv2.cvtColor(small.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)
    border = _border_band(lab.shape[:2], BORDER_BAND)
    # 2. Background colour model: a smooth surface fitted to the border band.
    coefficients, residuals = _fit_border_surface(lab, border)
    # 3. Plain background -> colour distance; cluttered -> GrabCut.
    background_samples = residuals[residuals < PLAIN_RESIDUAL]
    if background_samples.size >= PLAIN_SHARE * residuals.size:
        noise = float(np.percentile(background_samples, NOISE_PERCENTILE))
        distance = _distance_to_surface(lab, coefficients)
        foreground = _plain_foreground(distance, border, noise)
    else:
        foreground = _grabcut_foreground(small)
    # 4. The object: the largest part and every part that is not dust beside it.
    foreground = _main_components(foreground)
    if foreground is None:
        return None
    # 5. Anti-alias the edge and bring the matte to full size.
    soft = cv2.GaussianBlur(foreground.astype(np.float32), (0, 0), EDGE_SIGMA)
    matte = cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(matte, 0.0, 1.0, out=matte)


def _resize_long_side(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _border_band(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """[h, w] bool: the pixels within `fraction` of the long side (at least 2 px) of the edge."""
    height, width = shape
    band = max(2, round(fraction * max(height, width)))
    mask = np.zeros(shape, bool)
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    return mask


def _quadratic_basis(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """[...] normalised coordinates -> [..., 6] monomials 1, x, y, x^2, xy, y^2."""
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1)


def _fit_border_surface(lab: np.ndarray, border: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares quadratic colour surface over the border band, refitted without outliers.

    lab: [h, w, 3] float32; border: [h, w] bool -> ([6, 3] coefficients, [B] residuals (delta E)
    of every border sample, outliers included). The inliers start as the samples near the
    border's median colour (robust while the object covers under half the border; a least-
    squares start bends toward an object in a corner), then are those within PLAIN_RESIDUAL of
    the previous fit.
    """
    height, width = border.shape
    ys, xs = np.nonzero(border)
    if ys.size >= 1000 * BORDER_SAMPLE_STRIDE:  # thinning pays only on large bands
        ys, xs = ys[::BORDER_SAMPLE_STRIDE], xs[::BORDER_SAMPLE_STRIDE]
    basis = _quadratic_basis(xs / width - 0.5, ys / height - 0.5)  # [B, 6] float64
    colours = lab[ys, xs].astype(np.float64)  # [B, 3]
    residuals = np.linalg.norm(colours - np.median(colours, axis=0), axis=1)
    coefficients = np.zeros((6, 3))
    for _ in range(SURFACE_FITS):
        # The closest half when too few samples are within PLAIN_RESIDUAL: a cluttered border.
        inliers = residuals < max(PLAIN_RESIDUAL, float(np.median(residuals)))
        coefficients = np.linalg.lstsq(basis[inliers], colours[inliers], rcond=None)[0]
        residuals = np.linalg.norm(basis @ coefficients - colours, axis=1)
    return coefficients, residuals


def _distance_to_surface(lab: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """lab [h, w, 3] float32, [6, 3] coefficients -> [h, w] float32 delta E to the surface."""
    height, width = lab.shape[:2]
    ys = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None, None]  # [h, 1, 1]
    xs = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :, None]  # [1, w, 1]
    c = coefficients.astype(np.float32)
    difference = lab - (c[0] + ys * c[2] + ys * ys * c[5])  # minus the rows' terms
    difference -= xs * c[1] + xs * xs * c[3]  # the columns' terms
    difference -= (ys * xs) * c[4]  # the cross term
    squared = cv2.multiply(difference, difference)
    summed = cv2.transform(squared, np.ones((1, 3), np.float32))  # [h, w] sum of channels
    return cv2.sqrt(summed)


def _plain_foreground(distance: np.ndarray, border: np.ndarray, noise: float) -> np.ndarray:
    """distance: [h, w] float32 delta E from the background surface -> [h, w] bool object."""
    # 1. Background-coloured pixels, and edge pixels nearer the background than the object.
    background_like = distance < max(TOLERANCE_MIN, TOLERANCE_NOISE_GAIN * noise)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_RADIUS + 1,) * 2)
    object_contrast = cv2.dilate(distance, disc)
    near_background = cv2.dilate(background_like.astype(np.uint8), disc) > 0
    background_like |= near_background & (distance < HALF_CONTRAST * object_contrast)
    # 2. Background is what connects to the border.
    count, labels = cv2.connectedComponents(background_like.astype(np.uint8), connectivity=4)
    touching = np.zeros(count, bool)
    touching[labels[border & background_like]] = True
    foreground = ~background_like
    # 3. Enclosed regions: holes when as flat as the border, otherwise part of the object.
    enclosed = background_like & ~touching[labels]
    if enclosed.any():
        hole_tolerance = max(HOLE_TOLERANCE_MIN, HOLE_NOISE_GAIN * noise)
        region_ids, region_levels, region_sizes = _region_quantiles(
            labels[enclosed], distance[enclosed], HOLE_QUANTILE
        )
        solid = (region_levels > hole_tolerance) | (region_sizes <= SPECK_PIXELS)
        is_object = np.zeros(count, bool)
        is_object[region_ids[solid]] = True
        foreground |= is_object[labels]
    return foreground


def _region_quantiles(
    ids: np.ndarray, values: np.ndarray, quantile: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per region id: ([R] ids, [R] the `quantile` of its values, [R] its pixel count)."""
    order = np.lexsort((values, ids))
    ids, values = ids[order], values[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    levels = values[starts + ((sizes - 1) * quantile).astype(np.int64)]
    return ids[starts], levels, sizes


def _grabcut_foreground(small: np.ndarray) -> np.ndarray:
    """small: [h, w, 3] uint8 -> [h, w] bool, GrabCut seeded with the border band as background."""
    height, width = small.shape[:2]
    tiny = _resize_long_side(small, GRABCUT_SIDE)
    labels = np.full(tiny.shape[:2], cv2.GC_PR_FGD, np.uint8)
    labels[_border_band(tiny.shape[:2], GRABCUT_BAND)] = cv2.GC_BGD
    if np.count_nonzero(labels == cv2.GC_PR_FGD) < GRABCUT_MIN_PIXELS:
        return np.zeros((height, width), bool)
    background_model = np.zeros((1, 65), np.float64)
    foreground_model = np.zeros((1, 65), np.float64)
    # GrabCut's k-means draws from OpenCV's per-thread RNG: seed it here, in this thread.
    cv2.setRNGSeed(GRABCUT_SEED)
    cv2.grabCut(
        tiny,
        labels,
        None,
        background_model,
        foreground_model,
        GRABCUT_ITERATIONS,
        cv2.GC_INIT_WITH_MASK,
    )
    foreground = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    return cv2.resize(foreground, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5


def _main_components(foreground: np.ndarray) -> np.ndarray | None:
    """[h, w] bool -> the parts of at least KEEP_COMPONENT_RATIO of the largest, or None."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return None
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0  # label 0 is the background
    keep = areas >= max(1, KEEP_COMPONENT_RATIO * areas.max())
    keep[0] = False
    return keep[labels]
