"""Hot mesh and texture ops: one module per op, its numpy reference beside it."""

import functools

__all__ = ["triton_available", "triton_status"]


@functools.cache
def triton_status() -> str:
    """The Triton this process runs: 'triton <version>', else 'Triton did not import (<why>)'
    (torch's CUDA wheels bring it; CPU-only installs may not; a broken install says why)."""
    try:
        import triton
    except ImportError as error:
        return f"Triton did not import ({type(error).__name__}: {error})"
    return f"triton {triton.__version__}"


def triton_available() -> bool:
    """Whether Triton imports here: callers outside kernels/ that choose between a Triton
    path and their own ask here."""
    return triton_status().startswith("triton ")
