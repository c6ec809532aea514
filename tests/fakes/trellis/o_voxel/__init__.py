"""Fake o_voxel: like the real package, importing it imports `postprocess`, which imports
nvdiffrast at its top."""

from . import convert, postprocess

__all__ = ["convert", "postprocess"]
