#!/usr/bin/env python3
"""Cortex example relic: a tiny persistent key-value store over HTTP (standard library only).

GET /health -> {"status": "ok"}; POST /set {key, value}; GET /get/<key>; DELETE /delete/<key>;
GET /list. Data is kept in kv_store.json in $CORTEX_RELIC_DATA (the folder Cortex gives each
relic it deploys), else in the working folder. The port: --port, else $PORT, else 8004.
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
DATA_FILE = os.path.join(os.environ.get("CORTEX_RELIC_DATA", "."), "kv_store.json")


def load():
    try:
        with open(DATA_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save(data):
    tmp = DATA_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, DATA_FILE)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        with LOCK:
            data = load()
        if self.path == "/list":
            return self.reply(200, {"success": True, "keys": sorted(data)})
        if self.path.startswith("/get/"):
            key = self.path[len("/get/"):]
            if key in data:
                return self.reply(200, {"success": True, "key": key, "value": data[key]})
            return self.reply(404, {"success": False, "error": f"no key {key!r}"})
        return self.reply(404, {"success": False, "error": "not found"})

    def do_POST(self):
        if self.path != "/set":
            return self.reply(404, {"success": False, "error": "not found"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            key, value = str(body["key"]), body["value"]
        except (ValueError, KeyError, TypeError) as exc:
            return self.reply(400, {"success": False, "error": f"bad body: {exc}"})
        with LOCK:
            data = load()
            data[key] = value
            save(data)
        return self.reply(200, {"success": True, "key": key, "value": value})

    def do_DELETE(self):
        if not self.path.startswith("/delete/"):
            return self.reply(404, {"success": False, "error": "not found"})
        key = self.path[len("/delete/"):]
        with LOCK:
            data = load()
            existed = data.pop(key, None) is not None
            save(data)
        return self.reply(200 if existed else 404, {"success": existed, "key": key})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8004")))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"kv_store listening on {args.host}:{args.port}, data in {DATA_FILE}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
