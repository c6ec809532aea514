"""GENERATOR=auto|trellis2|inflate: which generator, and the reason given for it."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from pipeline.generators import make_generator
from pipeline.generators.trellis2 import Trellis2Unavailable
from pipeline.settings import PipelineSettings
from tests.fake_trellis2 import FAKES

CPU = torch.device("cpu")


def settings(**values) -> PipelineSettings:
    return dataclasses.replace(PipelineSettings(device="cpu", resolution=32), **values)


def test_inflate_is_inflate():
    selection = make_generator(settings(generator="inflate"), CPU)
    assert (selection.generator.name, selection.reason) == ("inflate", "GENERATOR=inflate")


def test_auto_without_the_package_is_inflate_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trellis2.pipelines", None)  # not installed (here it is not)
    selection = make_generator(settings(weights_dir=str(tmp_path)), CPU)
    assert selection.generator.name == "inflate"
    assert selection.reason.startswith("GENERATOR=auto: trellis2 does not import (")
    assert "trellis2" in selection.reason.split("(", 1)[1]


def test_auto_without_the_weights_is_inflate_and_names_them(fake_trellis2, tmp_path):
    selection = make_generator(settings(weights_dir=str(tmp_path)), CPU)
    assert selection.generator.name == "inflate"
    assert f"weights missing in {tmp_path}" in selection.reason
    assert "microsoft/TRELLIS.2-4B@af44b45f2e35" in selection.reason
    assert "FETCH_WEIGHTS=false" in selection.reason


def test_auto_with_the_package_and_the_weights_is_trellis2(fake_trellis2):
    selection = make_generator(settings(weights_dir=str(fake_trellis2.weights)), CPU)
    assert selection.generator.name == "trellis2"
    assert selection.reason == (
        f"GENERATOR=auto: trellis2 imports and its pinned weights are in {fake_trellis2.weights}"
    )


def test_auto_falls_back_when_trellis2_fails_to_load(fake_trellis2):
    fake_trellis2.hooks.load_failure = RuntimeError("CUDA error: no kernel image for sm_120")
    selection = make_generator(settings(weights_dir=str(fake_trellis2.weights)), CPU)
    assert selection.generator.name == "inflate"
    assert "trellis2 failed to load (RuntimeError: CUDA error" in selection.reason


def test_trellis2_asked_for_but_unavailable_fails_the_load(fake_trellis2, tmp_path):
    with pytest.raises(Trellis2Unavailable, match="weights missing"):
        make_generator(settings(generator="trellis2", weights_dir=str(tmp_path)), CPU)
    fake_trellis2.hooks.load_failure = RuntimeError("broken")
    with pytest.raises(RuntimeError, match="broken"):
        make_generator(settings(generator="trellis2", weights_dir=str(fake_trellis2.weights)), CPU)


def test_auto_fetches_missing_weights_when_allowed(fake_trellis2, tmp_path, monkeypatch):
    """FETCH_WEIGHTS=true: the child process downloads them (the fake Hub); DINOv3 is gated."""
    monkeypatch.setenv("PYTHONPATH", str(FAKES / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    chosen = settings(weights_dir=str(tmp_path), fetch_weights=True)
    refused = make_generator(chosen, CPU)
    assert refused.generator.name == "inflate"
    assert "facebook/dinov3-vitl16-pretrain-lvd1689m" in refused.reason
    assert "download failed" in refused.reason and "TRELLIS.2-4B@" not in refused.reason
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    assert make_generator(chosen, CPU).generator.name == "trellis2"
