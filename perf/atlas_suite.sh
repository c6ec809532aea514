#!/usr/bin/env bash
# One call on the GPU machine: the atlas and bake quality benchmark (perf/quality.py) over the
# issue's inputs. MODE=ours (default): our atlas on every input, in one process, timed on an
# otherwise idle machine. MODE=xatlas: xatlas on every input, one process per input side by
# side (xatlas is single-threaded CPU work; the machine has 16 cores), each with
# XATLAS_TIMEOUT seconds. MODE=pair: both on every input in one process (so each record
# carries the seam cost against the other), JOBS inputs side by side (default 6; the times are
# then shared-machine times, for the quality numbers only), merged into quality_pair.json and
# quality_pair.md. SETTINGS: space-separated NAME=VALUE pipeline settings for every run (e.g.
# "resolution=1024"). SET=issue (default): the issue's inputs (the two textured meshes,
# prompts 1, 8, 16, 20, the synthetic meshes); SET=prompts: the inflate outputs of every prompt
# in the data folder. Writes logs and JSON under $OUT.
#
# Through the device tool (carry .whl and shared, see perf/README.md):
#   COMMIT=$(git rev-parse --short HEAD) bash perf/atlas_suite.sh
#   COMMIT=$(git rev-parse --short HEAD) MODE=xatlas bash perf/atlas_suite.sh
#   COMMIT=$(git rev-parse --short HEAD) MODE=pair SET=prompts bash perf/atlas_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/atlas_suite}
. "$(dirname "$0")/device_env.sh"
MODE=${MODE:-ours}
XATLAS_TIMEOUT=${XATLAS_TIMEOUT:-300}
JOBS=${JOBS:-6}
SETS=()
for setting in ${SETTINGS:-}; do SETS+=(--set "$setting"); done
DATA=../shared/data
[ -d "$DATA" ] || DATA=shared/data
if [ "${SET:-issue}" = prompts ]; then
  INPUTS=("$DATA"/prompts/*.webp)
else
  PROMPTS=$(ls "$DATA"/prompts/*.webp | sed -n '2p;9p;17p;21p')  # prompts 1, 8, 16, 20
  INPUTS=("$DATA"/meshes/Duck.glb "$DATA"/meshes/CesiumMilkTruck.glb $PROMPTS
          synthetic:200000 synthetic:1000000 synthetic:2000000)
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} | tee "$OUT/device.txt"

if [ "$MODE" = ours ]; then
  python3 perf/quality.py "${INPUTS[@]}" "${SETS[@]}" --device cuda --json "$OUT/quality_ours.json" \
    --markdown 2>"$OUT/quality_ours.log" | tee "$OUT/quality_ours.md"
  tail -5 "$OUT/quality_ours.log"
elif [ "$MODE" = pair ]; then
  i=0
  for input in "${INPUTS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    python3 perf/quality.py "$input" "${SETS[@]}" --atlas default,xatlas --repeat 1 \
      --xatlas-timeout "$XATLAS_TIMEOUT" --device cuda --json "$OUT/pair_$i.json" \
      2>"$OUT/pair_$i.log" >/dev/null &
    i=$((i + 1))
  done
  wait
  python3 - "$OUT" <<'PY'
import json, pathlib, sys
from perf.quality import markdown_table
out = pathlib.Path(sys.argv[1])
parts = sorted(out.glob("pair_*.json"), key=lambda p: int(p.stem.split("_")[1]))
report = json.loads(parts[0].read_text()) if parts else {"records": []}
report["records"] = [r for p in parts for r in json.loads(p.read_text())["records"]]
(out / "quality_pair.json").write_text(json.dumps(report, indent=1))
(out / "quality_pair.md").write_text(markdown_table(report["records"]) + "\n")
PY
  grep -h -i "warn\|error\|traceback" "$OUT"/pair_*.log | head -20
  rm -f "$OUT"/pair_*.json "$OUT"/pair_*.log
  cat "$OUT/quality_pair.md"
else
  i=0
  for input in "${INPUTS[@]}"; do
    python3 perf/quality.py "$input" "${SETS[@]}" --atlas xatlas --xatlas-timeout "$XATLAS_TIMEOUT" \
      --device cuda --json "$OUT/quality_xatlas_$i.json" --markdown \
      >"$OUT/quality_xatlas_$i.md" 2>"$OUT/quality_xatlas_$i.log" &
    i=$((i + 1))
  done
  wait
  cat "$OUT"/quality_xatlas_*.md
fi
