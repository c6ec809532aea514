"""pipeline/glb.py: the GLB as the judge loads it (trimesh), as the bytes say (our own struct
reader, independent of the writer) and as the Khronos glTF validator sees it."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import types
from collections.abc import Callable

import numpy as np
import pytest
import trimesh
from PIL import Image, JpegImagePlugin

from pipeline.glb import encode_texture, write_glb
from pipeline.jpeg import STRIP_ROWS
from pipeline.settings import PipelineSettings
from pipeline.types import GlbParts, TexturedMesh
from tests import gltf_validator
from tests.gltf_validator import validate_glb

# Renormalising unit float32 normals in float32 moves them by at most a few ulp.
NORMAL_TOLERANCE = 1e-6
# JPEG at quality 90, 4:4:4, on this file's textures measured mean |error| 0.84-0.97 and max
# 5-9 levels (Pillow 13); the tolerances leave room for another libjpeg, not a wrong image.
JPEG_MEAN_ABS_TOLERANCE = 2.0
JPEG_MAX_ABS_TOLERANCE = 16
# Not the settings' defaults, so a writer that hard-codes the material or reads the settings'
# factors instead of the mesh's fails.
METALLIC, ROUGHNESS = 0.25, 0.6
FORMATS = ("png", "jpeg")
UNSIGNED_SHORT, UNSIGNED_INT, FLOAT = 5123, 5125, 5126
COMPONENT_DTYPES = {UNSIGNED_SHORT: "<u2", UNSIGNED_INT: "<u4", FLOAT: "<f4"}
TYPE_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}


# ---------------------------------------------------------------------------------- builders
def settings_for(texture_format: str, **overrides: object) -> PipelineSettings:
    return PipelineSettings(texture_format=texture_format, **overrides)  # type: ignore[arg-type]


def cube_texture() -> np.ndarray:
    """[32, 48, 3] uint8: a 3 x 2 grid of 16-texel cells, one flat colour each, plus a ramp."""
    y, x = np.mgrid[0:32, 0:48]
    cell_colours = np.array(
        [
            [200, 40, 40],
            [40, 200, 40],
            [40, 40, 200],
            [200, 200, 40],
            [40, 200, 200],
            [200, 40, 200],
        ]
    )
    ramp = np.stack([x, y, x + y], axis=-1) % 16
    return (cell_colours[(y // 16) * 3 + x // 16] + ramp).astype(np.uint8)


def smooth_texture(height: int, width: int, seed: int) -> np.ndarray:
    """[height, width, 3] uint8 of low-frequency sines: JPEG keeps it within tolerance."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    a, b, phase = rng.random((3, 3, 1, 1)) * 6
    return (127.5 + 100 * np.sin(a * x + b * y + phase)).transpose(1, 2, 0).round().astype(np.uint8)


def cube_mesh() -> TexturedMesh:
    """A box of 24 vertices (4 per side, split along every edge) and 12 outward CCW faces.

    Side i maps to cell (i % 3, i // 3) of cube_texture; its corner UVs sit 2 texels inside
    the cell so trimesh's nearest-texel lookup lands on the side's own colour.
    """
    # (outward normal, tangent, bitangent) with tangent x bitangent = normal: CCW from outside.
    sides = [
        ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
        ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
        ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
        ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
        ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
        ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
    ]
    # Half-extents and centre not representable in float32, so min/max must be taken on f32.
    half, centre = np.array([0.45, 0.3, 0.15]), np.array([0.01, -0.02, 0.03])
    positions, normals, uvs, faces = [], [], [], []
    for i, (normal, tangent, bitangent) in enumerate(sides):
        n, t, b = (np.array(v, dtype=np.float64) for v in (normal, tangent, bitangent))
        for s, r in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            positions.append(centre + half * (n + s * t + r * b))
            normals.append(n)
            col, row = i % 3, i // 3
            uvs.append(((col * 16 + 2 + 12 * (s > 0)) / 47, (row * 16 + 2 + 12 * (r < 0)) / 31))
        faces += [[4 * i, 4 * i + 1, 4 * i + 2], [4 * i, 4 * i + 2, 4 * i + 3]]
    return TexturedMesh(
        positions=np.array(positions, dtype=np.float32),
        normals=np.array(normals, dtype=np.float32),
        uvs=np.array(uvs, dtype=np.float32),
        faces=np.array(faces, dtype=np.uint32),
        base_color=cube_texture(),
        metallic=METALLIC,
        roughness=ROUGHNESS,
    )


