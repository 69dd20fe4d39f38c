#!/usr/bin/env python3
"""slow_clients.py [CORTEX_BINARY]: does `cortex serve` keep answering while it holds many idle
connections, slow senders and open event streams?

Starts `cortex serve` on a free 127.0.0.1 port with a copy of examples/manifests, then times
GET /healthz and GET /registry/manifest/Tool/calculator (one keep-alive connection, one request
after another) twice:
  1. quiet: nothing else connected (the baseline);
  2. loaded: with IDLE connections that never send a byte, SLOW clients sending a request head one
     byte every second (each reconnects when the server closes it), and STREAMS open
     GET /registry/events streams whose events are read as they come.
Prints p50/p99/max for each, the loaded/quiet p99 ratio, and the goal line (p99 < 20 ms loaded).
Never asserts timing. Env: IDLE (500), SLOW (100), STREAMS (1000), REQUESTS (2000 per route,
at least), SECONDS (15: how long each route is timed under load).
Every process it starts is stopped by PID on exit.
"""
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE = int(os.environ.get("IDLE", "500"))
SLOW = int(os.environ.get("SLOW", "100"))
STREAMS = int(os.environ.get("STREAMS", "1000"))
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
# The loaded phase lasts this long per route, so the slow senders outlive the read timeout (10 s)
# and are cut and come back while requests are timed.
SECONDS = float(os.environ.get("SECONDS", "15"))
ROUTES = ["/healthz", "/registry/manifest/Tool/calculator"]


def die(message):
    print("slow_clients: " + message, file=sys.stderr)
    sys.exit(1)


def start_server(binary, tmp):
    manifests = os.path.join(tmp, "manifests")
    data = os.path.join(tmp, "data")
    shutil.copytree(os.path.join(REPO, "examples", "manifests"), manifests)
    os.makedirs(data)
    log = open(os.path.join(tmp, "cortex.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--manifests", manifests, "--data-dir", data,
                             "--listen", "127.0.0.1:0", "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    serve_json = os.path.join(data, "serve.json")
    for _ in range(300):
        if os.path.exists(serve_json) and os.path.getsize(serve_json) > 0:
            break
        if proc.poll() is not None:
            die("cortex serve exited: " + open(os.path.join(tmp, "cortex.log")).read())
        time.sleep(0.1)
    port = json.load(open(serve_json))["port"]
    for _ in range(300):
        try:
            status, _ = Keepalive(port).get(ROUTES[1])
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    die("cortex does not answer " + ROUTES[1])


class Keepalive:
    """One keep-alive HTTP/1.1 connection, requests one after another."""

    def __init__(self, port):
        self.port = port
        self.connect()

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closing = False

    def get(self, path):
        if self.closing:  # the server said "Connection: close" (keep_alive_max_count reached)
            self.sock.close()
            self.connect()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                self.closing = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            rest += chunk
        self.buf = rest[length:]
        return status, rest[:length]


def measure(port, seconds):
    """Each route for `seconds` (at least REQUESTS requests)."""
    results = {}
    for route in ROUTES:
        conn = Keepalive(port)
        for _ in range(50):  # warm-up
            conn.get(route)
        times = []
        errors = 0
        end = time.monotonic() + seconds
        while len(times) < REQUESTS or time.monotonic() < end:
            start = time.perf_counter()
            try:
                status, _ = conn.get(route)
                if status != 200:
                    errors += 1
            except OSError:
                errors += 1
                conn = Keepalive(port)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        results[route] = {
            "p50": times[len(times) // 2],
            "p99": times[int(len(times) * 0.99) - 1],
            "max": times[-1],
            "errors": errors,
            "n": len(times),
        }
    return results


class Load:
    """Idle connections, slow senders and open event streams, kept up by two threads."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.idle = []
        self.streams_open = 0
        self.stream_bytes = 0
        self.slow_reconnects = 0
        self.sel = selectors.DefaultSelector()

    def open(self):
        for _ in range(IDLE):
            self.idle.append(socket.create_connection(("127.0.0.1", self.port)))
        for _ in range(STREAMS):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(b"GET /registry/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Accept: text/event-stream\r\n\r\n")
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.streams_open += 1
        self.threads = [threading.Thread(target=self.read_streams, daemon=True),
                        threading.Thread(target=self.drip, daemon=True)]
        for t in self.threads:
            t.start()
        time.sleep(2)  # let every stream's head arrive and the slow senders start

    def read_streams(self):
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(key.fileobj)
                    key.fileobj.close()
                    self.streams_open -= 1
                else:
                    self.stream_bytes += len(data)

    def drip(self):
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 4096
        slow = [[socket.create_connection(("127.0.0.1", self.port)), 0] for _ in range(SLOW)]
        while not self.stop.is_set():
            for entry in slow:
                sock, sent = entry
                try:
                    sock.send(head[sent % len(head):sent % len(head) + 1])
                    entry[1] = sent + 1
                except OSError:  # closed by the server's read timeout: come back
                    sock.close()
                    entry[0] = socket.create_connection(("127.0.0.1", self.port))
                    entry[1] = 0
                    self.slow_reconnects += 1
            self.stop.wait(1.0)
        for sock, _ in slow:
            sock.close()

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        for s in self.idle:
            s.close()


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build",
                                                                                   "cortex"))
    if not os.access(binary, os.X_OK):
        die("no cortex binary at %s (build it, or pass its path)" % binary)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE + SLOW + STREAMS + 256
    if soft < need:
        if hard < need:
            die("the open-files limit (%d) is below the %d connections needed" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="cortex-slow-clients-")
    proc = None
    try:
        proc, port = start_server(binary, tmp)
        quiet = measure(port, 0)
        load = Load(port)
        load.open()
        loaded = measure(port, SECONDS)
        streams_left = load.streams_open
        load.close()
        alive = proc.poll() is None

        print("cortex serve on 127.0.0.1:%d; load: %d idle, %d slow senders, %d event streams"
              % (port, IDLE, SLOW, STREAMS))
        print("%-38s %8s %8s %8s %8s %7s" % ("route / phase", "p50 ms", "p99 ms", "max ms",
                                             "errors", "n"))
        for route in ROUTES:
            for name, r in (("quiet", quiet[route]), ("loaded", loaded[route])):
                print("%-38s %8.2f %8.2f %8.2f %8d %7d" % (route + " " + name, r["p50"], r["p99"],
                                                         r["max"], r["errors"], r["n"]))
        for route in ROUTES:
            ratio = loaded[route]["p99"] / max(quiet[route]["p99"], 1e-6)
            print("p99 loaded/quiet %-30s %.2fx" % (route, ratio))
        print("streams still open at the end: %d of %d; slow senders reconnected %d times "
              "(closed by the read timeout); server alive: %s"
              % (streams_left, STREAMS, load.slow_reconnects, alive))
        worst = max(loaded[r]["p99"] for r in ROUTES)
        print("goal: loaded p99 < 20 ms for both routes: %s (worst %.2f ms)"
              % ("met" if worst < 20 else "NOT met", worst))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
