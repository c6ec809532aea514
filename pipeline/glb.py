"""TexturedMesh -> binary glTF 2.0 (GLB), written from the Khronos glTF 2.0 specification.

The file holds exactly what the judge accepts (SPEC.md §3): one scene, one node without a
transform, one mesh with one triangle primitive (POSITION, NORMAL, TEXCOORD_0, indices) and
one opaque material whose base colour is one RGB image stored inside the GLB, with explicit
metallic and roughness factors and, when the mesh has one, a metallicRoughness image (RGB, or
one grey channel that glTF reads as G and B alike). Layout
(glTF 2.0.1 §4 "GLB File Format Specification"):

  header   magic "glTF", version 2, total length                       (3 x uint32)
  JSON     chunk length, "JSON", the document padded with spaces to 4 bytes
  BIN      chunk length, "BIN\\0", one bufferView after another, each starting 4-byte
           aligned and followed by zero padding: POSITION, NORMAL, TEXCOORD_0, indices, the
           base colour image, then the metallicRoughness image if any

Positions, UVs and uint32 indices are handed out as memoryviews of the caller's arrays
(zero-copy when already contiguous little-endian float32 / uint32; normals are renormalised
and uint16 indices narrowed into new arrays). No joined copy of the payload is ever built,
so the caller must not modify the mesh until the parts have been written out.
"""

from __future__ import annotations

import json
import logging
import struct
import time

import numpy as np

from pipeline.jpeg import encode_jpeg
from pipeline.png import encode_png
from pipeline.profiling import mark
from pipeline.settings import PipelineSettings
from pipeline.types import GlbParts, TexturedMesh

__all__ = ["encode_texture", "write_glb"]

log = logging.getLogger("pipeline.glb")

GLB_MAGIC = 0x46546C67  # b"glTF" read as a little-endian uint32
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
ALIGNMENT = 4  # chunks and bufferViews start on 4-byte boundaries (glTF §4.4.1, §3.6.2.4)
# glTF enums (the WebGL values the specification uses).
TRIANGLES = 4
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR = 9729  # the judge forces bilinear sampling without mipmaps: say so ourselves
CLAMP_TO_EDGE = 33071  # charts touching the atlas border must not wrap to the far side
# 65535 is the primitive-restart value of UNSIGNED_SHORT indices and must not appear (§3.7.2.1).
MAX_UINT16_INDEX = 65534
# zlib level of PNG textures. Pillow 13 on this 2-core machine, 2048x2048 RGB, best of 3:
#   level:      0      1      2      3      4      5      6
#   ms:       143    217    227    322    397    478    766   (an upscaled prompt image)
#   MB:      12.6   2.40   2.35   2.28   2.15   2.13   2.10
#   ms:       274    482    486    706   1142   1758   1881   (a shuffled, noisy atlas)
# Level 1 is 5x smaller than stored (0) for +75 ms; higher levels save <= 13% for 1.5-4x time.
# pipeline/png.py's strips on two threads here, two baked 2048² textures: level 1 in 56 and
# 79 ms (Pillow 215, 216), 3.71 and 4.12 MB (Pillow 3.76, 4.19); level 6 in 290 and 300 ms.
PNG_COMPRESS_LEVEL = 1
# Normals shorter than this are replaced rather than divided (a vertex of zero-area faces).
MIN_NORMAL_LENGTH = 1e-12
FALLBACK_NORMAL = (0.0, 0.0, 1.0)


def encode_texture(image: np.ndarray, settings: PipelineSettings) -> tuple[bytes, str]:
    """image: [H, W, 3] uint8 RGB or [H, W] uint8 grey, row 0 at the top -> (encoded bytes,
    MIME type).

    Deterministic: baseline JPEG with 4:4:4 chroma (no subsampling blur across chart
    borders; one component for grey) at settings.jpeg_quality, or PNG at PNG_COMPRESS_LEVEL;
    no metadata either way. Both are encoded in strips of rows on threads (pipeline/jpeg.py,
    pipeline/png.py).
    """
    pixels = _checked_image("texture", image, grey=True)
    if settings.texture_format == "png":
        return encode_png(pixels, PNG_COMPRESS_LEVEL), "image/png"
    if settings.texture_format == "jpeg":
        return encode_jpeg(pixels, settings.jpeg_quality), "image/jpeg"
    raise ValueError(f"texture_format must be 'jpeg' or 'png', got {settings.texture_format!r}")


