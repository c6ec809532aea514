"""Fixtures for the kernel tests: the devices each torch path runs on, and where the Triton
kernels run.

`device` is "cpu" everywhere and also "cuda" where a GPU is present, so the same tests run
natively on the GPU machine: `python -m pytest -m gpu tests/kernels` there runs only the CUDA
half. CPU-only machines never see a skipped CUDA case: the parameter is simply absent.

`triton_device` is where each op's private Triton path is called directly: "cuda" natively on
the GPU machine, "cpu" under Triton's interpreter (`TRITON_INTERPRET=1`, as CI runs it, at
small sizes: the interpreter runs each program in Python); skipped when neither applies.
`full_size` says whether the large cases run (native GPU only).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.fixture
def triton_device() -> str:
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    if INTERPRET:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1")


@pytest.fixture
def full_size(triton_device: str) -> bool:
    return triton_device == "cuda"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Natively on a GPU, the Triton tests belong to `pytest -m gpu` too."""
    if INTERPRET or not torch.cuda.is_available():
        return
    for item in items:
        if "triton_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gpu)
