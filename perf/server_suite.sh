#!/usr/bin/env bash
# One call on the GPU machine for the server as the competition times it: the real server
# (`python -m server`, inflate generator) on loopback, `perf/latency.py` sequential as the
# orchestrator sends, a burst of BURST with prefetch on, the server restarted with PREFETCH=0
# and the same burst again, then `perf/profile.py` per step, and the RESULTS.md entry made of
# them (`perf/report.py`). Writes 8 files under $OUT, the most the device tool returns:
# device.txt, latency.json, burst_on.json, burst_off.json, profile.json, entry.md, suite.log
# (everything printed) and server.log (both servers' logs).
#
# Through the device tool (wheels for what the machine lacks in .whl/, the prompts in
# shared/data/prompts, see perf/README.md):
#   COMMIT=$(git rev-parse --short HEAD) bash perf/server_suite.sh
# Then here: python perf/report.py <returned folder> --into perf/RESULTS.md
# Knobs: COUNT (prompts, 24), REPEAT (profile runs per prompt, 3), BURST (4), SEED (42),
# GENERATOR (inflate); every other server or pipeline setting passes through the environment.
set -uo pipefail
OUT=${OUT:-/tmp/server_suite}
. "$(dirname "$0")/device_env.sh"
export GENERATOR=${GENERATOR:-inflate}
export COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
COUNT=${COUNT:-24}
REPEAT=${REPEAT:-3}
BURST=${BURST:-4}
SEED=${SEED:-42}
PROMPTS=${PROMPTS:-../shared/data/prompts}
[ -d "$PROMPTS" ] || PROMPTS=shared/data/prompts
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT
LOG=$OUT/suite.log
: >"$LOG"
: >"$OUT/server.log"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no NVIDIA GPU ($(nproc) CPU cores)"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    2>/dev/null || python3 -c "import torch; print('torch', torch.__version__)"
  echo "commit $COMMIT"
} | tee "$OUT/device.txt" | tee -a "$LOG"

server_pid=""
start_server() {  # $1: PREFETCH (1 or 0)
  echo "== server on $URL, PREFETCH=$1, GENERATOR=$GENERATOR" | tee -a "$LOG" >>"$OUT/server.log"
  PREFETCH=$1 python3 -m server --host 127.0.0.1 --port "$PORT" >>"$OUT/server.log" 2>&1 &
  server_pid=$!
}
stop_server() {  # SIGTERM: aiohttp shuts down gracefully; SIGKILL after 60 s
  [ -n "$server_pid" ] || return 0
  kill "$server_pid" 2>/dev/null
  for _ in $(seq 120); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=""
}
trap stop_server EXIT
latency() {  # latency.py against the running server, output into the suite's log
  python3 perf/latency.py --url "$URL" --prompts "$PROMPTS" --count "$COUNT" --seed "$SEED" \
    --png --wait-healthy 900 "$@" 2>&1 | tee -a "$LOG"
}

# 1. Prefetch on (the default): sequential as the orchestrator sends, then a burst.
start_server 1
latency --label "sequential, prefetch on" --json "$OUT/latency.json"
latency --burst "$BURST" --label "burst, prefetch on" --json "$OUT/burst_on.json"
stop_server

# 2. The same burst on a server restarted with prefetch off.
start_server 0
latency --burst "$BURST" --label "burst, prefetch off" --json "$OUT/burst_off.json"
stop_server

# 3. Per-step profile in process (the GPU is free again), CUDA events where there is CUDA.
echo "== perf/profile.py (its log)" >>"$OUT/server.log"
python3 perf/profile.py --prompts "$PROMPTS" --count "$COUNT" --repeat "$REPEAT" --png \
  --seed "$SEED" --json "$OUT/profile.json" 2>>"$OUT/server.log" | tee -a "$LOG"

# 4. The RESULTS.md entry (appended here, on the local machine: see the header).
python3 perf/report.py "$OUT" 2>>"$LOG" | tee "$OUT/entry.md" | tee -a "$LOG"
