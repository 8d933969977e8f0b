#!/usr/bin/env python3
"""The demo upstream: answers every request with `OK <time>` (as ZITADEL's Go
guide does) and echoes the identity headers the filter forwarded (every
`x-auth-*` header, as `echo-x-auth-*`, underscore spellings such as
`x_auth_subject` too, `x-forwarded-host`, and `x-routed-vhost`, the Envoy
virtual host a test's route tags what it routes with).

    python3 demo/api.py --port 8000

`GET /_upstream/stats` (straight to this port, not through Envoy) tells how
many requests arrived per path, per host and path (`orders.example.com/x`),
and per Envoy virtual host that tagged them (`vhost:<name>`, from the
`x-routed-vhost` header a test's route adds); tests use it to prove that a
denied request never reached the upstream. Binds to 127.0.0.1 unless --host
says otherwise.
"""
import argparse
import collections
import json
import socket
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDENTITY_PREFIX = "x-auth-"

hits = collections.Counter()
hits_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass  # quiet: requests carry tokens in headers

    def _answer(self):
        if self.path == "/_upstream/stats":
            with hits_lock:
                body = json.dumps(dict(hits)).encode()
            self._send(200, body, "application/json", {})
            return
        if self.path == "/_upstream/reset":
            with hits_lock:
                hits.clear()
            self._send(200, b"{}", "application/json", {})
            return
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        host = (self.headers.get("host") or "").lower()
        vhost = self.headers.get("x-routed-vhost")
        with hits_lock:
            hits[self.path] += 1
            hits[host + self.path] += 1
            if vhost:
                hits["vhost:" + vhost] += 1
        # Every value of each identity header, joined with " | ": a forged
        # duplicate next to the filter's value would show.
        names = sorted({name.lower() for name in self.headers.keys()
                        if name.lower().replace("_", "-").startswith(IDENTITY_PREFIX)
                        or name.lower() in ("x-forwarded-host", "x-routed-vhost")})
        echo = {f"echo-{name}": " | ".join(self.headers.get_all(name)) for name in names}
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._send(200, f"OK {now}\n".encode(), "text/plain", echo)

    def _send(self, status, body, content_type, extra):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = Server((args.host, args.port), Handler)
    print(f"demo api ready http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