def random_mesh(vertex_count: int, face_count: int, seed: int) -> TexturedMesh:
    """Seeded: positions in [-0.5, 0.5), unit normals, UVs in [0, 1), non-degenerate faces
    (three distinct indices each), the last vertex used so the largest index is V - 1."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(vertex_count, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    first = rng.integers(0, vertex_count, face_count)
    step_1 = rng.integers(1, (vertex_count + 1) // 2, face_count)
    step_2 = step_1 + rng.integers(1, (vertex_count + 1) // 2, face_count)
    faces = np.stack([first, first + step_1, first + step_2], axis=1) % vertex_count
    faces[0] = [vertex_count - 1, 0, 1]
    return TexturedMesh(
        positions=rng.random((vertex_count, 3), dtype=np.float32) - np.float32(0.5),
        normals=normals,
        uvs=rng.random((vertex_count, 2), dtype=np.float32),
        faces=faces.astype(np.uint32),
        base_color=smooth_texture(37, 53, seed),
        metallic=METALLIC,
        roughness=ROUGHNESS,
    )


def with_material_texture(mesh: TexturedMesh) -> TexturedMesh:
    """The mesh with a metallicRoughness texture of another size than its base colour (R 0,
    G roughness, B metallic) and factors 1, as the bake writes a varying material."""
    texture = smooth_texture(24, 40, seed=7)
    texture[..., 0] = 0
    return dataclasses.replace(mesh, metallic=1.0, roughness=1.0, metallic_roughness=texture)


def with_grey_material_texture(mesh: TexturedMesh) -> TexturedMesh:
    """The mesh with a grey metallicRoughness texture (roughness; glTF reads it as G and B) and
    metallicFactor 0, as the bake writes a varying roughness beside metallic 0."""
    texture = np.ascontiguousarray(smooth_texture(24, 40, seed=8)[..., 1])
    return dataclasses.replace(mesh, metallic=0.0, roughness=1.0, metallic_roughness=texture)


# name -> (builder, expected index componentType)
MESHES: dict[str, tuple[Callable[[], TexturedMesh], int]] = {
    "cube": (cube_mesh, UNSIGNED_SHORT),
    "cube-material-texture": (lambda: with_material_texture(cube_mesh()), UNSIGNED_SHORT),
    "cube-grey-material": (lambda: with_grey_material_texture(cube_mesh()), UNSIGNED_SHORT),
    # 4001 faces: 24006 index bytes, so the image view needs 2 bytes of padding before it
    "random-uint16": (lambda: random_mesh(3001, 4001, seed=1), UNSIGNED_SHORT),
    "random-uint32": (lambda: random_mesh(70_001, 3001, seed=2), UNSIGNED_INT),
}
CASES = [(name, fmt) for name in MESHES for fmt in FORMATS]


# ------------------------------------------------------------------- our own GLB reader
def parse_glb(data: bytes) -> dict:
    """Header fields and every chunk, read with struct only (never through the writer)."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        chunk_length, chunk_type = struct.unpack_from("<I4s", data, offset)
        body = data[offset + 8 : offset + 8 + chunk_length]
        chunks.append({"offset": offset, "length": chunk_length, "type": chunk_type, "body": body})
        offset += 8 + chunk_length
    return {"magic": magic, "version": version, "length": length, "chunks": chunks, "end": offset}


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """-> (the JSON document, the BIN chunk's bytes), for a well-formed two-chunk GLB."""
    chunks = parse_glb(data)["chunks"]
    assert [c["type"] for c in chunks] == [b"JSON", b"BIN\0"]
    return json.loads(chunks[0]["body"]), chunks[1]["body"]


