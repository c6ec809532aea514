"""What a GLB must satisfy to be judge-ready, measured independently of the pipeline's code.

Everything here reads the GLB back as the competition's judge does (trimesh, force=None) or
parses its bytes, and rasterises with OpenCV: none of it calls the pipeline's own kernels.
"""

from __future__ import annotations

import io
import json
import struct

import cv2
import numpy as np
import trimesh

# A texel or pixel is "black" when no channel exceeds this (8-bit).
BLACK_LEVEL = 12
SILHOUETTE_GRID = 256
_SUBPIXEL_BITS = 4


def load_single_mesh(data: bytes) -> trimesh.Trimesh:
    """The judge's load: exactly one Trimesh geometry, node transforms ignored."""
    loaded = trimesh.load(io.BytesIO(data), file_type="glb", force=None)
    geometries = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    assert len(geometries) == 1, f"GLB holds {len(geometries)} geometries, the judge wants 1"
    mesh = geometries[0]
    assert isinstance(mesh, trimesh.Trimesh), f"geometry is a {type(mesh).__name__}"
    return mesh


def gltf_json(data: bytes) -> dict:
    magic, version, _length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A
    return json.loads(data[20 : 20 + chunk_length])


def _fill(polygons: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """polygons: [N, 3, 2] float pixel coordinates -> [H, W] bool, the union of the triangles.

    One call per triangle: cv2.fillPoly on a list uses the even-odd rule, under which the
    overlapping front and back faces of a solid would cancel out.
    """
    canvas = np.zeros(size, np.uint8)
    fixed = np.round(polygons * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    for triangle in fixed:
        cv2.fillConvexPoly(canvas, triangle, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return canvas.astype(bool)


def _bbox_crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def silhouette_iou(mesh: trimesh.Trimesh, matte: np.ndarray) -> float:
    """IoU of the mesh seen orthographically from +Z (Y up) and the image matte (> 0.5).

    Both are cropped to their own bounding boxes and resized to one square grid, so scale and
    margin do not matter, but a flip, a wrong up axis or a lost part does.
    """
    xy = np.asarray(mesh.vertices)[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    extent = float((hi - lo).max())
    side = 4 * SILHOUETTE_GRID
    pixels = np.stack(((xy[:, 0] - lo[0]) / extent, (hi[1] - xy[:, 1]) / extent), 1) * (side - 1)
    shape = (
        int(np.ceil((hi[1] - lo[1]) / extent * side)) + 1,
        int(np.ceil((hi[0] - lo[0]) / extent * side)) + 1,
    )
    rendered = _fill(pixels[np.asarray(mesh.faces)], shape)
    grid = (SILHOUETTE_GRID, SILHOUETTE_GRID)
    a = cv2.resize(_bbox_crop(rendered).astype(np.uint8), grid, interpolation=cv2.INTER_AREA)
    b = cv2.resize(_bbox_crop(matte > 0.5).astype(np.uint8), grid, interpolation=cv2.INTER_AREA)
    a, b = a > 0, b > 0
    return float((a & b).sum() / max(1, (a | b).sum()))


def signed_volume(mesh: trimesh.Trimesh) -> float:
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces)
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6)


def base_color_image(mesh: trimesh.Trimesh) -> np.ndarray:
    image = mesh.visual.material.baseColorTexture
    assert image is not None, "no base colour texture"
    return np.asarray(image.convert("RGB"))


def covered_texels(mesh: trimesh.Trimesh, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: texels under the mesh's UV triangles (trimesh flips v on load)."""
    uv = np.asarray(mesh.visual.uv, np.float64)
    pixels = np.stack((uv[:, 0] * shape[1], (1 - uv[:, 1]) * shape[0]), 1) - 0.5
    return _fill(pixels[np.asarray(mesh.faces)], shape)


def black_fraction(colours: np.ndarray) -> float:
    """Share of [N, 3] uint8 colours with no channel above BLACK_LEVEL."""
    if len(colours) == 0:
        return 0.0
    return float((colours.max(axis=1) <= BLACK_LEVEL).mean())
