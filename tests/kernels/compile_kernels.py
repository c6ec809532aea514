"""Compile every top-level Triton kernel in kernels/ for each GPU architecture the image must run
on (SPEC: compute capability 8.9, 9.0, 10.0 and 12.0), without a GPU: Triton compiles ahead of
time for a named target. Only sm_90 (the GPU machine's H100 and H200) also runs them here.

The interpreter (TRITON_INTERPRET=1, as CI runs the kernel tests) runs kernels without compiling
them, so a construct the compiler rejects first fails on the GPU: storing inside a `while` loop
of the components kernel crashed the layout pass of Triton 3.4 and 3.6, the production image's
and the GPU machine's, while every interpreted test passed. Each `Kernel` below is one launch as
its launch site makes it: the argument types Triton derives from the values passed (tensors give
pointers to their dtype, Python ints "i32" below 2^31, Python floats "fp32", an int equal to 1
outside do_not_specialize a constexpr), the constexprs and launch options, pointers specialised
as 16-byte aligned (torch's allocations are) and the integers named in `multiples_of_16` as
multiples of 16 (texture sides, resolutions), as Triton specialises them at launch.

Run by hand against any Triton, e.g. the production image's (unpacked from its wheel, its
bundled ptxas made executable):
    PYTHONPATH=/tmp/t34:. python -m tests.kernels.compile_kernels [ARCH ...]
ARCH: compute capabilities as integers (default: ARCHES). It prints one line a kernel and
architecture, "name sm_ARCH OK cubin <n> B, shared <n> B, <n> registers" or "name sm_ARCH FAIL
<why>", the compiler's diagnostics on stderr, and exits 1 if any failed.
`tests/kernels/test_compile.py` runs it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# Launch keywords that are compile options, not constexprs.
OPTIONS = frozenset({"num_warps", "num_stages", "num_ctas", "enable_fp_fusion"})
# The compute capabilities the image must run on (SPEC §2): Ada (L40S, RTX 4090), Hopper (H100,
# H200), Blackwell (B200) and consumer Blackwell (RTX 5090, RTX PRO 6000).
ARCHES = (89, 90, 100, 120)
# The most shared memory one block may take on each (bytes; CUDA's per-block opt-in maximum,
# which Triton's launcher asks for): a kernel that compiles but wants more fails at launch,
# and Ada and consumer Blackwell give under half of Hopper's.
SHARED_LIMIT = {89: 101_376, 90: 232_448, 100: 232_448, 120: 101_376}
# 32-bit registers one block may hold on all four (a multiprocessor's whole file): registers a
# thread times threads a block over it fails at launch ("too many resources requested"), and
# each architecture's compiler allocates its own count.
BLOCK_REGISTERS = 65_536
# Pointer types shared by many kernels.
F32, I32, I64 = "*fp32", "*i32", "*i64"


@dataclass(frozen=True)
class Kernel:
    """One launch of a top-level kernel, as its launch site in kernels/<module>.py makes it."""

    module: str
    name: str
    args: dict[str, str]  # every runtime argument's Triton type, e.g. "*fp32", "i32"
    launch: Callable[[ModuleType], dict[str, Any]]  # the launch's keywords: constexprs, options
    variant: str = ""  # which of several launches of one kernel
    multiples_of_16: tuple[str, ...] = ()  # integer arguments specialised as multiples of 16
    in_ptx: tuple[str, ...] = ()  # instructions the PTX must hold
    not_in_ptx: tuple[str, ...] = ()  # instructions it must not

    @property
    def label(self) -> str:
        suffix = f"[{self.variant}]" if self.variant else ""
        return f"{self.module}.{self.name}{suffix}"


# dilate(texture [S, S, 3] float32, covered), as the bake's fill launched it before ring_fill,
# S = 2048: no keep mask, int32 distances (not WIDE); the first pass reads the mask as uint8,
# the last gathers the image.
_FLOOD = {"image_ptr": F32, "keep_ptr": "*u8", "H": "i32", "W": "i32", "shift": "i32"}
_FLOOD_KEYS = {"C": 3, "HAS_KEEP": False, "WIDE": False}


def _flood(m: ModuleType, first: bool, last: bool) -> dict[str, Any]:
    tile = {"BLOCK_Y": m.BLOCK_Y, "BLOCK_X": m.BLOCK_X, "num_warps": m.NUM_WARPS}
    return {**_FLOOD_KEYS, "FIRST": first, "LAST": last, **tile}


# uv_raster's pass 1 (ranks, claims) and pass 2 (outputs), conservative as in the bake.
_COVER = {
    "corners_ptr": F32, "boxes_ptr": I32, "tile_end_ptr": I64, "best_ptr": I32,
    "claims_ptr": I32, "bary_ptr": F32, "overlapping_ptr": "*u8",
    "F": "i32", "W": "i32", "search_steps": "i32",
}  # fmt: skip


def _cover(m: ModuleType, write: bool) -> dict[str, Any]:
    return {
        "CONSERVATIVE": True, "WRITE": write, "SLACK": m.SPAN_SLACK, "TILE": m.TILE_TEXELS,
        "BAND": m.BAND_ROWS, "UNITS": m.UNITS_PER_STEP, "enable_fp_fusion": False,
    }  # fmt: skip


def _fill() -> ModuleType:
    """pipeline/texture_fill.py, whose constants the block relaxation is launched with."""
    return importlib.import_module("pipeline.texture_fill")


# field_sample of the bake's colours (C = 3 channels) at a resolution of 256 to 1024.
_FIELD = {"points": F32, "voxel_coords": I32, "attrs": F32, "table": I32, "slot_mask": "i32"}

KERNELS = [
    Kernel(
        "apply_collapses", "_apply_kernel",
        {
            "points_ptr": "*fp64", "q_ptr": "*fp64", "moved_ptr": "*i8", "remap_ptr": I64,
            "low_ptr": I64, "high_ptr": I64, "counts_ptr": I64, "open_ptr": "*i8",
            "chosen_ptr": I64, "ok_ptr": "*i8", "target_ptr": "*fp64", "S": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "apply_collapses", "_faces_kernel",
        {"faces_ptr": I64, "remap_ptr": I64, "out_ptr": I64, "alive_ptr": "*i8", "F": "i32"},
        lambda m: {"BLOCK": m.BLOCK},
    ),
    *(
        Kernel(
            "block_smooth", "_relax_kernel",
            {"values_ptr": F32, "keep_ptr": "*u8", "out_ptr": F32, "H": "i32", "W": "i32"},
            lambda m, channels=channels: {
                "C": channels, "ROUNDS": _fill().SMOOTH_ROUNDS, "OMEGA": _fill().OVER_RELAXATION,
                "SIDE": m.BLOCK, "TILE_SIDE": m.TILE,
            },
            variant=f"C={channels}", multiples_of_16=("H", "W"),
        )
        for channels in (3, 5)  # the bake's colour; colour, metallic and roughness at once
    ),
    Kernel(
        "collapse_checks", "_owner_kernel",
        {"low_ptr": I64, "high_ptr": I64, "chosen_ptr": I64, "owner_ptr": I64, "S": "i32"},
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "collapse_checks", "_link_kernel",
        {
            "low_ptr": I64, "high_ptr": I64, "keys_ptr": I64, "chosen_ptr": I64,
            "owner_ptr": I64, "tally_ptr": I32, "E": "i32", "V": "i32", "S": "i32",
            "steps": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
        in_ptx=("atom.global",),  # the tallies' integer atomic add
    ),
    Kernel(
        "collapse_checks", "_turn_kernel",
        {
            "points_ptr": "*fp64", "faces_ptr": I64, "owner_ptr": I64, "chosen_ptr": I64,
            "target_ptr": "*fp64", "tally_ptr": I32, "F": "i32", "S": "i32",
        },
        lambda m: {
            "FLIP_COS": 0.2, "TINY": m.TINY, "BLOCK": m.BLOCK, "enable_fp_fusion": False,
        },
        # The torch twin's bits: correctly rounded division and root, no fused multiply-adds.
        in_ptx=("div.rn.f64", "sqrt.rn.f64", "atom.global"), not_in_ptx=("fma.rn.f64",),
    ),
    Kernel(
        "collapse_checks", "_verdict_kernel",
        {"counts_ptr": I64, "chosen_ptr": I64, "tally_ptr": I32, "ok_ptr": "*i8", "S": "i32"},
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "components", "_components_kernel",
        {"label_ptr": I64, "a_ptr": I64, "b_ptr": I64, "n": "i32", "m": "i32"},
        lambda m: {"BLOCK": m.BLOCK, "num_warps": m.NUM_WARPS},
        # The hooking's integer atomics, the labels read past L1, the phases' barriers.
        in_ptx=("atom.global", "ld.global.cg", "bar.sync"),
    ),
    Kernel(
        "dilate", "_flood_pass_kernel",
        {"seeds_ptr": "*u8", "out_ptr": I32, **_FLOOD, "step": "i32", "sentinel": "i32"},
        lambda m: _flood(m, first=True, last=False),  # step: half the side, 1024
        variant="first", multiples_of_16=("H", "W", "step", "sentinel"),
    ),
    Kernel(
        "dilate", "_flood_pass_kernel",
        {"seeds_ptr": I32, "out_ptr": I32, **_FLOOD, "step": "i32", "sentinel": "i32"},
        lambda m: _flood(m, first=False, last=False),
        variant="middle", multiples_of_16=("H", "W", "sentinel"),
    ),
    Kernel(
        "dilate", "_flood_pass_kernel",
        {"seeds_ptr": I32, "out_ptr": F32, **_FLOOD, "sentinel": "i32"},
        lambda m: {**_flood(m, first=False, last=True), "step": 1},  # 1: a constexpr
        variant="last", multiples_of_16=("H", "W", "sentinel"),
    ),
    Kernel(
        "edge_collapse", "_collapse_kernel",
        {
            "q_ptr": "*fp64", "p_ptr": "*fp64", "low_ptr": I64, "high_ptr": I64,
            "mode_ptr": I64, "target_ptr": "*fp64", "cost_ptr": "*fp64", "E": "i32",
            "singular": "fp32",
        },
        lambda m: {"BLOCK": m.BLOCK, "enable_fp_fusion": False},
        # The torch path's bits: correctly rounded division, no fused multiply-adds.
        in_ptx=("div.rn.f64",), not_in_ptx=("fma.rn.f64",),
    ),
    Kernel(
        "edge_modes", "_flags_kernel",
        {"low_ptr": I64, "high_ptr": I64, "counts_ptr": I64, "flags_ptr": I32, "E": "i32"},
        lambda m: {"BLOCK": m.BLOCK},
        in_ptx=("atom.global",),  # the flags' integer atomic or
    ),
    Kernel(
        "edge_modes", "_modes_kernel",
        {
            "low_ptr": I64, "high_ptr": I64, "counts_ptr": I64, "refused_ptr": I64,
            "flags_ptr": I32, "mode_ptr": I64, "E": "i32", "V": "i32", "R": "i32",
            "steps": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "field_sample", "_build_kernel",
        {"voxel_coords": I32, "table": I32, "slot_mask": "i32", "N": "i32"},
        lambda m: {"BLOCK": m.BUILD_BLOCK},
    ),
    Kernel(
        "field_sample", "_blend_kernel",
        {**_FIELD, "result": F32, "missing": "*i8", "M": "i32", "R": "i32"},
        lambda m: {
            "C": 3, "BLOCK_M": m.BLEND_BLOCK, "BLOCK_C": 4, "enable_fp_fusion": False,
            "num_warps": m.BLEND_WARPS,
        },
        multiples_of_16=("R",),
    ),
    Kernel(
        "field_sample", "_search_kernel",
        {
            **_FIELD, "missing": I64, "result": F32, "found": "*i8", "K": "i32", "R": "i32",
            "limit": "fp32",
        },
        # The first pass, radius 1: a cube of 27 offsets padded to 32.
        lambda m: {
            "C": 3, "RADIUS": 1, "BLOCK_Q": m.SEARCH_LANES // 32, "BLOCK_K": 32, "BLOCK_C": 4,
            "enable_fp_fusion": False,
        },
        multiples_of_16=("R",),
    ),
    # raster_layout's grid of MAX_GRID = 512 cells; from MANY_SHAPES shapes, more candidate
    # rows a step.
    *(
        Kernel(
            "first_fit", "_first_fit_kernel",
            {
                "run_ptr": I32, "widest_ptr": I32, "lo_ptr": I32, "hi_ptr": I32,
                "start_ptr": I32, "width_ptr": I32, "out_ptr": I32, "pieces": "i32",
                "rows_stride": "i32", "grid": "i32",
            },
            lambda m, block_y=block_y: {
                "BLOCK_X": 512, "BLOCK_Y": getattr(m, block_y), "num_warps": m.NUM_WARPS
            },
            multiples_of_16=("grid",),
        )
        for block_y in ("BLOCK_Y", "BLOCK_Y_MANY")
    ),
    *(
        Kernel(
            "independent_edges", "_near_kernel",
            {
                "low_ptr": I64, "high_ptr": I64, "rank_ptr": I64, "cand_ptr": "*i8",
                "claimed_ptr": "*i8", "near_ptr": I64, "E": "i32",
            },
            lambda m, drop=drop: {"DROP": drop, "BLOCK": m.BLOCK},
            variant=f"drop={drop}",
            in_ptx=("atom.global",),  # the rank minima's integer atomic min
        )
        for drop in (False, True)
    ),
    Kernel(
        "independent_edges", "_ring_kernel",
        {"low_ptr": I64, "high_ptr": I64, "near_ptr": I64, "ring_ptr": I64, "E": "i32"},
        lambda m: {"NONE": m.NONE, "BLOCK": m.BLOCK},
        in_ptx=("atom.global",),
    ),
    Kernel(
        "independent_edges", "_pick_kernel",
        {
            "low_ptr": I64, "high_ptr": I64, "rank_ptr": I64, "cand_ptr": "*i8",
            "ring_ptr": I64, "taken_ptr": "*i8", "at_end_ptr": "*i8", "E": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "independent_edges", "_claim_kernel",
        {"low_ptr": I64, "high_ptr": I64, "at_end_ptr": "*i8", "claimed_ptr": "*i8", "E": "i32"},
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "quarter_normal", "_masked_samples_kernel",
        {"values_ptr": F32, "inside_ptr": "*u8", "samples_ptr": F32, "H": "i32", "W": "i32"},
        lambda m: {"C": 3, "BLOCK": m.SAMPLES_BLOCK},
        multiples_of_16=("H", "W"),
    ),
    Kernel(
        "quarter_normal", "_gather_kernel",
        {
            "samples_ptr": F32, "values_ptr": F32, "out_ptr": F32, "H": "i32", "W": "i32",
            "weight": "fp32",
        },
        lambda m: {"C": 3, "BLOCK": m.GATHER_BLOCK},
        multiples_of_16=("H", "W"),
    ),
    *(
        Kernel(
            "ring_fill", "_ring_fill_kernel",
            {
                "image_ptr": F32, "covered_ptr": "*u8", "ring_ptr": "*u8", "face_ptr": I64,
                "chart_ptr": I64, "out_ptr": F32, "H": "i32", "W": "i32",
            },
            lambda m, channels=channels: {
                "C": channels, "HAS_CHARTS": True, "BLOCK_Y": m.BLOCK_Y, "BLOCK_X": m.BLOCK_X,
                "num_warps": m.NUM_WARPS,
            },
            variant=f"C={channels}", multiples_of_16=("H", "W"),
            in_ptx=("div.rn.f32",),  # the chart mean's correctly rounded division
        )
        for channels in (3, 5)  # the bake's colour; colour, metallic and roughness at once
    ),
    Kernel(
        "segment_sums", "_words_kernel",
        {
            "values_ptr": "*fp64", "peak_ptr": "*fp64", "words_ptr": I64, "n": "i32",
            "fine_factor": "fp32",
        },
        lambda m: {"K": 3, "BITS": m.word_bits(3), "BLOCK": m.BLOCK},  # a chart's 3-vectors
    ),
    Kernel(
        "segment_sums", "_sums_kernel",
        {
            "scan_ptr": I64, "starts_ptr": I64, "ends_ptr": I64, "peak_ptr": "*fp64",
            "out_ptr": "*fp64", "n": "i32", "count": "i32", "fine_factor": "fp32",
        },
        lambda m: {"K": 3, "BITS": m.word_bits(3), "BLOCK": m.BLOCK},
    ),
    Kernel(
        "uv_raster", "_faces_kernel",
        {
            "uvs_ptr": F32, "faces_ptr": I64, "corners_ptr": F32, "boxes_ptr": I32,
            "tiles_ptr": I64, "overlapping_ptr": "*u8", "F": "i32", "W": "i32", "H": "i32",
        },
        lambda m: {
            "CONSERVATIVE": True, "SLACK": m.SPAN_SLACK, "TILE": m.TILE_TEXELS,
            "BAND": m.BAND_ROWS, "BLOCK": m.FACE_BLOCK, "enable_fp_fusion": False,
        },
        multiples_of_16=("W", "H"),
    ),
    Kernel(
        "uv_raster", "_cover_kernel", _COVER, lambda m: _cover(m, write=False),
        variant="ranks", multiples_of_16=("W",),
    ),
    Kernel(
        "uv_raster", "_cover_kernel", _COVER, lambda m: _cover(m, write=True),
        variant="write", multiples_of_16=("W",),
    ),
    Kernel(
        "uv_raster", "_finish_kernel",
        {"best_ptr": I32, "face_ids_ptr": I64, "bary_ptr": F32, "F": "i32", "texels": "i32"},
        lambda m: {"BLOCK": m.TEXEL_BLOCK},
        multiples_of_16=("texels",),
    ),
    Kernel(
        "weld", "_weld_insert_kernel",
        {
            "positions": F32, "table": I32, "slot_mask": "i32", "cell_ptr": "*fp64",
            "slot_of": I32, "V": "i32",
        },
        # weld(positions) with the default tolerance 0: the float bit patterns are the keys.
        lambda m: {"RULE": m.KEY_FLOAT_BITS, "BLOCK": m.INSERT_BLOCK, "enable_fp_fusion": False},
    ),
    Kernel(
        "weld", "_weld_representative_kernel",
        {
            "table": I32, "slot_of": I32, "representative": I32, "is_representative": I32,
            "V": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
    ),
    Kernel(
        "weld", "_weld_write_kernel",
        {
            "positions": F32, "representative": I32, "counts": I32, "unique": F32,
            "remap": I64, "V": "i32",
        },
        lambda m: {"BLOCK": m.BLOCK},
    ),
]  # fmt: skip


def compile_kernel(kernel: Kernel, arch: int) -> Any:
    """The compiled kernel (its `asm` holds "ptx" and "cubin") for sm_<arch>; raises on
    failure."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = importlib.import_module(f"kernels.{kernel.module}")
    fn = getattr(module, kernel.name)
    keywords = kernel.launch(module)
    constexprs = {k: v for k, v in keywords.items() if k not in OPTIONS}
    options = {k: v for k, v in keywords.items() if k in OPTIONS}
    given = set(kernel.args) | set(constexprs)
    if given != set(fn.arg_names):
        raise ValueError(f"arguments {sorted(given)} are not the kernel's {fn.arg_names}")
    signature = {a: "constexpr" if a in constexprs else kernel.args[a] for a in fn.arg_names}
    aligned = [
        i
        for i, a in enumerate(fn.arg_names)
        if signature[a].startswith("*") or a in kernel.multiples_of_16
    ]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Descriptor 2 into a temporary file while the block runs, where MLIR and LLVM write their
    diagnostics; the yielded list then holds the text written."""
    text: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            text.append(log.read().decode(errors="replace"))


def reason(error: BaseException, log: str) -> str:
    """One line that says why a compile failed: the compiler's first failed assertion or
    "error:" line, after the MLIR pass that failed where it names one; else (a Python-side
    error) the innermost exception's last line."""
    lines = [line.strip() for line in log.splitlines()]
    found = next((line for line in lines if "Assertion" in line), None)
    found = found or next((line for line in lines if "error:" in line), None)
    if found is not None:
        failed_pass = re.search(r"Pipeline failed while executing \[`(\w+)`", log)
        return f"{failed_pass[1]}: {found}" if failed_pass else found
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def registers(cubin: bytes) -> int:
    """Registers a thread of the cubin's kernel takes, as the cuobjdump Triton ships reads them."""
    import triton.backends.nvidia

    tool = Path(triton.backends.nvidia.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        done = subprocess.run(
            [str(tool), "--dump-resource-usage", file.name],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"REG:(\d+)", done.stdout)
    if found is None:
        raise ValueError(f"no register count in cuobjdump's report: {done.stdout[-300:]!r}")
    return int(found[1])


def check(kernel: Kernel, arch: int) -> str:
    """Compile one kernel for sm_<arch>: "OK cubin <n> B, shared <n> B, <n> registers", or
    "FAIL <reason>"; diagnostics go to stderr."""
    with captured_stderr() as log:
        try:
            compiled = compile_kernel(kernel, arch)
            error = None
        except Exception as caught:  # any failure is reported, then the next kernel
            error = caught
    diagnostics = log[0]
    if diagnostics:
        print(f"--- {kernel.label} sm_{arch}\n{diagnostics}", file=sys.stderr, flush=True)
    if error is not None:
        return f"FAIL {reason(error, diagnostics)}"
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target (\S+)", ptx, re.MULTILINE)
    # sm_90a, sm_100a, sm_120a: the architecture-specific forms Triton picks where they exist.
    if target is None or target[1].removesuffix("a") != f"sm_{arch}":
        return f"FAIL the PTX targets {target[1] if target else 'nothing'}, not sm_{arch}"
    shared = compiled.metadata.shared
    if shared > SHARED_LIMIT[arch]:
        return f"FAIL {shared} bytes of shared memory, over sm_{arch}'s {SHARED_LIMIT[arch]}"
    try:
        per_thread = registers(compiled.asm["cubin"])
    except (OSError, subprocess.CalledProcessError, ValueError) as caught:
        return f"FAIL no register count: {caught}"
    threads = 32 * compiled.metadata.num_warps
    if per_thread * threads > BLOCK_REGISTERS:
        return f"FAIL {per_thread} registers x {threads} threads, over a block's {BLOCK_REGISTERS}"
    missing = [op for op in kernel.in_ptx if op not in ptx]
    if missing:
        return f"FAIL the PTX lacks {', '.join(missing)}"
    present = [op for op in kernel.not_in_ptx if op in ptx]
    if present:
        return f"FAIL the PTX holds {', '.join(present)}"
    return f"OK cubin {len(compiled.asm['cubin'])} B, shared {shared} B, {per_thread} registers"


def main(argv: list[str]) -> int:
    """Compile every kernel for each architecture in argv (default ARCHES); 1 if any failed."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    import triton

    arches = [int(arch) for arch in argv] or list(ARCHES)
    print(f"triton {triton.__version__}", flush=True)
    failed = 0
    for arch in arches:
        for kernel in KERNELS:
            result = check(kernel, arch)
            failed += result.startswith("FAIL")
            print(f"{kernel.label} sm_{arch} {result}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
