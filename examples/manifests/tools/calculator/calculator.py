#!/usr/bin/env python3
"""Cortex example tool: arithmetic on two numbers.

Contract: parameters arrive as a JSON object in argv[1] (or on stdin); one JSON object is
printed on stdout; a non-zero exit code or "success": false means failure.
"""
import json
import sys


def main() -> int:
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    try:
        params = json.loads(raw or "{}")
        op, a, b = params["operation"], float(params["a"]), float(params["b"])
    except (ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"success": False, "error": f"bad parameters: {exc}"}))
        return 2
    if op == "divide" and b == 0:
        print(json.dumps({"success": False, "error": "division by zero"}))
        return 1
    result = {"add": a + b, "subtract": a - b, "multiply": a * b,
              "divide": a / b if b else None}.get(op)
    if result is None:
        print(json.dumps({"success": False, "error": f"unknown operation {op!r}"}))
        return 2
    if result == int(result):
        result = int(result)
    print(json.dumps({"success": True, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
