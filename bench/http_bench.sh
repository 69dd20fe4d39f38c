#!/usr/bin/env bash
# http_bench.sh [CORTEX_BINARY]: HTTP throughput and tail latency of `cortex serve` answering
# GET /registry/manifest/Tool/calculator, against nginx serving the very same bytes as a static
# file, measured in the same run with the same load generator:
#   wrk -t2 -c32 -d10s --latency   (Cortex, then nginx, then Cortex again to check stability)
# Prints a table, the cortex/nginx ratios and the goal line. Never asserts timing.
#
# Needs wrk and nginx (Debian: wrk, nginx-light; scripts/install-deps.sh with CORTEX_WITH_BENCH=1).
# nginx runs from a temp config under a temp folder; /etc/nginx is never read or touched.
# All traffic stays on 127.0.0.1. Every process started here is stopped by PID on exit.
# Env: DURATION (default 10s), THREADS (2), CONNECTIONS (32).
set -euo pipefail

CORTEX=${1:-./build/cortex}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES="$REPO/examples/manifests"
URL_PATH=/registry/manifest/Tool/calculator

die() { echo "http_bench: $*" >&2; exit 1; }
[[ -x "$CORTEX" ]] || die "no cortex binary at $CORTEX (build it, or pass its path as \$1)"
CORTEX=$(cd "$(dirname "$CORTEX")" && pwd)/$(basename "$CORTEX")
command -v wrk >/dev/null || die "wrk is not installed (Debian: apt-get install wrk)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x "$NGINX" ]] || die "nginx is not installed (Debian: apt-get install nginx-light)"
command -v curl >/dev/null || die "curl is not installed"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cortex-http-bench-XXXXXX")
CORTEX_PID=""
NGINX_PID=""
cleanup() {
  local rc=$?
  # Stop exactly the processes started here, by PID.
  if [[ -n "$NGINX_PID" ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true  # graceful: the master stops its workers
    for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null || true
  fi
  if [[ -n "$CORTEX_PID" ]] && kill -0 "$CORTEX_PID" 2>/dev/null; then
    kill -TERM "$CORTEX_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$CORTEX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CORTEX_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() {  # wait_http URL: up to 30 s for a 200
  for _ in $(seq 300); do
    if curl -sf -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# --- Cortex -----------------------------------------------------------------------------------
mkdir -p "$TMP/manifests" "$TMP/data"
cp -r "$EXAMPLES/." "$TMP/manifests/"
"$CORTEX" serve --manifests "$TMP/manifests" --data-dir "$TMP/data" --listen 127.0.0.1:0 \
  --log-level warn >"$TMP/cortex.log" 2>&1 &
CORTEX_PID=$!
for _ in $(seq 300); do
  [[ -s "$TMP/data/serve.json" ]] && break
  kill -0 "$CORTEX_PID" 2>/dev/null || { cat "$TMP/cortex.log" >&2; die "cortex serve exited"; }
  sleep 0.1
done
CORTEX_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' \
  "$TMP/data/serve.json") || die "cortex serve did not write serve.json"
CORTEX_URL="http://127.0.0.1:$CORTEX_PORT$URL_PATH"
wait_http "$CORTEX_URL" || { cat "$TMP/cortex.log" >&2; die "cortex does not answer $CORTEX_URL"; }

# --- nginx, serving the response Cortex gave, byte for byte -----------------------------------
WWW="$TMP/www"
mkdir -p "$WWW$(dirname "$URL_PATH")"
curl -sf -o "$WWW$URL_PATH" "$CORTEX_URL" || die "cannot fetch $CORTEX_URL"
# nginx's workers drop root privileges to nobody: let them read the temp folder.
chmod 755 "$TMP"
chmod -R a+rX "$WWW"
NGINX_PORT=$(free_port)
cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/client_body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fastcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { root $WWW; default_type application/json; }
  }
}
EOF
# -p/-e: no default prefix or log path is opened; -c: only this config is read.
"$NGINX" -p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.out" 2>&1 &
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT$URL_PATH"
wait_http "$NGINX_URL" || { cat "$TMP/nginx.out" "$TMP/error.log" >&2 2>/dev/null; die "nginx does not answer $NGINX_URL"; }

# --- Sanity: both answer 200 with the same number of bytes ------------------------------------
c_len=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$CORTEX_URL")
n_len=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$NGINX_URL")
echo "== http_bench =="
echo "GET $URL_PATH: cortex -> $c_len bytes, nginx -> $n_len bytes (status, body length)"
if [[ "$c_len" != "$n_len" ]]; then
  echo "WARNING: cortex and nginx do not return the same status/length; the comparison is off"
fi
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, 2 cores shared by wrk and the server"
echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Load -------------------------------------------------------------------------------------
to_ms() {  # "1.23ms" / "456.78us" / "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "nan" } }'
}

declare -A RPS P99 ERRS
run_wrk() {  # run_wrk LABEL URL
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2" 2>&1) || true
  echo "$out" >"$TMP/wrk-$1.txt"
  RPS[$1]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  P99[$1]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  ERRS[$1]=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { sub(/,/, "", $i); n += $i } } END {print n + 0}' <<<"$out")
  [[ -n "${RPS[$1]}" ]] || { echo "$out" >&2; die "could not parse wrk's output for $1"; }
}

run_wrk cortex1 "$CORTEX_URL"
run_wrk nginx "$NGINX_URL"
run_wrk cortex2 "$CORTEX_URL"

printf '\n%-18s %14s %12s %8s\n' "server" "requests/sec" "p99 (ms)" "errors"
for k in cortex1 nginx cortex2; do
  label=$k
  [[ $k == cortex1 ]] && label="cortex (run 1)"
  [[ $k == cortex2 ]] && label="cortex (run 2)"
  printf '%-18s %14.0f %12.3f %8s\n' "$label" "${RPS[$k]}" "${P99[$k]}" "${ERRS[$k]}"
done
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"

awk -v c1="${RPS[cortex1]}" -v c2="${RPS[cortex2]}" -v n="${RPS[nginx]}" \
    -v p1="${P99[cortex1]}" -v p2="${P99[cortex2]}" -v pn="${P99[nginx]}" 'BEGIN {
  c = (c1 + c2) / 2; p = (p1 + p2) / 2
  printf "\nthroughput ratio cortex/nginx: %.2f (run 1 %.2f, run 2 %.2f)\n", c / n, c1 / n, c2 / n
  printf "p99 latency ratio cortex/nginx: %.2f (run 1 %.2f, run 2 %.2f; higher is worse)\n", \
    p / pn, p1 / pn, p2 / pn
  printf "cortex stability: run 2 / run 1 throughput %.2f, p99 %.2f\n", c2 / c1, p2 / p1
  printf "goal: throughput >= 0.5x nginx (%s: %.2fx)\n", (c / n >= 0.5 ? "met" : "MISSED"), c / n
}'
for k in cortex1 cortex2; do
  [[ "${ERRS[$k]}" == 0 ]] || echo "WARNING: $k had ${ERRS[$k]} errors/non-2xx responses (see wrk output)"
done
