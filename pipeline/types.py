"""The plain data types that flow between the stages.

decode -> DecodedImage -> prepare -> PreparedImage -> generate -> RawAsset -> mesh -> Mesh
-> atlas -> UVMesh -> bake -> TexturedMesh -> glb -> GlbParts

Frames: a RawAsset lives in TRELLIS.2's frame (Z up, object inside [-0.5, 0.5]^3, the
camera on -Y looking at +Y). From the mesh stage on, positions are glTF's (Y up, front
facing +Z, fitted into the unit cube); `Frame` maps them back to the asset for baking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "DecodedImage",
    "Frame",
    "GlbParts",
    "Mesh",
    "PreparedImage",
    "RawAsset",
    "TexturedMesh",
    "UVMesh",
]


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # [H, W, 4] uint8 RGBA; alpha is 255 where the file had none
    has_alpha: bool  # the file carried alpha (an alpha channel or a transparent palette entry)
    format: str  # the sniffed container format: "PNG", "JPEG", "WEBP", ...


@dataclass(frozen=True)
class PreparedImage:
    """The object, centred in a square frame with a small margin."""

    rgb: torch.Tensor  # [S, S, 3] float32 in [0, 1], straight (not premultiplied) colour
    mask: torch.Tensor  # [S, S] float32 in [0, 1], the object's matte
    matte_source: str  # "alpha" (the file's own), "matting" (background removed), "full-frame"

    def to(self, device: torch.device, non_blocking: bool = False) -> PreparedImage:
        return PreparedImage(
            self.rgb.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
            self.matte_source,
        )


@dataclass
class RawAsset:
    """What a generator emits; the same shape as TRELLIS.2's MeshWithVoxel."""

    vertices: torch.Tensor  # [V, 3] float32, Z up, inside [-0.5, 0.5]^3
    faces: torch.Tensor  # [F, 3] int64, any winding, possibly non-manifold or open
    coords: torch.Tensor  # [N, 3] int32 voxel indices in [0, resolution)
    attrs: torch.Tensor  # [N, 6] float32 in [0, 1]: base colour RGB, metallic, roughness, alpha
    resolution: int  # voxel (i, j, k) spans -0.5 + [i, i + 1] / resolution on each axis


@dataclass(frozen=True)
class Frame:
    """glTF output frame -> asset frame: undo the fit, then turn Y up back into Z up."""

    scale: float  # output = (asset_yup - center) * scale
    center: tuple[float, float, float]  # in the Y-up asset frame

    def to_asset(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: [..., 3] in the output frame -> [..., 3] in the Z-up asset frame."""
        center = torch.tensor(self.center, dtype=positions.dtype, device=positions.device)
        yup = positions / self.scale + center
        # glTF (x, y, z) = asset (x, z, -y), so asset (x, y, z) = glTF (x, -z, y)
        return torch.stack((yup[..., 0], -yup[..., 2], yup[..., 1]), dim=-1)


@dataclass
class Mesh:
    """A clean, simplified, outward-wound mesh in the output frame."""

    positions: torch.Tensor  # [V, 3] float32, Y up, front +Z, inside the unit cube
    faces: torch.Tensor  # [F, 3] int64, counter-clockwise seen from outside
    normals: torch.Tensor  # [V, 3] float32, unit length, smooth (area-weighted)
    frame: Frame  # maps positions back to the RawAsset for baking
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class UVMesh:
    """The mesh cut along UV seams: a vertex per (position, uv) pair."""

    positions: torch.Tensor  # [V', 3] float32
    faces: torch.Tensor  # [F, 3] int64
    normals: torch.Tensor  # [V', 3] float32
    uvs: torch.Tensor  # [V', 2] float32 in [0, 1]; glTF: (0, 0) is the image's top-left
    frame: Frame
    stats: dict[str, float] = field(default_factory=dict)
    # The conservative raster of these UVs at the texture size, when the atlas made one (the
    # chart atlas checks overlaps with it); faces keep their order, so the bake can reuse it.
    raster: Any = None


@dataclass
class TexturedMesh:
    """Everything the GLB holds, on the host."""

    positions: np.ndarray  # [V, 3] float32
    normals: np.ndarray  # [V, 3] float32, unit length
    uvs: np.ndarray  # [V, 2] float32
    faces: np.ndarray  # [F, 3] uint32
    base_color: np.ndarray  # [H, W, 3] uint8; row 0 is v = 0 (glTF's image top)
    metallic: float  # glTF metallicFactor
    roughness: float  # glTF roughnessFactor
    # [H, W, 3] uint8 as glTF reads it: G roughness, B metallic (R unused, 0), times the
    # factors; or [H, W] uint8, one grey channel that glTF reads as both G and B; None: the
    # factors alone.
    metallic_roughness: np.ndarray | None = None


@dataclass(frozen=True)
class GlbParts:
    """A GLB as the byte strings that, in order, make the file (never one joined copy).

    Chunks may be views of the TexturedMesh's arrays: those must not change until it is sent.
    """

    chunks: tuple[bytes | memoryview, ...]

    @property
    def size(self) -> int:
        return sum(len(memoryview(chunk).cast("B")) for chunk in self.chunks)

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks)
