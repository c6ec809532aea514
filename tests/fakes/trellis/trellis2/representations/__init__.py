from .mesh import MeshWithVoxel

__all__ = ["MeshWithVoxel"]
