"""Hot mesh and texture ops: one module per op, its numpy reference beside it."""

import functools

__all__ = ["triton_available"]


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports here (torch's CUDA wheels bring it; CPU-only installs may not):
    callers outside kernels/ that choose between a Triton path and their own ask here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