def write_glb(mesh: TexturedMesh, settings: PipelineSettings) -> GlbParts:
    """mesh -> the GLB as byte strings to write in order (see the module docstring)."""
    start = time.perf_counter()
    # 1. Validate and convert once: every array below is contiguous and little-endian.
    positions, normals, uvs, faces = _checked_geometry(mesh)
    images = [_checked_image("base_color", mesh.base_color)]
    if mesh.metallic_roughness is not None:
        images.append(_checked_image("metallic_roughness", mesh.metallic_roughness, grey=True))
    factors = _checked_factors(mesh)
    mark("glb.check")
    # 2. Encode the textures; the indices shrink to uint16 when every index fits.
    encoded = [encode_texture(image, settings) for image in images]
    mark("glb.encode")
    if int(faces.max()) <= MAX_UINT16_INDEX:
        indices, index_type = faces.astype("<u2"), UNSIGNED_SHORT
    else:
        indices, index_type = faces, UNSIGNED_INT
    # 3. Lay the bufferViews out back to back, each padded to the next 4-byte boundary.
    payloads = [positions, normals, uvs, indices, *(data for data, _ in encoded)]
    targets = [ARRAY_BUFFER, ARRAY_BUFFER, ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER]
    targets += [None] * len(encoded)
    views: list[dict[str, int]] = []
    bin_parts: list[bytes | memoryview] = []
    offset = 0
    for payload, target in zip(payloads, targets, strict=True):
        data = memoryview(payload).cast("B")
        view = {"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        views.append(view)
        bin_parts.append(data)
        padding = -data.nbytes % ALIGNMENT
        if padding:
            bin_parts.append(b"\0" * padding)
        offset += data.nbytes + padding
    # 4. The JSON document, then the header and chunk headers around it and the payload.
    mimes = [mime for _, mime in encoded]
    document = _document(positions, len(faces), index_type, views, offset, mimes, factors)
    text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % ALIGNMENT)
    total = 12 + 8 + len(text) + 8 + offset
    head = struct.pack("<III", GLB_MAGIC, GLB_VERSION, total)
    head += struct.pack("<II", len(text), CHUNK_JSON) + text
    parts = GlbParts((head, struct.pack("<II", offset, CHUNK_BIN), *bin_parts))
    mark("glb.write")
    log.info(
        "glb: %d vertices, %d faces, %s textures %s B -> %d B, %.0f ms", len(positions),
        len(faces), mimes[0], " + ".join(str(len(data)) for data, _ in encoded), total,
        (time.perf_counter() - start) * 1e3,
    )  # fmt: skip
    return parts


