"""Starlette as an upstream behind Envoy: five handlers routed by Starlette's own Router
(`{rest:path}` converters and a catch-all), served by uvicorn, with default settings. Each
handler answers 200 with `x-handler: <name>` and `x-seen-path: <scope["path"]>`, the
percent-decoded path Starlette matched its routes against. See tests/e2e/upstreams.py.

    python tests/e2e/upstreams/starlette_app.py --port 8003
"""
import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def header_safe(path):
    """`path` as a header value: every byte outside printable ASCII percent-encoded."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in path.encode("utf-8", "surrogateescape"))


class Handler:
    """A plain ASGI app, not a function: Starlette's Route then takes every method."""

    def __init__(self, name):
        self.name = name

    async def __call__(self, scope, receive, send):
        raw = scope["raw_path"].decode("latin-1") + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
        headers = {"x-handler": self.name, "x-seen-path": header_safe(scope["path"]), "x-raw-target": header_safe(raw)}
        for key, value in scope["headers"]:
            if key == b"x-routed-vhost":
                headers["x-echo-vhost"] = value.decode("latin-1")
        await PlainTextResponse(f"handler {self.name}\n", headers=headers)(scope, receive, send)


def routes(prefix, name):
    """`prefix` and everything below `prefix/`."""
    return [Route(prefix, Handler(name)), Route(prefix + "/{rest:path}", Handler(name))]


app = Starlette(routes=[
    *routes("/admin", "admin"),
    *routes("/users/@me", "me"),
    *routes("/api/private-scoped", "scoped"),
    *routes("/api", "api"),
    Route("/{rest:path}", Handler("public")),
])


class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)  # exits the process if the port cannot be bound
        print(f"starlette upstream ready on {self.config.port}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)).run()
