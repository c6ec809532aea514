#!/usr/bin/env bash
# One call on the GPU machine: the atlas and bake quality benchmark (perf/quality.py) over the
# issue's inputs. MODE=ours (default): our atlas on every input, in one process, timed on an
# otherwise idle machine. MODE=xatlas: xatlas on every input, one process per input side by
# side (xatlas is single-threaded CPU work; the machine has 16 cores), each with
# XATLAS_TIMEOUT seconds. SET=issue (default): the issue's inputs (the two textured meshes,
# prompts 1, 8, 16, 20, the synthetic meshes); SET=prompts: the inflate outputs of every prompt
# in the data folder. Writes logs and JSON under $OUT.
#
# Through the device tool (carry .whl and shared, see perf/README.md):
#   COMMIT=$(git rev-parse --short HEAD) bash perf/atlas_suite.sh
#   COMMIT=$(git rev-parse --short HEAD) MODE=xatlas bash perf/atlas_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/atlas_suite}
. "$(dirname "$0")/device_env.sh"
MODE=${MODE:-ours}
XATLAS_TIMEOUT=${XATLAS_TIMEOUT:-300}
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
  python3 perf/quality.py "${INPUTS[@]}" --device cuda --json "$OUT/quality_ours.json" \
    --markdown 2>"$OUT/quality_ours.log" | tee "$OUT/quality_ours.md"
  tail -5 "$OUT/quality_ours.log"
else
  i=0
  for input in "${INPUTS[@]}"; do
    python3 perf/quality.py "$input" --atlas xatlas --xatlas-timeout "$XATLAS_TIMEOUT" \
      --device cuda --json "$OUT/quality_xatlas_$i.json" --markdown \
      >"$OUT/quality_xatlas_$i.md" 2>"$OUT/quality_xatlas_$i.log" &
    i=$((i + 1))
  done
  wait
  cat "$OUT"/quality_xatlas_*.md
fi
