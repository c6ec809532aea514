#!/usr/bin/env bash
# One call on the GPU machine for the Triton kernels: their tests natively at full sizes, then
# the side-by-side benchmark (perf/kernels.py). Writes logs and JSON under $OUT.
#
# Through the device tool (wheels for what the machine lacks are carried in .whl/, see
# perf/README.md):   COMMIT=$(git rev-parse --short HEAD) bash perf/kernel_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/kernel_suite}
. "$(dirname "$0")/device_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} | tee "$OUT/device.txt"

# 1. The kernel tests natively on the GPU, full sizes included (TESTS=0 skips).
if [ "${TESTS:-1}" = 1 ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels 2>&1 | tail -30 \
    | tee "$OUT/tests_kernels.txt"
fi

# 2. Side by side: Triton, torch, numpy reference, and the base miner's tool where one exists.
python3 perf/kernels.py --ops "${OPS:-weld,uv_raster,field_sample,dilate}" \
  --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.txt"
