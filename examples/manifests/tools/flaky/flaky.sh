#!/usr/bin/env bash
# Cortex example tool: fails until the attempt given by "succeed_on" (see tool.yml).
set -euo pipefail
params="${1:-$(cat)}"
succeed_on=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1]).get("succeed_on", 3)))' "$params")
key="${CORTEX_IDEMPOTENCY_KEY:-}"
attempt="${key##*/}"
[[ "$attempt" =~ ^[0-9]+$ ]] || attempt=1
if (( attempt < succeed_on )); then
  echo "flaky: attempt $attempt of $succeed_on fails on purpose" >&2
  echo "{\"success\": false, \"error\": \"attempt $attempt fails on purpose\", \"attempt\": $attempt}"
  exit 1
fi
echo "{\"success\": true, \"attempt\": $attempt}"
