#!/usr/bin/env bash
# auth_bench.sh [CORTEX_BINARY]: what authentication costs, and how exact the rate limit is,
# at the load of the registry GET bench (http_bench.sh): wrk -t2 -c32 --latency on
# GET /registry/manifest/Tool/calculator.
#
#   1. Cost. One server with authentication off (the baseline), one with it on, in the same run:
#      the same GET with an API key (a viewer's), and with a JWT (RS256, a key made here by
#      openssl, its JWKS in a file). After a warm-up of each, ROUNDS rounds of (no auth, API key,
#      JWT), each DURATION long, the order turning each round; the medians as ratios to the
#      baseline's, and the baseline's own spread across rounds (the run's noise). Two figures:
#      req/s, and the server's CPU time a request (from /proc; steadier, as wrk shares the
#      cores). Goal (issue 13): within 5%.
#   2. The rate limit under load: a server with auth.rate_limit R and auth.rate_burst B; wrk
#      hammers it with one key for D seconds. The requests allowed (2xx) against R * D + B.
#      Goal: within 5%.
#   3. Instructions a request (when valgrind is installed): callgrind counts, exact where the
#      wall-clock figures drift; also the auth-off server sent each token's header.
# Prints figures only; never asserts. Every process started here is stopped by PID on exit.
# Needs wrk, openssl, python3, curl. Env: DURATION (5s), ROUNDS (3), RATE (500), BURST (50),
# CALLGRIND_KEEP (a folder to keep part 3's dumps in, for callgrind_annotate).
set -euo pipefail

CORTEX=${1:-./build/cortex}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-500}
BURST=${BURST:-50}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
URL_PATH=/registry/manifest/Tool/calculator

die() { echo "auth_bench: $*" >&2; exit 1; }
[[ -x "$CORTEX" ]] || die "no cortex binary at $CORTEX (build it, or pass its path as \$1)"
CORTEX=$(cd "$(dirname "$CORTEX")" && pwd)/$(basename "$CORTEX")
for tool in wrk openssl python3 curl; do
  command -v $tool >/dev/null || die "$tool is not installed"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cortex-auth-bench-XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CONFIG_YAML [WRAPPER...]: a server on its own folders (run under WRAPPER, e.g.
# valgrind, when given); sets URL to its base URL and SERVER_PID. (Not in a $(...) subshell: its
# PID must reach PIDS, so that cleanup stops it.)
start() {
  local dir="$TMP/$1"
  mkdir -p "$dir/manifests" "$dir/data"
  cp -r "$REPO/examples/manifests/." "$dir/manifests/"
  printf '%s\n' "$2" >"$dir/cortex.yml"
  if [[ "$2" == *"mode: on"* ]]; then
    "$CORTEX" auth --data-dir "$dir/data" -o json create-key bench --role viewer \
      >"$dir/key.json"
  fi
  "${@:3}" "$CORTEX" serve --config "$dir/cortex.yml" --manifests "$dir/manifests" \
    --data-dir "$dir/data" --listen 127.0.0.1:0 --log-level warn >"$dir/serve.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1200); do
    [[ -s "$dir/data/serve.json" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.log" >&2; die "cortex serve ($1) exited"; }
    sleep 0.1
  done
  local port
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' \
    "$dir/data/serve.json")
  URL="http://127.0.0.1:$port"
  SERVER_PID=$pid
}

# cpu_ticks PID: the user + system CPU ticks the process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# An RSA key, its JWKS, and a viewer's RS256 token for an hour (signed by openssl).
openssl genrsa -out "$TMP/idp.pem" 2048 2>/dev/null
python3 - "$TMP" <<'EOF'
import base64, json, subprocess, sys, time
tmp = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
mod = subprocess.run(["openssl", "rsa", "-in", f"{tmp}/idp.pem", "-noout", "-modulus"],
                     capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256",
                  "n": b64(bytes.fromhex(mod)), "e": "AQAB"}]}
open(f"{tmp}/jwks.json", "w").write(json.dumps(jwks))
head = b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
body = b64(json.dumps({"iss": "bench-idp", "aud": "cortex", "sub": "bench",
                       "exp": int(time.time()) + 3600, "cortex_role": "viewer"}).encode())
signing = f"{head}.{body}".encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{tmp}/idp.pem"], input=signing,
                     capture_output=True, check=True).stdout
open(f"{tmp}/token.jwt", "w").write(f"{head}.{body}.{b64(sig)}")
EOF

