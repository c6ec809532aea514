"""Fixtures for the kernel tests: the devices each torch path runs on.

`device` is "cpu" everywhere and also "cuda" where a GPU is present, so the same tests run
natively on the GPU machine: `python -m pytest -m gpu tests/kernels` there runs only the CUDA
half. CPU-only machines never see a skipped CUDA case: the parameter is simply absent.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", marks=pytest.mark.gpu))


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param
