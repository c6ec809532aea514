"""Run the Khronos glTF validator (npm `gltf-validator`, pinned in tests/gltf) from pytest.

Install once: `npm ci --prefix tests/gltf` (or `npm install --prefix tests/gltf`). Without node
or that install the calling test is skipped, unless REQUIRE_GLTF_VALIDATOR=1 (set it in CI),
in which case it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["validate_glb"]

GLTF_DIR = Path(__file__).parent / "gltf"
SCRIPT = GLTF_DIR / "validate.mjs"
INSTALL_HINT = "install it with `npm ci --prefix tests/gltf` (or `npm install --prefix tests/gltf`)"
# The validator starts in about 0.3 s; a few MB of GLB validate in well under a second.
TIMEOUT_S = 120


def validate_glb(data: bytes) -> dict:
    """GLB bytes -> the validator's summary for them.

    Keys: validatorVersion, numErrors, numWarnings, numInfos, numHints, and errors / warnings /
    infos, each a list of {code, message, pointer}. See tests/gltf/validate.mjs.
    """
    node = shutil.which("node")
    if node is None:
        _unavailable(f"node is not on PATH; install Node.js >= 18, then {INSTALL_HINT}")
    if not (GLTF_DIR / "node_modules" / "gltf-validator").is_dir():
        _unavailable(f"the glTF validator is not installed in {GLTF_DIR}; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="gltf-validate-") as folder:
        path = Path(folder) / "asset.glb"
        path.write_bytes(data)
        run = subprocess.run(
            [node, str(SCRIPT), str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    lines = run.stdout.strip().splitlines()
    if run.returncode not in (0, 1) or len(lines) != 1:
        raise RuntimeError(
            f"validate.mjs exited {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
        )
    report = json.loads(lines[0])
    if "fatal" in report:
        raise AssertionError(f"the glTF validator could not read the GLB: {report['fatal']}")
    return report


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_GLTF_VALIDATOR") == "1":
        pytest.fail(f"REQUIRE_GLTF_VALIDATOR=1 but {reason}", pytrace=False)
    pytest.skip(f"glTF validator unavailable: {reason}")
