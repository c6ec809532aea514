"""Every top-level Triton kernel in kernels/ compiles for each architecture the image must run
on (compute capability 8.9, 9.0, 10.0, 12.0) on any machine with Triton, with the argument types
and constexprs its launch site passes. The interpreter runs kernels without compiling them, so a
construct the compiler rejects would otherwise first fail on the GPU (a form of the components
kernel's jumping that stored inside a `while` loop crashed the layout pass of Triton 3.4 and
3.6, the production image's and the GPU machine's, while passing every interpreted test); and
only sm_90 runs here at all. This checks the Triton installed here; run
`tests/kernels/compile_kernels.py` by hand for another (its docstring says how)."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels.compile_kernels import ARCHES, KERNELS

ROOT = Path(__file__).resolve().parents[2]


def _native_env() -> dict[str, str]:
    """The environment without TRITON_INTERPRET (the interpreter's kernels cannot be compiled),
    with this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _launched_kernels() -> set[str]:
    """ "module.name" of each @triton.jit function in kernels/*.py that its module launches
    with a grid (`name[grid](...)`): the top-level kernels, not the helpers they call."""
    found = set()
    for path in sorted((ROOT / "kernels").glob("*.py")):
        tree = ast.parse(path.read_text())
        jitted = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef)
            and any(ast.unparse(d).startswith("triton.jit") for d in node.decorator_list)
        }
        launched = {
            node.func.value.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Subscript)
            and isinstance(node.func.value, ast.Name)
        }
        found |= {f"{path.stem}.{name}" for name in jitted & launched}
    return found


def test_the_compile_check_covers_every_launched_kernel() -> None:
    """A kernel added to kernels/ without an entry in the compile check fails here."""
    assert {f"{k.module}.{k.name}" for k in KERNELS} == _launched_kernels()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_every_kernel_compiles_for_every_target_architecture() -> None:
    """One process compiles them all; one line a kernel and architecture, "label sm_N OK ..."
    or "label sm_N FAIL why". Each PTX must target its architecture, each kernel fit its
    architecture's shared memory and register file per block, and the components kernel's PTX
    must also hold the hooking's integer atomics, the labels' loads past L1 (`ld.global.cg`)
    and the phases' barriers, or the check reports it failed."""
    assert set(ARCHES) == {89, 90, 100, 120}  # SPEC §2: the image must run on all four
    done = subprocess.run(
        [sys.executable, "-m", "tests.kernels.compile_kernels"],
        cwd=ROOT,
        env=_native_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = {}
    for line in done.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            results[(parts[0], parts[1])] = parts[2]
    failed = [
        f"{k.label} sm_{arch} {results.get((k.label, f'sm_{arch}'), 'did not run')}"
        for arch in ARCHES
        for k in KERNELS
        if not results.get((k.label, f"sm_{arch}"), "").startswith("OK")
    ]
    assert done.returncode == 0 and not failed, "\n".join(
        [f"exit {done.returncode}", *failed, done.stderr[-3000:]]
    )


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_a_kernel_over_its_architectures_launch_resources_fails_the_check() -> None:
    """The resource checks bite: the components kernel (which takes shared memory) passes at
    sm_120's real limits, fails against a shared-memory limit one byte under what it takes,
    and against a block's register file one register under what it takes."""
    code = """
import tests.kernels.compile_kernels as c
kernel = next(k for k in c.KERNELS if k.name == "_components_kernel")
compiled = c.compile_kernel(kernel, 120)
shared = compiled.metadata.shared
block = c.registers(compiled.asm["cubin"]) * 32 * compiled.metadata.num_warps
assert shared > 0 and block > 0, (shared, block)
print(c.check(kernel, 120))
c.SHARED_LIMIT[120] = shared - 1
print(c.check(kernel, 120))
c.SHARED_LIMIT[120] = shared
c.BLOCK_REGISTERS = block - 1
print(c.check(kernel, 120))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_native_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 3, done.stderr[-3000:]
    assert lines[0].startswith("OK"), lines
    assert lines[1].startswith("FAIL") and "shared memory" in lines[1], lines
    assert lines[2].startswith("FAIL") and "registers" in lines[2], lines
