"""The inputs of perf/quality.py: a mesh to unwrap and the colour source that paints it.

An input is named on the command line as
- an image (a prompt, or a folder of them): the pipeline's real front half with the
  weight-free inflate generator, prepare -> generate -> process_mesh; the colour is the
  generator's voxel field at the surface point (`pipeline.bake.field_colour`), as the bake
  reads it;
- a mesh file (.glb, .gltf, .obj, .ply, ...) read with trimesh, scene transforms applied:
  its vertices welded by quantised position (so the atlas sees the connected surface, not the
  file's UV islands), faces in the file's order less those the weld makes degenerate, fitted
  into the unit cube (Y up), smooth normals. Colour per face from its material: the base colour
  texture at the file's own corner UVs (bilinear, GL_REPEAT) times baseColorFactor, as glTF
  defines it; the factor alone where there is no texture; `procedural_colour` where the file
  has no colour at all; and per face the texels of its texture that its UVs cover
  (`source_texels`, for perf/quality_metrics.py's `source_limited_faces`);
- `synthetic:FACES`: perf/synthetic.py's TRELLIS-like mesh with `procedural_colour`.
Every colour source takes the face ids of the returned mesh, whose order the atlas keeps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kernels.vertex_normals import vertex_normals
from perf.quality_metrics import sample_bilinear, uv_areas
from perf.synthetic import FIT_SIDE, procedural_colour, synthetic_mesh
from pipeline.bake import ColourSource, field_colour
from pipeline.decode import decode_image
from pipeline.generators.inflate import InflateGenerator
from pipeline.mesh import process_mesh
from pipeline.prepare import prepare_image
from pipeline.settings import PipelineSettings
from pipeline.types import Frame, Mesh

__all__ = ["IMAGE_SUFFIXES", "QualityInput", "expand_inputs", "load_input", "load_mesh_file"]

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
SYNTHETIC_PREFIX = "synthetic:"
# Vertices closer than this fraction of the mesh's largest side are one vertex after the weld
# (files duplicate positions along their UV seams, sometimes a rounding apart).
WELD_FRACTION = 1e-6
# trimesh gives a material without an image a 2 x 2 image of its diffuse colour.
PLACEHOLDER_TEXELS = 4


@dataclass
class QualityInput:
    name: str  # for the report: the file's name, a prompt's first 12 characters, synthetic:N
    kind: str  # "prompt", "mesh" or "synthetic"
    mesh: Mesh
    colour: ColourSource  # takes the face ids of `mesh`
    # A mesh file's faces: how many texels of its base colour texture each one's UVs cover
    # (0 without one) [F] float64 on the mesh's device. None where the colour is a field with
    # no texel grid.
    source_texels: torch.Tensor | None = None


def expand_inputs(specs: list[str]) -> list[str]:
    """Folders become their images, sorted by name; everything else stays as it is."""
    out: list[str] = []
    for spec in specs:
        path = Path(spec)
        if not spec.startswith(SYNTHETIC_PREFIX) and path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            out.extend(str(p) for p in images)
        else:
            out.append(spec)
    return out


def load_input(spec: str, settings: PipelineSettings, device: torch.device) -> QualityInput:
    """One named input (see the module docstring) on `device`."""
    if spec.startswith(SYNTHETIC_PREFIX):
        faces = int(spec[len(SYNTHETIC_PREFIX) :])
        return QualityInput(
            spec, "synthetic", synthetic_mesh(faces, device=device), procedural_colour
        )
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no such input: {spec}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _load_prompt(path, settings, device)
    return load_mesh_file(path, device)


def _load_prompt(path: Path, settings: PipelineSettings, device: torch.device) -> QualityInput:
    settings = dataclasses.replace(settings, generator="inflate")
    prepared = prepare_image(decode_image(path.read_bytes(), settings), settings)
    asset = InflateGenerator(settings, device).generate(prepared.to(device), seed=0)
    mesh = process_mesh(asset, settings)
    return QualityInput(path.stem[:12], "prompt", mesh, field_colour(asset, mesh.frame, device))


@dataclass
class _Material:
    texture: np.ndarray | None  # [H, W, 3] uint8, row 0 at glTF v = 0
    factor: tuple[float, float, float]  # baseColorFactor's RGB in [0, 1]
    procedural: bool  # the file gives no colour


def _material(visual: object) -> _Material:
    material = getattr(visual, "material", None)
    image = getattr(material, "baseColorTexture", None)  # glTF (PBRMaterial)
    if image is None:
        image = getattr(material, "image", None)  # OBJ and others (SimpleMaterial)
    factor = getattr(material, "baseColorFactor", None)
    has_uv = getattr(visual, "uv", None) is not None
    texture = np.array(image.convert("RGB")) if image is not None and has_uv else None
    if texture is not None and texture.shape[0] * texture.shape[1] <= PLACEHOLDER_TEXELS:
        texture = None  # trimesh's stand-in for a material without an image: no colour given
    rgb = (1.0, 1.0, 1.0) if factor is None else tuple(float(c) / 255 for c in factor[:3])
    return _Material(texture, rgb, texture is None and factor is None)


def load_mesh_file(path: Path, device: torch.device) -> QualityInput:
    """A mesh file as an unwrap input with its own colours (see the module docstring)."""
    import trimesh  # optional dependency (the test extras): fails here, not at import

    parts = trimesh.load(str(path), force="scene").dump()  # scene transforms applied
    positions, faces, corner_uvs, slots, materials = [], [], [], [], []
    offset = 0
    for slot, part in enumerate(parts):
        materials.append(_material(part.visual))
        part_faces = np.asarray(part.faces, np.int64)
        uv = getattr(part.visual, "uv", None)
        if uv is None or materials[-1].texture is None:
            corner_uvs.append(np.zeros((len(part_faces), 3, 2), np.float64))
        else:  # trimesh's v points up: glTF's v = 1 - v
            flipped = np.column_stack((uv[:, 0], 1.0 - uv[:, 1]))
            corner_uvs.append(flipped[part_faces])
        positions.append(np.asarray(part.vertices, np.float64))
        faces.append(part_faces + offset)
        slots.append(np.full(len(part_faces), slot))
        offset += len(part.vertices)
    mesh, source_face = _weld_and_fit(np.concatenate(positions), np.concatenate(faces), device)
    slot = np.concatenate(slots)[source_face]
    uvs = np.concatenate(corner_uvs)[source_face]
    colour = _material_colour(materials, slot, uvs, device)
    texels = _source_texels(materials, slot, uvs).to(device)
    return QualityInput(path.name, "mesh", mesh, colour, texels)


def _source_texels(
    materials: list[_Material], slot: np.ndarray, corner_uvs: np.ndarray
) -> torch.Tensor:
    """Per face, the texels of its material's texture that its corner UVs [F, 3, 2] cover
    (0 where the material has none) -> [F] float64 on the CPU."""
    texels = np.array(
        [0 if m.texture is None else m.texture.shape[0] * m.texture.shape[1] for m in materials],
        np.float64,
    )
    return uv_areas(torch.from_numpy(corner_uvs)) * torch.from_numpy(texels[slot])


def _weld_and_fit(
    positions: np.ndarray, faces: np.ndarray, device: torch.device
) -> tuple[Mesh, np.ndarray]:
    """-> the welded, fitted Mesh and, per face, its face in the input [F'] int64."""
    lo, hi = positions.min(0), positions.max(0)
    extent = float((hi - lo).max()) or 1.0
    keys = np.round((positions - lo) / (extent * WELD_FRACTION)).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    welded_faces = inverse.reshape(-1)[faces]  # [F, 3]
    a, b, c = welded_faces.T
    source_face = np.flatnonzero((a != b) & (b != c) & (c != a))
    centre = (lo + hi) / 2
    scale = FIT_SIDE / extent
    fitted = torch.from_numpy(((positions[first] - centre) * scale).astype(np.float32)).to(device)
    faces_t = torch.from_numpy(welded_faces[source_face]).to(device)
    frame = Frame(scale, tuple(float(v) for v in centre))
    return Mesh(fitted, faces_t, vertex_normals(fitted, faces_t), frame), source_face


def _material_colour(
    materials: list[_Material], slot: np.ndarray, corner_uvs: np.ndarray, device: torch.device
) -> ColourSource:
    """Per face (of the welded mesh): material slot [F], the file's corner UVs [F, 3, 2]."""
    slot_t = torch.from_numpy(slot).to(device)
    uvs_t = torch.from_numpy(corner_uvs).to(device)
    textures = [
        None if m.texture is None else torch.from_numpy(m.texture).to(device) for m in materials
    ]
    factors = torch.tensor([m.factor for m in materials], dtype=torch.float32, device=device)

    def colour(
        face: torch.Tensor, barycentrics: torch.Tensor, points: torch.Tensor
    ) -> torch.Tensor:
        # The file's texture is defined on each face's own UV triangle only: beyond it lie the
        # file's gutters or other islands, so a point the bake extends past an edge is clamped.
        barycentrics = barycentrics.clamp_min(0)
        barycentrics = barycentrics / barycentrics.sum(1, keepdim=True).clamp_min(1e-12)
        which = slot_t[face]  # [T]
        out = factors[which].clone()  # [T, 3]
        for index, material in enumerate(materials):
            chosen = which == index
            if material.procedural:
                out[chosen] = procedural_colour(face[chosen], barycentrics[chosen], points[chosen])
            elif textures[index] is not None:
                uv = (barycentrics[chosen, :, None].double() * uvs_t[face[chosen]]).sum(1)
                texel = sample_bilinear(textures[index], uv, wrap="repeat") / 255.0
                out[chosen] = out[chosen] * texel
        return out

    return colour
