"""perf/material_bake.py on the CPU, small: the material it puts into the field is baked into a
texture that the error it reports finds close to that material, the colour texture is the
same bits in both modes, and the field's GLB carries the second texture."""

from __future__ import annotations

import re

import pytest

from perf.material_bake import measure
from pipeline.settings import PipelineSettings
from tests.pipeline.conftest import PROMPTS_DIR


def test_material_bake_reports_same_colour_bits_and_a_close_texture() -> None:
    prompts = sorted(PROMPTS_DIR.glob("*.webp")) if PROMPTS_DIR.is_dir() else []
    if not prompts:
        pytest.skip(f"shared prompts not found in {PROMPTS_DIR}")
    settings = PipelineSettings(device="cpu", resolution=64, texture_size=128)
    line = measure(prompts[0], settings, repeat=1)
    assert "base colour same bits: True" in line
    sizes = re.search(r"GLB MiB constant ([\d.]+), roughness ([\d.]+), field ([\d.]+)", line)
    assert sizes is not None and float(sizes[3]) > float(sizes[1])
    assert float(sizes[2]) > float(sizes[1])
    error = re.search(r"error mean ([\d.]+), max ([\d.]+) levels", line)
    # The texture holds the field's trilinear blend of voxel centres: within the function's
    # change over a voxel (~0.2 of the range at 64) of it, and uint8 rounding.
    assert error is not None and float(error[1]) < 3 and float(error[2]) < 0.25 * 255
    # The default mode's texture is one grey channel: fewer bytes than the same values as RGB.
    forms = re.search(r"grey (\d+) KiB, [\d.]+ ms, error after decode mean ([\d.]+) max "
                      r"[\d.]+; as RGB (\d+) KiB, [\d.]+ ms, error after decode mean ([\d.]+)",
                      line)  # fmt: skip
    assert forms is not None and int(forms[1]) < int(forms[3])
    assert float(forms[2]) < 3 and float(forms[4]) < 3
