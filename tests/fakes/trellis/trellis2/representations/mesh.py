"""MeshWithVoxel with the real constructor: vertices, faces, origin, voxel_size, coords,
attrs, voxel_shape, layout (vertices float32, faces int32, origin a float32 tensor)."""

from __future__ import annotations

import torch


class MeshWithVoxel:
    def __init__(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        origin: list,
        voxel_size: float,
        coords: torch.Tensor,
        attrs: torch.Tensor,
        voxel_shape: torch.Size,
        layout: dict | None = None,
    ) -> None:
        self.vertices = vertices.float()
        self.faces = faces.int()
        self.origin = torch.tensor(origin, dtype=torch.float32, device=self.vertices.device)
        self.voxel_size = voxel_size
        self.coords = coords
        self.attrs = attrs
        self.voxel_shape = voxel_shape
        self.layout = layout or {}

    @property
    def device(self) -> torch.device:
        return self.vertices.device
