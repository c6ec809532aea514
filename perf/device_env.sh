# Sourced by the GPU-machine suites (gpu_suite.sh, kernel_suite.sh, server_suite.sh) after they
# set OUT: creates it, installs the wheels carried in .whl/ (what the machine lacks, see
# perf/README.md) into /tmp/site, and runs everything natively (no Triton interpreter).
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
