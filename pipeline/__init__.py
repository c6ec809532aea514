"""Image -> textured GLB: decode, prepare, generate, mesh, atlas, bake, glb."""

__all__: list[str] = []
