#!/usr/bin/env bash
# Cortex example tool in bash: parameters as JSON in $1, one JSON object on stdout.
set -euo pipefail
params="${1:-$(cat)}"
# Extract "message" with python3's json module: no jq needed, and no string surgery on JSON.
message=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("message",""))' "$params")
python3 -c 'import json,sys; print(json.dumps({"success": True, "message": sys.argv[1]}))' "$message"
