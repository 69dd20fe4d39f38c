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
# -Werror=thread-safety: this is CI's clang build, so it also checks the annotated locks.
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS=-Werror=thread-safety -DCORTEX_BUILD_FUZZ=ON -DCORTEX_BUILD_TESTS=OFF -DCORTEX_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" --target manifest_fuzzer json_fuzzer protocol_fuzzer inputs_fuzzer http_fuzzer routes_fuzzer
# fuzz NAME MAX_LEN TIMEOUT: runs NAME for SECONDS_TO_RUN on $BUILD/fuzz-corpus-NAME, which the
# caller has filled with seeds.
fuzz() {
  "$BUILD/fuzz/$1_fuzzer" -max_total_time="$SECONDS_TO_RUN" -max_len="$2" -timeout="$3" \
    -rss_limit_mb=2048 "$BUILD/fuzz-corpus-$1"
}
for name in manifest json protocol inputs http routes; do mkdir -p "$BUILD/fuzz-corpus-$name"; done

# Manifests: the parser's test cases and the examples.
cp tests/data/parser/*.yml tests/data/parser/*.md "$BUILD/fuzz-corpus-manifest"/ 2>/dev/null || true
find examples/manifests -name '*.yml' -o -name '*.md' | while read -r f; do
  cp "$f" "$BUILD/fuzz-corpus-manifest/example-$(echo "$f" | tr '/' '_')"
done
fuzz manifest 16384 5

# JSON from outside and tool output: seeds with deep nesting and invalid UTF-8.
cp fuzz/seeds/json/* "$BUILD/fuzz-corpus-json"/
fuzz json 65536 5

# Model output: the streaming protocol parser, seeded with the parser's test transcripts.
cp tests/data/protocol/*.txt "$BUILD/fuzz-corpus-protocol"/
fuzz protocol 16384 5

# Provider streams, workflow and tool input, request headers.
cp fuzz/seeds/inputs/* "$BUILD/fuzz-corpus-inputs"/
fuzz inputs 16384 5

# The HTTP server's reading of raw request bytes and framing of answers.
cp fuzz/seeds/http/* "$BUILD/fuzz-corpus-http"/
fuzz http 8192 5

# The API's route handlers through the router and filters. Seeds: each of the first 96 route
# indexes with GET and POST, a tool call's body, and a manifest posted as JSON.
python3 - "$BUILD/fuzz-corpus-routes" <<'PY'
import os, sys
out = sys.argv[1]
bodies = [b'{"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}}',
          b'{"kind": "Tool", "name": "t", "version": "1.0", "summary": "s", "runtime": "sh"}']
for route in range(96):
    for method, body in ((0, b""), (1, bodies[route % 2])):
        data = bytes([method, route]) + b"calculator/1\0limit=2&wait=true\0" + body
        open(os.path.join(out, "seed-%d-%d" % (route, method)), "wb").write(data)
# MCP messages (POST /mcp), at every route index: the fuzzer picks the route from a byte.
mcp = [b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
       b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"calculator",'
       b'"arguments":{"operation":"add","a":1,"b":2},"_meta":{"progressToken":1}}}',
       b'[{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":'
       b'"cortex://manifest/Tool/calculator"}},{"jsonrpc":"2.0","method":"notifications/cancelled",'
       b'"params":{"requestId":2}}]',
       b'{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"assistant",'
       b'"arguments":{"message":"hi"}}}']
for route in range(256):
    data = bytes([1, route]) + b"\0\0" + mcp[route % len(mcp)]
    open(os.path.join(out, "seed-mcp-%d" % route), "wb").write(data)
PY
fuzz routes 4096 10
