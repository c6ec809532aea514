"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fake_trellis2 import fake_trellis2

__all__ = ["fake_trellis2"]


@pytest.fixture(autouse=True)
def _hf_hub_offline_restored() -> Iterator[None]:
    """Loading TRELLIS.2 sets HF_HUB_OFFLINE for the process: each test leaves it as it was."""
    before = os.environ.get("HF_HUB_OFFLINE")
    yield
    if before is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = before
