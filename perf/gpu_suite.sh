#!/usr/bin/env bash
# One call on the GPU machine: native CUDA tests, determinism on CUDA, and the stage benchmark
# on CUDA beside the CPU path of the same machine. Writes logs and JSON under $OUT.
#
# Through the device tool (wheels for what the machine lacks are carried in .whl/, see
# perf/README.md):   bash perf/gpu_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite}
. "$(dirname "$0")/device_env.sh"
REPEAT=${REPEAT:-5}
COUNT=${COUNT:-24}
PROMPTS=${PROMPTS:-../shared/data/prompts}
[ -d "$PROMPTS" ] || PROMPTS=shared/data/prompts

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} | tee "$OUT/device.txt"

# 1. The CUDA half of the tests (kernels, end to end on the CUDA path).
python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -25 | tee "$OUT/tests_gpu.txt"

# 2. Same bytes on CUDA across two fresh processes.
image=$(ls "$PROMPTS"/*.webp | sed -n 9p)
for run in 1 2; do
  python3 -m pipeline "$image" -o "$OUT/det_$run.glb" --seed 7 -q --set device=cuda
done
cmp "$OUT/det_1.glb" "$OUT/det_2.glb" && echo "determinism on cuda: identical bytes" \
  | tee "$OUT/determinism.txt" || echo "determinism on cuda: DIFFERENT" | tee "$OUT/determinism.txt"
rm -f "$OUT"/det_*.glb

# 3. Stage benchmark, 1024^2 RGBA prompts, 2048^2 texture: CUDA, then this machine's CPU.
python3 perf/stages.py --prompts "$PROMPTS" --count "$COUNT" --repeat "$REPEAT" --size 1024 \
  --set device=cuda --json "$OUT/stages_cuda.json" 2>/dev/null | tee "$OUT/stages_cuda.txt"
python3 perf/stages.py --prompts "$PROMPTS" --count 4 --repeat 3 --size 1024 \
  --set device=cpu --json "$OUT/stages_cpu.json" 2>/dev/null | tee "$OUT/stages_cpu.txt"