def read_accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor `index` as [count, width] (or [count] for SCALAR), per glTF §3.6.2."""
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    dtype = np.dtype(COMPONENT_DTYPES[accessor["componentType"]])
    width = TYPE_WIDTHS[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    assert (
        accessor.get("byteOffset", 0) + accessor["count"] * width * dtype.itemsize
        <= (view["byteLength"])
    )
    values = np.frombuffer(binary, dtype, accessor["count"] * width, start)
    return values if width == 1 else values.reshape(-1, width)


def image_bytes(document: dict, binary: bytes, index: int = 0) -> bytes:
    view = document["bufferViews"][document["images"][index]["bufferView"]]
    return binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]


def assert_texture_matches(actual: np.ndarray, expected: np.ndarray, texture_format: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    if texture_format == "png":
        np.testing.assert_array_equal(actual, expected)
    else:
        error = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
        assert error.mean() <= JPEG_MEAN_ABS_TOLERANCE, error.mean()
        assert error.max() <= JPEG_MAX_ABS_TOLERANCE, error.max()


def write(name: str, texture_format: str) -> tuple[TexturedMesh, PipelineSettings, GlbParts]:
    mesh = MESHES[name][0]()
    # Settings whose factors differ from the mesh's: the writer must take the mesh's.
    settings = settings_for(texture_format, metallic=0.5 if mesh.metallic == 0.0 else 0.0)
    return mesh, settings, write_glb(mesh, settings)


# ------------------------------------------------------------ the judge's loader (trimesh)
@pytest.mark.parametrize(("name", "texture_format"), CASES)
def test_trimesh_loads_what_was_written(name: str, texture_format: str) -> None:
    mesh, settings, parts = write(name, texture_format)
    scene = trimesh.load(io.BytesIO(parts.to_bytes()), file_type="glb", force=None)

    assert isinstance(scene, trimesh.Scene) and len(scene.geometry) == 1
    geometry = next(iter(scene.geometry.values()))
    assert isinstance(geometry, trimesh.Trimesh)
    np.testing.assert_array_equal(geometry.vertices, mesh.positions)
    np.testing.assert_array_equal(geometry.faces, mesh.faces)
    # Read from the file: normals trimesh recomputed from faces would not match these.
    np.testing.assert_allclose(geometry.vertex_normals, mesh.normals, atol=NORMAL_TOLERANCE)
    # trimesh flips v on load (uv origin bottom-left): it holds (u, 1 - v), computed in float32.
    expected_uvs = mesh.uvs.copy()
    expected_uvs[:, 1] = np.float32(1.0) - expected_uvs[:, 1]
    np.testing.assert_array_equal(geometry.visual.uv, expected_uvs)

    material = geometry.visual.material
    assert material.metallicFactor == mesh.metallic != settings.metallic
    assert material.roughnessFactor == mesh.roughness != settings.roughness
    assert material.alphaMode == "OPAQUE" and not material.doubleSided
    np.testing.assert_array_equal(material.baseColorFactor, [255, 255, 255, 255])
    texture = material.baseColorTexture
    assert texture.mode == "RGB"  # no alpha channel: the judge's blending fades alpha to white
    assert_texture_matches(np.asarray(texture), mesh.base_color, texture_format)
    if mesh.metallic_roughness is None:
        assert material.metallicRoughnessTexture is None
    else:  # the judge's renderer reads its G as roughness and its B as metallic
        texture = material.metallicRoughnessTexture
        assert_texture_matches(np.asarray(texture), mesh.metallic_roughness, texture_format)


def test_texture_orientation_as_trimesh_samples_it() -> None:
    """Row 0 of base_color is glTF's v = 0: each cube corner sees its own side's colour."""
    mesh = cube_mesh()
    parts = write_glb(mesh, settings_for("png"))
    scene = trimesh.load(io.BytesIO(parts.to_bytes()), file_type="glb", force=None)
    geometry = next(iter(scene.geometry.values()))

    sampled = geometry.visual.to_color().vertex_colors[:, :3]
    height, width = mesh.base_color.shape[:2]
    rows = np.round(mesh.uvs[:, 1].astype(np.float64) * (height - 1)).astype(int)
    cols = np.round(mesh.uvs[:, 0].astype(np.float64) * (width - 1)).astype(int)
    np.testing.assert_array_equal(sampled, mesh.base_color[rows, cols])
    # And the sides really differ, so a flipped image could not pass by accident.
    assert len(np.unique(sampled // 64, axis=0)) == 6


# ------------------------------------------------------------------ the bytes themselves
@pytest.mark.parametrize(("name", "texture_format"), CASES)
def test_glb_layout(name: str, texture_format: str) -> None:
    mesh, _, parts = write(name, texture_format)
    data = parts.to_bytes()
    glb = parse_glb(data)

    # Header and chunks (glTF §4): two chunks, 4-byte aligned, ending exactly at the file end.
    assert glb["magic"] == b"glTF" and glb["version"] == 2
    assert glb["length"] == len(data) == parts.size == glb["end"]
    json_chunk, bin_chunk = glb["chunks"]
    assert (json_chunk["type"], bin_chunk["type"]) == (b"JSON", b"BIN\0")
    for chunk in glb["chunks"]:
        assert chunk["offset"] % 4 == 0 and chunk["length"] % 4 == 0
    text = json_chunk["body"]
    assert text.rstrip(b" ").endswith(b"}") and len(text) - len(text.rstrip(b" ")) < 4
    document = json.loads(text)
    binary = bin_chunk["body"]

    # One scene, one node without a transform, one mesh, one triangle primitive.
    assert document["asset"]["version"] == "2.0"
    assert document["scene"] == 0 and document["scenes"] == [{"nodes": [0]}]
    assert document["nodes"] == [{"mesh": 0}]
    (gltf_mesh,) = document["meshes"]
    (primitive,) = gltf_mesh["primitives"]
    assert primitive["mode"] == 4 and primitive["material"] == 0
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}

    # The material and its textures.
    (material,) = document["materials"]
    pbr = {
        "baseColorTexture": {"index": 0},
        "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
        "metallicFactor": mesh.metallic,
        "roughnessFactor": mesh.roughness,
    }
    textures = 1
    if mesh.metallic_roughness is not None:
        pbr["metallicRoughnessTexture"] = {"index": 1}
        textures = 2
    assert material["pbrMetallicRoughness"] == pbr
    assert material["doubleSided"] is False and material["alphaMode"] == "OPAQUE"
    assert document["textures"] == [{"sampler": 0, "source": i} for i in range(textures)]
    assert document["samplers"] == [
        {"magFilter": 9729, "minFilter": 9729, "wrapS": 33071, "wrapT": 33071}
    ]
    images = document["images"]
    assert len(images) == textures
    for image in images:
        assert image["mimeType"] == f"image/{texture_format}" and "uri" not in image

    # One GLB-stored buffer; views 4-byte aligned, tightly packed, in order, zero-padded.
    (buffer,) = document["buffers"]
    assert "uri" not in buffer and buffer["byteLength"] == len(binary)
    views = document["bufferViews"]
    end = 0
    for view in views:
        assert view["buffer"] == 0 and "byteStride" not in view
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] >= end
        assert binary[end : view["byteOffset"]] == b"\0" * (view["byteOffset"] - end)
        end = view["byteOffset"] + view["byteLength"]
    assert end <= len(binary) < end + 4 and binary[end:] == b"\0" * (len(binary) - end)

    # Accessors: counts, types, targets, and POSITION bounds exact on the float32 data.
    accessors = document["accessors"]
    attributes = primitive["attributes"]
    expected = {
        attributes["POSITION"]: (FLOAT, "VEC3", len(mesh.positions)),
        attributes["NORMAL"]: (FLOAT, "VEC3", len(mesh.positions)),
        attributes["TEXCOORD_0"]: (FLOAT, "VEC2", len(mesh.positions)),
        primitive["indices"]: (MESHES[name][1], "SCALAR", 3 * len(mesh.faces)),
    }
    assert len(accessors) == len(expected)
    for index, (component_type, kind, count) in expected.items():
        accessor = accessors[index]
        assert (accessor["componentType"], accessor["type"]) == (component_type, kind)
        assert accessor["count"] == count
        target = 34963 if index == primitive["indices"] else 34962
        assert views[accessor["bufferView"]]["target"] == target
    assert all("target" not in views[image["bufferView"]] for image in images)
    assert [image["bufferView"] for image in images] == list(range(4, 4 + textures))
    assert len(views) == 4 + textures
    position = accessors[attributes["POSITION"]]
    assert position["min"] == mesh.positions.min(axis=0).tolist()
    assert position["max"] == mesh.positions.max(axis=0).tolist()
    # Written as the float32 values themselves (the box's 0.46 etc. are not float32 numbers).
    assert all(float(np.float32(x)) == x for x in position["min"] + position["max"])


@pytest.mark.parametrize(("name", "texture_format"), CASES)
def test_bytes_round_trip_through_our_reader(name: str, texture_format: str) -> None:
    mesh, _, parts = write(name, texture_format)
    document, binary = read_glb(parts.to_bytes())
    (primitive,) = document["meshes"][0]["primitives"]
    attributes = primitive["attributes"]

    positions = read_accessor(document, binary, attributes["POSITION"])
    normals = read_accessor(document, binary, attributes["NORMAL"])
    uvs = read_accessor(document, binary, attributes["TEXCOORD_0"])
    indices = read_accessor(document, binary, primitive["indices"])
    np.testing.assert_array_equal(positions, mesh.positions)
    np.testing.assert_allclose(normals, mesh.normals, atol=NORMAL_TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=NORMAL_TOLERANCE)
    np.testing.assert_array_equal(uvs, mesh.uvs)  # glTF's own convention: no flip
    np.testing.assert_array_equal(indices, mesh.faces.reshape(-1))

    textures = [mesh.base_color]
    if mesh.metallic_roughness is not None:
        textures.append(mesh.metallic_roughness)
    assert len(document["images"]) == len(textures)
    for index, texture in enumerate(textures):
        image = Image.open(io.BytesIO(image_bytes(document, binary, index)))
        assert image.format == texture_format.upper()
        assert image.mode == ("L" if texture.ndim == 2 else "RGB")
        if texture_format == "jpeg":  # 4:4:4, no chroma subsampling; grey: one component
            assert JpegImagePlugin.get_sampling(image) == (-1 if texture.ndim == 2 else 0)
            assert len(image.layer) == (1 if texture.ndim == 2 else 3)
        assert_texture_matches(np.asarray(image), texture, texture_format)


@pytest.mark.parametrize(
    ("vertex_count", "component_type"),
    [(3, UNSIGNED_SHORT), (65_535, UNSIGNED_SHORT), (65_536, UNSIGNED_INT)],
)
def test_index_type_switches_at_the_uint16_restart_value(
    vertex_count: int, component_type: int
) -> None:
    """Largest index 65534 still fits UNSIGNED_SHORT; 65535 is its restart value (§3.7.2.1)."""
    mesh = random_mesh(vertex_count, 5, seed=vertex_count)
    document, binary = read_glb(write_glb(mesh, settings_for("png")).to_bytes())
    indices = document["meshes"][0]["primitives"][0]["indices"]
    assert document["accessors"][indices]["componentType"] == component_type
    assert read_accessor(document, binary, indices).max() == vertex_count - 1


# ------------------------------------------------------------ parts, determinism, inputs
@pytest.mark.parametrize("texture_format", FORMATS)
def test_same_input_gives_the_same_bytes(texture_format: str) -> None:
    mesh = random_mesh(70_001, 3001, seed=3)
    first = write_glb(mesh, settings_for(texture_format)).to_bytes()
    again = write_glb(mesh, settings_for(texture_format)).to_bytes()
    copied = dataclasses.replace(
        mesh, **{f: getattr(mesh, f).copy() for f in ("positions", "normals", "uvs", "faces")}
    )
    assert first == again == write_glb(copied, settings_for(texture_format)).to_bytes()


def test_parts_are_separate_zero_copy_views_not_one_blob() -> None:
    mesh = random_mesh(70_001, 3001, seed=4)
    parts = write_glb(mesh, settings_for("jpeg"))
    data = parts.to_bytes()

    assert len(parts.chunks) > 3
    assert b"".join(parts.chunks) == data and parts.size == len(data)
    bin_length = parse_glb(data)["chunks"][1]["length"]
    assert max(len(memoryview(chunk).cast("B")) for chunk in parts.chunks) < bin_length
    # Contiguous float32 / uint32 inputs are handed out without a copy.
    exported = [chunk.obj for chunk in parts.chunks if isinstance(chunk, memoryview)]
    for array in (mesh.positions, mesh.uvs, mesh.faces):
        assert any(obj is array for obj in exported)


def test_lossless_dtype_and_layout_conversions_are_accepted() -> None:
    mesh = cube_mesh()
    expected = write_glb(mesh, settings_for("png")).to_bytes()
    converted = dataclasses.replace(
        mesh,
        positions=np.asfortranarray(mesh.positions.astype(np.float64)),
        normals=mesh.normals.astype(">f4"),
        uvs=mesh.uvs.astype(np.float64)[::-1][::-1],
        faces=mesh.faces.astype(np.int64),
        base_color=mesh.base_color.astype(np.int32),
    )
    assert write_glb(converted, settings_for("png")).to_bytes() == expected


def test_normals_are_written_unit_length() -> None:
    mesh = cube_mesh()
    scaled = mesh.normals * np.float32(2.5)
    scaled[0] = 0.0  # a vertex of zero-area faces: no direction at all
    document, binary = read_glb(
        write_glb(dataclasses.replace(mesh, normals=scaled), settings_for("png")).to_bytes()
    )
    attributes = document["meshes"][0]["primitives"][0]["attributes"]
    normals = read_accessor(document, binary, attributes["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=NORMAL_TOLERANCE)
    np.testing.assert_allclose(normals[1:], mesh.normals[1:], atol=NORMAL_TOLERANCE)


def _bad(**fields: Callable[[np.ndarray], np.ndarray]) -> Callable[[TexturedMesh], TexturedMesh]:
    def apply(mesh: TexturedMesh) -> TexturedMesh:
        return dataclasses.replace(mesh, **{k: f(getattr(mesh, k)) for k, f in fields.items()})

    return apply


BAD_INPUTS = [
    pytest.param(
        _bad(positions=lambda a: a[:, :2]),
        r"positions must be a \[V, 3\] float32",
        id="positions [V, 2]",
    ),
    pytest.param(
        _bad(positions=lambda a: a.reshape(-1)),
        r"positions must be a \[V, 3\]",
        id="positions flat",
    ),
    pytest.param(
        _bad(positions=lambda a: a > 0),
        r"positions must be a \[V, 3\] float32",
        id="positions bool",
    ),
    pytest.param(
        _bad(positions=lambda a: np.where(a > 0.4, np.nan, a)),
        "positions must be finite",
        id="positions NaN",
    ),
    pytest.param(
        _bad(normals=lambda a: a[:-1]),
        r"normals must be a \[V, 3\] float32 array with V = 24",
        id="normals short",
    ),
    pytest.param(
        _bad(uvs=lambda a: np.pad(a, ((0, 0), (0, 1)))),
        r"uvs must be a \[V, 2\] float32",
        id="uvs [V, 3]",
    ),
    pytest.param(
        _bad(uvs=lambda a: np.full_like(a, np.inf)), "uvs must be finite", id="uvs infinite"
    ),
    pytest.param(
        _bad(faces=lambda a: a.astype(np.float32)),
        r"faces must be an \[F, 3\] uint32",
        id="faces float",
    ),
    pytest.param(
        _bad(faces=lambda a: np.pad(a, ((0, 0), (0, 1)))),
        r"faces must be an \[F, 3\] uint32",
        id="faces [F, 4]",
    ),
    pytest.param(_bad(faces=lambda a: a[:0]), "F >= 1", id="faces empty"),
    pytest.param(
        _bad(faces=lambda a: np.where(a == 23, 24, a)),
        r"faces must index vertices in \[0, V\) with V = 24; got \[0, 24\]",
        id="face index V",
    ),
    pytest.param(
        _bad(faces=lambda a: a.astype(np.int64) - 1),
        r"faces must index vertices in \[0, V\)",
        id="face index -1",
    ),
    pytest.param(
        _bad(base_color=lambda a: np.pad(a, ((0, 0), (0, 0), (0, 1)))),
        r"base_color must be an \[H, W, 3\] uint8",
        id="base_color RGBA",
    ),
    pytest.param(
        _bad(base_color=lambda a: a / 255.0),
        r"base_color must be an \[H, W, 3\] uint8",
        id="base_color float",
    ),
    pytest.param(
        _bad(base_color=lambda a: a[..., 0]),
        r"base_color must be an \[H, W, 3\] uint8",
        id="base_color grey",
    ),
    pytest.param(
        _bad(base_color=lambda a: a[:, :0]),
        r"base_color must be an \[H, W, 3\] uint8",
        id="base_color empty",
    ),
    pytest.param(
        _bad(base_color=lambda a: a.astype(np.int16) + 100), "outside 0..255", id="base_color 300"
    ),
    pytest.param(
        lambda mesh: dataclasses.replace(mesh, metallic_roughness=mesh.base_color[..., :2]),
        r"metallic_roughness must be an \[H, W, 3\] uint8 RGB or \[H, W\] uint8 grey",
        id="metallic_roughness two channels",
    ),
    pytest.param(
        lambda mesh: dataclasses.replace(mesh, metallic_roughness=mesh.base_color / 255.0),
        r"metallic_roughness must be an \[H, W, 3\] uint8 RGB or \[H, W\] uint8 grey",
        id="metallic_roughness float",
    ),
    pytest.param(
        lambda mesh: dataclasses.replace(mesh, metallic=1.5),
        r"metallic and roughness must lie in \[0, 1\]; got \(1.5, 0.6\)",
        id="metallic 1.5",
    ),
    pytest.param(
        lambda mesh: dataclasses.replace(mesh, roughness=float("nan")),
        r"metallic and roughness must lie in \[0, 1\]",
        id="roughness NaN",
    ),
]


@pytest.mark.parametrize(("make_bad", "message"), BAD_INPUTS)
def test_bad_inputs_raise_value_errors_naming_the_expectation(
    make_bad: Callable[[TexturedMesh], TexturedMesh], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_glb(make_bad(cube_mesh()), settings_for("jpeg"))


@pytest.mark.parametrize(("field", "value"), [("metallic", 1.5), ("roughness", -0.1)])
def test_material_factors_outside_0_1_are_rejected(field: str, value: float) -> None:
    # Refused when the settings are built (at start-up), before any GLB is written.
    with pytest.raises(ValueError, match=r"metallic and roughness must lie in \[0, 1\]"):
        settings_for("png", **{field: value})


def test_encode_texture() -> None:
    image = smooth_texture(64, 96, seed=5)
    png, png_mime = encode_texture(image, settings_for("png"))
    assert png_mime == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[25] == 2  # IHDR colour type 2: truecolour RGB, no alpha
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)

    sizes = {}
    for quality in (50, 95):
        jpeg, jpeg_mime = encode_texture(image, settings_for("jpeg", jpeg_quality=quality))
        assert jpeg_mime == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        sizes[quality] = len(jpeg)
    assert sizes[50] < sizes[95]  # settings.jpeg_quality reaches the encoder

    with pytest.raises(ValueError, match="texture_format must be 'jpeg' or 'png'"):
        encode_texture(image, types.SimpleNamespace(texture_format="webp"))  # type: ignore[arg-type]


# --------------------------------------------------------------- the Khronos glTF validator
@pytest.mark.parametrize(("name", "texture_format"), CASES)
def test_khronos_validator_finds_no_errors_or_warnings(name: str, texture_format: str) -> None:
    report = validate_glb(write(name, texture_format)[2].to_bytes())
    assert report["numErrors"] == 0, report["errors"]
    assert report["numWarnings"] == 0, report["warnings"]


@pytest.mark.parametrize("texture_format", FORMATS)
def test_khronos_validator_reads_a_texture_of_several_strips(texture_format: str) -> None:
    """A texture taller than a strip is encoded in strips (pipeline/jpeg.py: joined by restart
    markers; pipeline/png.py: deflated apart): the validator and trimesh read one image."""
    height, width = 3 * STRIP_ROWS + 5, 300
    mesh = dataclasses.replace(cube_mesh(), base_color=smooth_texture(height, width, 5))
    data = write_glb(mesh, settings_for(texture_format)).to_bytes()
    if texture_format == "jpeg":
        assert b"\xff\xdd\x00\x04" in data and b"\xff\xd2" in data  # DRI and RST2
    report = validate_glb(data)
    assert report["numErrors"] == 0, report["errors"]
    assert report["numWarnings"] == 0, report["warnings"]
    loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert loaded.visual.material.baseColorTexture.size == (width, height)


def test_khronos_validator_catches_a_broken_glb() -> None:
    """The harness can fail: a POSITION max that does not match the data is an error."""
    document, binary = read_glb(write_glb(cube_mesh(), settings_for("png")).to_bytes())
    document["accessors"][0]["max"] = [0.0, 0.0, 0.0]
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    broken = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + 8 + len(binary))
    broken += struct.pack("<I4s", len(text), b"JSON") + text
    broken += struct.pack("<I4s", len(binary), b"BIN\0") + binary
    report = validate_glb(broken)
    assert report["numErrors"] > 0
    assert "ACCESSOR_MAX_MISMATCH" in {issue["code"] for issue in report["errors"]}


@pytest.mark.parametrize(
    ("required", "outcome"), [("1", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_validator_helper_skips_or_fails_without_node(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(gltf_validator.shutil, "which", lambda _: None)
    monkeypatch.setenv("REQUIRE_GLTF_VALIDATOR", required)
    with pytest.raises(outcome, match="npm ci --prefix tests/gltf"):
        validate_glb(b"")
