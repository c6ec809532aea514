"""Kernel benchmarks side by side: each op's Triton kernel against its numpy reference, the
obvious torch version and, where one exists, the base miner's tool.

    python perf/kernels.py [--ops weld,uv_raster,field_sample,dilate,quarter_normal] [--quick]
        [--json OUT]

Each `perf/bm_<op>.py` exposes `run(device, quick) -> list[Row]`. The table gives median ms,
effective GB/s over the bytes that must move, the ratio to the floor (that many bytes at the
copy bandwidth measured here, now) and how many times slower each row is than the Triton row
of the same case. `--quick` uses small sizes (a smoke run on the CPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Row, copy_bandwidth

OPS = ("weld", "uv_raster", "field_sample", "dilate", "quarter_normal")


def _commit() -> str:
    if os.environ.get("COMMIT"):
        return os.environ["COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(rows: list[Row], bandwidth: float) -> str:
    lines = [
        "| op | case | impl | median ms | GB/s | × floor | × Triton time |",
        "|---|---|---|---|---|---|---|",
    ]
    triton_ms = {(r.op, r.case): r.ms for r in rows if r.impl == "triton"}
    for r in rows:
        floor_ms = r.floor_bytes / (bandwidth * 1e9) * 1e3
        ratio = r.ms / floor_ms if floor_ms > 0 else float("nan")
        base = triton_ms.get((r.op, r.case))
        slower = f"{r.ms / base:.1f}" if base else "—"
        lines.append(
            f"| {r.op} | {r.case} | {r.impl} | {r.ms:.3f} | {r.gbps():.1f} | {ratio:.1f} |"
            f" {slower} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = args.device
    bandwidth = copy_bandwidth(device, nbytes=(1 << 24) if args.quick else (1 << 30))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}  commit: {_commit()}  copy bandwidth: {bandwidth:.0f} GB/s")
    rows: list[Row] = []
    for op in args.ops.split(","):
        module = importlib.import_module(f"bm_{op}")
        got = module.run(device, args.quick)
        rows.extend(got)
        print(table(got, bandwidth), flush=True)
    print()
    print(table(rows, bandwidth))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": name,
                    "commit": _commit(),
                    "copy_gbps": bandwidth,
                    "rows": [vars(r) for r in rows],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
