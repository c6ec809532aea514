"""The one-program components kernel compiles for the GPU machine's architecture (sm_90) on any
machine with Triton. The interpreter runs kernels without compiling them, so a construct the
compiler rejects would otherwise first fail on the GPU (a form of this kernel's jumping that
stored inside a `while` loop crashed the layout pass of Triton 3.4 and 3.6, the production
image's and the GPU machine's, while passing every interpreted test). This checks the Triton
installed here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMPILE = """
from triton import compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import kernels.components as K
signature = {"label_ptr": "*i64", "a_ptr": "*i64", "b_ptr": "*i64", "n": "i64", "m": "i64",
             "BLOCK": "constexpr"}
source = ASTSource(fn=K._components_kernel, signature=signature, constexprs={"BLOCK": K.BLOCK})
kernel = compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": K.NUM_WARPS})
ptx = kernel.asm["ptx"]
print(len(kernel.asm["cubin"]), ptx.count("atom.global"), ptx.count("ld.global.cg"),
      ptx.count("bar.sync"))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_the_components_kernel_compiles_for_sm90() -> None:
    root = Path(__file__).resolve().parents[2]
    # Compiled natively, not interpreted: the interpreter's kernels cannot be compiled.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cubin, atomics, bypassing_loads, barriers = map(int, done.stdout.split()[-4:])
    # A binary, the hooking's integer atomics, the labels read past L1, the phases' barriers.
    assert cubin > 0 and atomics > 0 and bypassing_loads > 0 and barriers > 0
