"""Image -> textured GLB: decode, prepare, generate, mesh, atlas, bake, glb."""

from pipeline.cpu_threads import warm_up_worker_threads

# Before any CPU maths of the importing thread (pipeline/cpu_threads.py says why); the
# server's worker threads make the same call when they start.
warm_up_worker_threads()

__all__: list[str] = []
