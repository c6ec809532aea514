"""How many variants of Triton kernels this process has compiled: the tests that check a
warm-up leaves later inputs nothing to compile count them before and after."""

from __future__ import annotations

import pytest

__all__ = ["compiled_variants"]


def compiled_variants(*kernels: object) -> int:
    """The compiled variants of these Triton kernels, over every device (natively; the
    interpreter compiles nothing). Skips the test where this Triton keeps no per-device
    kernel caches to count."""
    caches = [getattr(kernel, "device_caches", None) for kernel in kernels]
    if any(cache is None for cache in caches):
        pytest.skip("this Triton keeps no per-device kernel caches")
    return sum(len(entry[0]) for cache in caches for entry in cache.values())
