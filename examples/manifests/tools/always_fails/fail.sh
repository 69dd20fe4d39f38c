#!/usr/bin/env bash
# Cortex example tool that always fails: exit code 3 and "success": false.
params="${1:-{\}}"
reason=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("reason","failed on purpose"))' "$params")
echo "always_fails: $reason" >&2
python3 -c 'import json,sys; print(json.dumps({"success": False, "error": sys.argv[1]}))' "$reason"
exit 3