start open "auth: {mode: off}"
OPEN_URL=$URL
OPEN_PID=$SERVER_PID
start auth "auth:
  mode: on
  jwt: {issuer: bench-idp, audience: cortex, jwks_file: $TMP/jwks.json}"
AUTH_URL=$URL
AUTH_PID=$SERVER_PID
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' "$TMP/auth/key.json")
JWT=$(cat "$TMP/token.jwt")

for check in "$OPEN_URL|" "$AUTH_URL|$KEY" "$AUTH_URL|$JWT"; do
  url=${check%%|*}
  token=${check#*|}
  code=$(curl -s -o /dev/null -w '%{http_code}' ${token:+-H "Authorization: Bearer $token"} \
    "$url$URL_PATH")
  [[ "$code" == 200 ]] || die "GET $url$URL_PATH answered $code (token: ${token:0:12}...)"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$AUTH_URL$URL_PATH")
[[ "$code" == 401 ]] || die "the authenticated server answered $code without a token"

# run LABEL PID URL [TOKEN]: one wrk run; appends "req/s p99_ms cpu_us_per_request" to
# $TMP/LABEL.fig. The server's own CPU time per request is the steadier figure: wrk shares the
# two cores, so req/s also moves with how the scheduler splits them.
run() {
  local out before after
  before=$(cpu_ticks "$2")
  if [[ -n "${4:-}" ]]; then
    out=$(wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $4" "$3$URL_PATH")
  else
    out=$(wrk -t2 -c32 -d"$DURATION" --latency "$3$URL_PATH")
  fi
  after=$(cpu_ticks "$2")
  local rps p99 non2xx total cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t="$((after - before))" -v us="$TICK_US" -v n="$total" 'BEGIN {print t * us / n}')
  printf '  %-12s %10.0f req/s   p99 %7.2f ms   server CPU %6.1f us/request   non-2xx %s\n' \
    "$1" "$rps" "$p99" "$cpu" "${non2xx:-0}"
  echo "$rps $p99 $cpu" >>"$TMP/$1.fig"
}

echo "== 1. authentication cost: GET $URL_PATH, wrk -t2 -c32, $ROUNDS rounds of $DURATION =="
# Warm-up (discarded): each server and path once.
for warm in "$OPEN_URL|" "$AUTH_URL|$KEY" "$AUTH_URL|$JWT"; do
  url=${warm%%|*}
  token=${warm#*|}
  if [[ -n "$token" ]]; then
    wrk -t2 -c32 -d2s -H "Authorization: Bearer $token" "$url$URL_PATH" >/dev/null
  else
    wrk -t2 -c32 -d2s "$url$URL_PATH" >/dev/null
  fi
done
# The order turns each round (no auth first, then API key first, then JWT first...), so that a
# machine speeding up or slowing down within a round does not always favour the same one.
CASES=("noauth|$OPEN_PID|$OPEN_URL|" "apikey|$AUTH_PID|$AUTH_URL|$KEY" "jwt|$AUTH_PID|$AUTH_URL|$JWT")
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for i in 0 1 2; do
    IFS='|' read -r label pid url token <<<"${CASES[$(((round - 1 + i) % 3))]}"
    run "$label" "$pid" "$url" "$token"
  done
done
python3 - "$TMP" <<'EOF'
import statistics, sys
tmp = sys.argv[1]
def figs(n):
    return [[float(x) for x in line.split()] for line in open(f"{tmp}/{n}.fig")]
def median(rows, col):
    return statistics.median(r[col] for r in rows)
base = figs("noauth")
b_rps, b_p99, b_cpu = median(base, 0), median(base, 1), median(base, 2)
spread = (max(r[0] for r in base) - min(r[0] for r in base)) / b_rps
cpu_spread = (max(r[2] for r in base) - min(r[2] for r in base)) / b_cpu
print(f"no auth      median {b_rps:.0f} req/s, p99 {b_p99:.2f} ms, server CPU {b_cpu:.1f} us/request "
      f"(spread across rounds: req/s {spread * 100:.1f}%, CPU {cpu_spread * 100:.1f}%)")
for name, label in (("apikey", "API key"), ("jwt", "JWT (RS256)")):
    f = figs(name)
    rps, p99, cpu = median(f, 0), median(f, 1), median(f, 2)
    print(f"{label:<12} median {rps:.0f} req/s: throughput {rps / b_rps:.3f}x, p99 {p99 / b_p99:.2f}x, "
          f"server CPU a request {cpu / b_cpu:.3f}x of no auth")
print("goal: throughput within 5% of no auth (>= 0.95x), API key and JWT")
EOF

echo
echo "== 2. the rate limit under load: auth.rate_limit $RATE, auth.rate_burst $BURST, one key =="
start limit "auth:
  mode: on
  rate_limit: $RATE
  rate_burst: $BURST"
LIMIT_URL=$URL
LKEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' "$TMP/limit/key.json")
out=$(wrk -t2 -c32 -d"$DURATION" -H "Authorization: Bearer $LKEY" "$LIMIT_URL$URL_PATH")
total=$(awk '/requests in/ {print $1}' <<<"$out")
elapsed=$(awk '/requests in/ {v=$4; sub(",","",v); if (v ~ /ms$/) {sub("ms","",v); v/=1000} else if (v ~ /m$/) {sub("m","",v); v*=60} else {sub("s","",v)}; print v}' <<<"$out")
non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
non2xx=${non2xx:-0}
python3 - "$total" "$non2xx" "$elapsed" "$RATE" "$BURST" <<'EOF'
import sys
total, refused, secs, rate, burst = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
allowed = total - refused
expected = rate * secs + burst
print(f"{total} requests in {secs:.2f} s: {allowed} allowed, {refused} refused (429)")
print(f"allowed {allowed} vs rate x time + burst = {expected:.0f}: error {abs(allowed - expected) / expected * 100:.2f}%")
print("goal: within 5%")
EOF

echo
echo "== 3. instructions a request (callgrind): exact, where req/s and CPU time drift =="
# Each server under callgrind; 300 warm-up GETs, then 2,000 on one keep-alive connection between
# callgrind_control --zero and --dump. User-space instructions only (the kernel's share is the
# same on both sides). The auth-off server is also sent each token's header, which it ignores:
# what carrying the header costs, apart from what checking it costs.
if ! command -v callgrind_control >/dev/null; then
  echo "valgrind is not installed: skipped"
  exit 0
fi
start cg_open "auth: {mode: off}" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg_open.out"
CG_OPEN=$SERVER_PID
CG_OPEN_PORT=${URL##*:}
start cg_auth "auth:
  mode: on
  jwt: {issuer: bench-idp, audience: cortex, jwks_file: $TMP/jwks.json}" \
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg_auth.out"
CG_AUTH=$SERVER_PID
CG_AUTH_PORT=${URL##*:}
CG_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' \
  "$TMP/cg_auth/key.json")
# gets PORT N [TOKEN]: N GETs of URL_PATH on one connection; each must answer 200.
gets() {
  python3 - "$URL_PATH" "$@" <<'PY'
import http.client, sys
path, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
token = sys.argv[4] if len(sys.argv) > 4 else ""
c = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer " + token} if token else {}
for _ in range(n):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"GET {path} answered {r.status}")
PY
}
# count TAG LABEL PID PORT [TOKEN]: prints the instructions a request.
count() {
  gets "$4" 300 "${5:-}"
  callgrind_control --zero "$3" >/dev/null 2>&1
  gets "$4" 2000 "${5:-}"
  callgrind_control --dump="$1" "$3" >/dev/null 2>&1
  local file=""
  for _ in $(seq 100); do
    file=$(grep -l "^desc: Trigger: dump $1\$" "$TMP"/cg_*.out.* 2>/dev/null | head -n 1) || true
    [[ -n "$file" ]] && grep -q "^summary:" "$file" && break
    sleep 0.1
  done
  [[ -n "$file" ]] || die "callgrind wrote no dump for $2"
  # CALLGRIND_KEEP=DIR keeps each dump (DIR/TAG.out) for callgrind_annotate.
  if [[ -n "${CALLGRIND_KEEP:-}" ]]; then mkdir -p "$CALLGRIND_KEEP" && cp "$file" "$CALLGRIND_KEEP/$1.out"; fi
  awk -v label="$2" '/^summary:/ {printf "  %-32s %8d instructions a request\n", label, $2 / 2000}' \
    "$file"
}
count open "auth off, no token" "$CG_OPEN" "$CG_OPEN_PORT"
count open_key "auth off, the API key's header" "$CG_OPEN" "$CG_OPEN_PORT" "$CG_KEY"
count auth_key "auth on, API key" "$CG_AUTH" "$CG_AUTH_PORT" "$CG_KEY"
count open_jwt "auth off, the JWT's header" "$CG_OPEN" "$CG_OPEN_PORT" "$JWT"
count auth_jwt "auth on, JWT" "$CG_AUTH" "$CG_AUTH_PORT" "$JWT"
