"""Flask as an upstream behind Envoy: five handlers routed by Flask's own router (werkzeug's
url map: `<path:rest>` converters and a catch-all), with default settings (merge_slashes,
strict_slashes), served by werkzeug's threaded development server. Each handler answers 200
with `x-handler: <name>` and `x-seen-path: <request.path>`, the percent-decoded path werkzeug
matched its rules against. See tests/e2e/upstreams.py.

    python tests/e2e/upstreams/flask_app.py --port 8004
"""
import argparse
import logging

from flask import Flask, request
from werkzeug.serving import make_server

# Flask asks for a method list; these are the ones a route takes (any other answers 405).
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

app = Flask(__name__)


def header_safe(path):
    """`path` as a header value: every byte outside printable ASCII percent-encoded."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in path.encode("utf-8", "surrogateescape"))


def add_handler(name, *rules):
    def handle(**_rest):
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI", "")
        headers = {"x-handler": name, "x-seen-path": header_safe(request.path), "x-raw-target": header_safe(raw)}
        if "x-routed-vhost" in request.headers:
            headers["x-echo-vhost"] = request.headers["x-routed-vhost"]
        return f"handler {name}\n", 200, {"content-type": "text/plain", **headers}

    for rule in rules:
        app.add_url_rule(rule, endpoint=name, view_func=handle, methods=METHODS)


add_handler("admin", "/admin", "/admin/<path:rest>")
add_handler("me", "/users/@me", "/users/@me/<path:rest>")
add_handler("scoped", "/api/private-scoped", "/api/private-scoped/<path:rest>")
add_handler("api", "/api", "/api/<path:rest>")
add_handler("public", "/", "/<path:rest>")

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log: requests carry tokens
    # What run_simple(..., threaded=True) runs, without its reloader and debugger, so that the
    # ready line comes once the socket listens.
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"flask upstream ready on {port}", flush=True)
    server.serve_forever()
