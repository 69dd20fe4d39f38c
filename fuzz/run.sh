#!/usr/bin/env bash
# Fuzzes the manifest parser, JSON input (json_fuzzer), the protocol parser, and the other
# parsers of outside bytes (inputs_fuzzer: provider streams, workflow input, request headers), and
# the HTTP server's request reading and answer framing (http_fuzzer), and the API's route handlers
# (routes_fuzzer)
# with libFuzzer (clang from Debian) for SECONDS (default 60),
# starting from a seed corpus of the test cases and examples. Outside CI:
#   bash fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
BUILD=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCORTEX_BUILD_FUZZ=ON -DCORTEX_BUILD_TESTS=OFF -DCORTEX_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" --target manifest_fuzzer json_fuzzer protocol_fuzzer inputs_fuzzer http_fuzzer routes_fuzzer
CORPUS="$BUILD/fuzz-corpus"
mkdir -p "$CORPUS"
cp tests/data/parser/*.yml tests/data/parser/*.md "$CORPUS"/ 2>/dev/null || true
find examples/manifests -name '*.yml' -o -name '*.md' | while read -r f; do
  cp "$f" "$CORPUS/example-$(echo "$f" | tr '/' '_')"
done
"$BUILD/fuzz/manifest_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -timeout=5 \
  -rss_limit_mb=2048 "$CORPUS"

# JSON from outside and tool output: seeds with deep nesting and invalid UTF-8.
JSON_CORPUS="$BUILD/fuzz-corpus-json"
mkdir -p "$JSON_CORPUS"
cp fuzz/seeds/json/* "$JSON_CORPUS"/
"$BUILD/fuzz/json_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=5 \
  -rss_limit_mb=2048 "$JSON_CORPUS"

# Model output: the streaming protocol parser, seeded with the parser's test transcripts.
PROTOCOL_CORPUS="$BUILD/fuzz-corpus-protocol"
mkdir -p "$PROTOCOL_CORPUS"
cp tests/data/protocol/*.txt "$PROTOCOL_CORPUS"/
"$BUILD/fuzz/protocol_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -timeout=5 \
  -rss_limit_mb=2048 "$PROTOCOL_CORPUS"

# Provider streams, workflow and tool input, request headers.
INPUTS_CORPUS="$BUILD/fuzz-corpus-inputs"
mkdir -p "$INPUTS_CORPUS"
cp fuzz/seeds/inputs/* "$INPUTS_CORPUS"/
"$BUILD/fuzz/inputs_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -timeout=5 \
  -rss_limit_mb=2048 "$INPUTS_CORPUS"

# The HTTP server's reading of raw request bytes and framing of answers.
HTTP_CORPUS="$BUILD/fuzz-corpus-http"
mkdir -p "$HTTP_CORPUS"
cp fuzz/seeds/http/* "$HTTP_CORPUS"/
"$BUILD/fuzz/http_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=8192 -timeout=5 \
  -rss_limit_mb=2048 "$HTTP_CORPUS"

# The API's route handlers through the router and filters. Seeds: each of the first 96 route
# indexes with GET and POST, a tool call's body, and a manifest posted as JSON.
ROUTES_CORPUS="$BUILD/fuzz-corpus-routes"
mkdir -p "$ROUTES_CORPUS"
python3 - "$ROUTES_CORPUS" <<'PY'
import os, sys
out = sys.argv[1]
bodies = [b'{"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}}',
          b'{"kind": "Tool", "name": "t", "version": "1.0", "summary": "s", "runtime": "sh"}']
for route in range(96):
    for method, body in ((0, b""), (1, bodies[route % 2])):
        data = bytes([method, route]) + b"calculator/1\0limit=2&wait=true\0" + body
        open(os.path.join(out, "seed-%d-%d" % (route, method)), "wb").write(data)
PY
"$BUILD/fuzz/routes_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 "$ROUTES_CORPUS"
