#!/usr/bin/env python3
"""A model server for the gateway's tests that answers exactly the bytes it is scripted to.

Each POST takes the next answer of the script (a JSON file, one answer per line):
  {"status": 200, "stall_ms": 0, "chunks": ["<text>", ...], "chunks_b64": [...], "delay_ms": 0}
`chunks` (text) or `chunks_b64` (raw bytes, for invalid UTF-8) are written one by one,
`delay_ms` apart, after `stall_ms`; the connection then closes. With --cert/--key it speaks
HTTPS. It writes its port to --port-file once it listens, and each request's body to
--requests (one line each).
"""
import argparse
import base64
import http.server
import json
import socketserver
import ssl
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--script", required=True)
parser.add_argument("--port-file", required=True)
parser.add_argument("--requests", required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
args = parser.parse_args()

with open(args.script) as f:
    answers = [json.loads(line) for line in f if line.strip()]
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            with open(args.requests, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            answer = answers.pop(0) if answers else {"status": 500, "chunks": ["no more answers"]}
        time.sleep(answer.get("stall_ms", 0) / 1000)
        self.send_response(answer.get("status", 200))
        self.send_header("Content-Type", answer.get("content_type", "text/event-stream"))
        self.end_headers()
        chunks = [c.encode() for c in answer.get("chunks", [])]
        chunks += [base64.b64decode(c) for c in answer.get("chunks_b64", [])]
        try:
            for c in chunks:
                self.wfile.write(c)
                self.wfile.flush()
                time.sleep(answer.get("delay_ms", 0) / 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
if args.cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(args.port_file + ".tmp", args.port_file)
server.serve_forever()