def _document(
    positions: np.ndarray,  # [V, 3] float32
    face_count: int,
    index_type: int,
    views: list[dict[str, int]],
    buffer_length: int,
    mimes: list[str],
    factors: tuple[float, float],
) -> dict:
    """The glTF JSON: bufferViews 0-3 are POSITION, NORMAL, TEXCOORD_0, indices, then one
    image each: the base colour, the metallicRoughness texture when there is one."""
    V = len(positions)
    primitive = {
        "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
        "indices": 3,
        "material": 0,
        "mode": TRIANGLES,
    }
    pbr = {
        "baseColorTexture": {"index": 0},
        "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
        # glTF's default metallicFactor is 1.0 (bare metal): always write both factors.
        "metallicFactor": factors[0],
        "roughnessFactor": factors[1],
    }
    if len(mimes) > 1:
        pbr["metallicRoughnessTexture"] = {"index": 1}
    sampler = {"magFilter": LINEAR, "minFilter": LINEAR}
    sampler |= {"wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}
    # POSITION must carry min/max (§3.7.2.1); float32 -> Python float -> JSON is exact.
    bounds = {"min": positions.min(axis=0).tolist(), "max": positions.max(axis=0).tolist()}
    return {
        "asset": {"version": "2.0", "generator": "image-to-mesh-server pipeline/glb.py"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [primitive]}],
        "materials": [{"pbrMetallicRoughness": pbr, "doubleSided": False, "alphaMode": "OPAQUE"}],
        "textures": [{"sampler": 0, "source": i} for i in range(len(mimes))],
        "samplers": [sampler],
        "images": [{"bufferView": 4 + i, "mimeType": mime} for i, mime in enumerate(mimes)],
        "accessors": [
            _accessor(0, FLOAT, V, "VEC3") | bounds,
            _accessor(1, FLOAT, V, "VEC3"),
            _accessor(2, FLOAT, V, "VEC2"),
            _accessor(3, index_type, 3 * face_count, "SCALAR"),
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": buffer_length}],
    }


def _accessor(view: int, component_type: int, count: int, kind: str) -> dict:
    return {"bufferView": view, "componentType": component_type, "count": count, "type": kind}


def _checked_geometry(
    mesh: TexturedMesh,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> positions [V, 3], unit normals [V, 3], uvs [V, 2] as <f4 and faces [F, 3] as <u4."""
    positions = _float_rows("positions", mesh.positions, 3)
    normals = _float_rows("normals", mesh.normals, 3, len(positions))
    uvs = _float_rows("uvs", mesh.uvs, 2, len(positions))
    faces = np.asarray(mesh.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise ValueError(
            f"faces must be an [F, 3] uint32 array; got shape {faces.shape} dtype {faces.dtype}"
        )
    if len(faces) == 0:
        raise ValueError("faces must be an [F, 3] uint32 array with F >= 1; got F = 0")
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= len(positions):
        raise ValueError(
            f"faces must index vertices in [0, V) with V = {len(positions)}; got [{low}, {high}]"
        )
    faces = np.ascontiguousarray(faces, dtype="<u4")
    # NORMAL must be unit length (§3.7.2.1): renormalise in float32 (cheap, V x 3) so the
    # writer, not the upstream arithmetic, guarantees it; a zero normal gets a fixed one.
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    degenerate = lengths[:, 0] < MIN_NORMAL_LENGTH
    normals = normals / np.where(degenerate[:, None], 1.0, lengths).astype("<f4")
    if degenerate.any():
        log.warning("glb: %d zero-length normals replaced by %s", degenerate.sum(), FALLBACK_NORMAL)
        normals[degenerate] = FALLBACK_NORMAL
    return positions, normals.astype("<f4", copy=False), uvs, faces


def _float_rows(name: str, array: np.ndarray, width: int, rows: int | None = None) -> np.ndarray:
    """array: [rows, width] of any real dtype -> contiguous little-endian float32, finite."""
    values = np.asarray(array)
    expected = f"[V, {width}] float32"
    if values.ndim != 2 or values.shape[1] != width or values.dtype.kind not in "fiu":
        raise ValueError(
            f"{name} must be a {expected} array; got shape {values.shape} dtype {values.dtype}"
        )
    if rows is not None and len(values) != rows:
        raise ValueError(
            f"{name} must be a {expected} array with V = {rows} (one row per "
            f"position); got {len(values)} rows"
        )
    values = np.ascontiguousarray(values, dtype="<f4")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite; got NaN or infinity")
    return values


def _checked_factors(mesh: TexturedMesh) -> tuple[float, float]:
    """(metallicFactor, roughnessFactor) as Python floats in [0, 1]."""
    factors = (float(mesh.metallic), float(mesh.roughness))
    if not all(0.0 <= factor <= 1.0 for factor in factors):  # NaN fails too
        raise ValueError(f"metallic and roughness must lie in [0, 1]; got {factors}")
    return factors


def _checked_image(name: str, image: np.ndarray, grey: bool = False) -> np.ndarray:
    """image: [H, W, 3] uint8 (or an integer dtype holding 0..255), with `grey` [H, W] too ->
    contiguous uint8."""
    pixels = np.asarray(image)
    layout = "[H, W, 3] uint8 RGB or [H, W] uint8 grey" if grey else "[H, W, 3] uint8 RGB"
    rgb = pixels.ndim == 3 and pixels.shape[2] == 3
    shape_ok = (rgb or (grey and pixels.ndim == 2)) and 0 not in pixels.shape
    if not shape_ok or pixels.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an {layout} array with H, W >= 1; "
            f"got shape {pixels.shape} dtype {pixels.dtype}"
        )
    if pixels.dtype != np.uint8:
        if pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(
                f"{name} must be an {layout} array; {pixels.dtype} "
                "values outside 0..255 cannot be converted"
            )
        pixels = pixels.astype(np.uint8)
    return np.ascontiguousarray(pixels)
