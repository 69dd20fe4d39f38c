#!/usr/bin/env bash
# bench/run_all.sh [BUILD_DIR]: builds cortex and the benchmarks, runs the five benchmarks one at
# a time (the machine has 2 cores: never in parallel), and prints a summary of the figures, their
# ratios against the same-run baselines, and the goal lines. Full outputs go to bench/out/<time>/.
#
# BUILD_DIR defaults to ./build (configured with -DCORTEX_BUILD_BENCH=ON if it is not yet).
# Env: COUNT (registry_load_bench --count, default 10000), EXTRA and EDITS (hot_reload_bench
# --extra / --edits, defaults 1000 / 200), DURATION (http_bench.sh wrk duration, default 10s),
# CALLS and TP_CALLS (execute_bench --calls / --throughput-calls, defaults 300 / 1000),
# STEPS, SEQ and REPS (workflow_bench --steps / --seq / --reps, defaults 1000 / 40 / 3),
# ITERATIONS (deploy_bench --iterations, default 10),
# OUT_DIR (default bench/out/<time>).
# Exits non-zero only when something could not be built or run; missed goals are reported, not
# failed (benchmarks do not assert timing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-${BUILD_DIR:-$REPO/build}}
COUNT=${COUNT:-10000}
EXTRA=${EXTRA:-1000}
EDITS=${EDITS:-200}
CALLS=${CALLS:-300}
TP_CALLS=${TP_CALLS:-1000}
STEPS=${STEPS:-1000}
SEQ=${SEQ:-40}
REPS=${REPS:-3}
ITERATIONS=${ITERATIONS:-10}
OUT=${OUT_DIR:-$REPO/bench/out/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORTEX_BUILD_BENCH=ON
elif ! grep -q '^CORTEX_BUILD_BENCH:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  cmake -S "$REPO" -B "$BUILD" -DCORTEX_BUILD_BENCH=ON
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt")
case "$build_type" in
  Release | RelWithDebInfo) ;;
  *) echo "run_all: WARNING: $BUILD is a '${build_type:-no type}' build; figures of an" \
       "unoptimised build mean little (use RelWithDebInfo or Release)" >&2 ;;
esac
cmake --build "$BUILD" --target cortex registry_load_bench hot_reload_bench execute_bench \
  workflow_bench deploy_bench agent_bench metrics_bench mcp_bench

status=0
run() {  # run NAME COMMAND...: runs one benchmark, its output to the terminal and $OUT/NAME.txt
  local name=$1
  shift
  echo
  echo "### $name ($(date +%T), loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
  if ! "$@" 2>&1 | tee "$OUT/$name.txt"; then
    echo "run_all: $name FAILED (exit status ${PIPESTATUS[0]})" | tee -a "$OUT/$name.txt"
    status=1
  fi
}

run registry_load "$BUILD/bench/registry_load_bench" --count "$COUNT"
run hot_reload "$BUILD/bench/hot_reload_bench" --extra "$EXTRA" --edits "$EDITS"
run http "$REPO/bench/http_bench.sh" "$BUILD/cortex"
run slow_clients python3 "$REPO/bench/slow_clients.py" "$BUILD/cortex"
run execute "$BUILD/bench/execute_bench" --calls "$CALLS" --throughput-calls "$TP_CALLS"
run workflow "$BUILD/bench/workflow_bench" --steps "$STEPS" --seq "$SEQ" --reps "$REPS"
run deploy "$BUILD/bench/deploy_bench" --iterations "$ITERATIONS"
# The OpenAI Agents SDK that agent_bench compares with, and the MCP SDK mcp_bench compares with,
# from npm (bench/node/package-lock.json).
if [[ ! -d "$REPO/bench/node/node_modules/@modelcontextprotocol/sdk" ]] && command -v npm >/dev/null; then
  npm ci --prefix "$REPO/bench/node" --no-audit --no-fund --loglevel=error >/dev/null ||
    echo "run_all: npm ci --prefix bench/node failed: agent_bench skips the SDK comparison" >&2
fi
run agent "$BUILD/bench/agent_bench" --reps 5
run mcp "$BUILD/bench/mcp_bench" --calls 1000
run metrics "$BUILD/bench/metrics_bench"
run auth "$REPO/bench/auth_bench.sh" "$BUILD/cortex"

echo
echo "================================ summary ================================"
echo "build: $BUILD ($build_type), $(nproc) cores, loadavg now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "-- registry_load_bench --count $COUNT"
grep -E '^(cold load:|  single-thread ratio|  memory ratio|goal:|WARNING)' "$OUT/registry_load.txt" || true
echo "-- hot_reload_bench --extra $EXTRA --edits $EDITS"
grep -E '^(  cortex, |  inotify, |  +p99 ratio|goal:|WARNING)' "$OUT/hot_reload.txt" |
  sed -E 's/^  +p99 ratio/    p99 ratio/' || true
echo "-- http_bench.sh"
grep -E '^(cortex \(run|nginx |throughput ratio|p99 latency ratio|cortex stability|goal:|WARNING)' \
  "$OUT/http.txt" || true
echo "-- slow_clients.py"
grep -E '^(/healthz |/registry/|p99 loaded|streams still|goal:)' "$OUT/slow_clients.txt" || true
echo "-- execute_bench --calls $CALLS --throughput-calls $TP_CALLS"
grep -E '^(unsandboxed, |sandboxed, |  -> |workers |  cortex API:|  direct spawn, |  ProcessRunner, |  history|goal:|WARNING)' \
  "$OUT/execute.txt" || true
echo "-- workflow_bench --steps $STEPS --seq $SEQ --reps $REPS"
grep -E '^(unsandboxed|sandboxed)(, (chain|fanout))?:$|^  (cortex |ninja|-> |raw sqlite3|Store, )|^  *(engine alone|chain |fanout )|^(synchronous|goal:|WARNING)' \
  "$OUT/workflow.txt" || true
echo "-- deploy_bench --iterations $ITERATIONS"
grep -E '^(  cortex: |  baseline: |  monument: |  serial sum|  -> ratio|goal:|expected:|WARNING)' \
  "$OUT/deploy.txt" || true
echo "-- agent_bench --reps 5"
grep -E '^(dispatch at|[0-9]+ iterations a run|[0-9.]+ MB, |[0-9]+ samples:|[0-9]+ runs each:|started |skipped)' \
  "$OUT/agent.txt" || true
echo "-- mcp_bench --calls 1000"
grep -E '^(  POST |  tools/call|  SDK client|  Cortex|  -> |goal:)' "$OUT/mcp.txt" || true
echo "-- metrics_bench"
grep -E '^(Registry::Render|snprintf floor|ratio:|[0-9] thread)' "$OUT/metrics.txt" || true
echo "-- auth_bench.sh"
grep -E '^(no auth |API key |JWT \(RS256\) |allowed |goal:)' "$OUT/auth.txt" || true
echo "full outputs: $OUT"
exit $status
