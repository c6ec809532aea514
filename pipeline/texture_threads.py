"""The thread pool that encodes a texture's strips (pipeline/jpeg.py, pipeline/png.py).

Both encoders hand their strips to C code that releases the GIL (OpenCV's libjpeg, zlib), so
threads run them side by side. One pool for the process, started at the first encode (the
server's warm-up), up to MAX_THREADS threads; the bytes never depend on its size.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_THREADS", "texture_pool"]

MAX_THREADS = 8  # a 2048² texture is 8 strips

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def texture_pool() -> ThreadPoolExecutor:
    """The process's strip-encoding pool, started on first use."""
    global _pool
    with _lock:
        if _pool is None:
            size = max(1, min(MAX_THREADS, os.cpu_count() or 1))
            _pool = ThreadPoolExecutor(size, thread_name_prefix="texture")
        return _pool
