"""Image -> textured GLB: decode, prepare, generate, mesh, atlas, bake, glb."""

import multiprocessing

if multiprocessing.parent_process() is None:
    # Before any CPU maths of the importing thread (pipeline/cpu_threads.py says why); the
    # server's worker threads make the same call when they start. Not in the pipeline's child
    # processes (simplification's slab workers, the xatlas child): they run no torch maths,
    # and without it they start without importing torch (a slab worker: numpy and
    # fast-simplification only).
    from pipeline.cpu_threads import warm_up_worker_threads

    warm_up_worker_threads()

__all__: list[str] = []
