#!/usr/bin/env python3
"""Cortex example tool: text statistics (argv[1] or stdin JSON in, JSON out)."""
import collections
import json
import sys


def main() -> int:
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    try:
        params = json.loads(raw or "{}")
        text = str(params["text"])
        top = int(params.get("top", 3))
    except (ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"success": False, "error": f"bad parameters: {exc}"}))
        return 2
    words = text.split()
    counts = collections.Counter(w.lower() for w in words)
    print(json.dumps({
        "success": True,
        "words": len(words),
        "lines": len(text.splitlines()) or (1 if text else 0),
        "characters": len(text),
        "top_words": counts.most_common(top),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
