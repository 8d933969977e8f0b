"""A small programmable stand-in for an issuer, for the failures a real one
won't produce on demand: hangs, slow answers, 5xx, garbage, wrong content
types, oversized or truncated bodies, rejected client credentials; and, at
`GET /oauth/v2/keys`, a key set that is down, slow, garbage or huge.

Started by the tests on 127.0.0.1; `POST /_fault/mode/<name>` picks how the
next introspection calls are answered (`with_members` names the mode that adds members to an
active answer); `GET /_fault/stats` counts them. `set_keys` picks how the key set is served.
"""
import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_HANG_SECONDS = 5.0
SLOW_SECONDS = 0.3  # below the 500 ms timeout the tests configure
HUGE_BODY_BYTES = 3 * 1024 * 1024


def _active(now_offset_exp):
    return {"active": True, "sub": "fault-user", "client_id": "fault-client", "aud": ["300000000000000001"],
            "exp": int(time.time()) + now_offset_exp}


MODES = {
    # name: (status, content type, body) or a callable for special behaviour
    "status500": (500, "application/json", b'{"error":"server_error"}'),
    "status502": (502, "text/html", b"<html>bad gateway</html>"),
    "garbage": (200, "application/json", b"\x00\xffnot json at all{"),
    "html": (200, "text/html", b"<html>login</html>"),
    "invalid_client": (401, "application/json", b'{"error":"invalid_client"}'),
    "invalid_client_400": (400, "application/json", b'{"error":"invalid_client"}'),
    "unauthorized_client": (400, "application/json", b'{"error":"unauthorized_client"}'),
    "active_string": (200, "application/json", b'{"active":"true"}'),
    "no_active": (200, "application/json", b'{"sub":"x"}'),
}


def _duplicated(member):
    """An active answer that repeats `member` with a second value: which one counts depends on
    the parser (serde_json keeps the last, others the first)."""
    answer = json.dumps(_active(3600))
    first = {"active": '"active":false', "aud": '"aud":["someone-else"]', "sub": '"sub":"admin"'}[member]
    return answer.replace("{", "{" + first + ",", 1).encode()


def with_members(members):
    """The mode that answers an active token with `members` added (or replaced)."""
    return "with." + base64.urlsafe_b64encode(json.dumps(members).encode()).decode().rstrip("=")


def _with_members(encoded):
    answer = _active(3600)
    answer.update(json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))))
    return json.dumps(answer).encode()


def _huge_active():
    """Valid JSON with active:true, padded past any sane max_response_bytes."""
    answer = _active(3600)
    answer["padding"] = ""
    size = len(json.dumps(answer))
    answer["padding"] = "x" * (HUGE_BODY_BYTES - size)
    return json.dumps(answer).encode()


class FaultServer:
    def __init__(self):
        self.mode = "status500"
        self.calls = 0
        # The key set: how it is served ("ok", "down", "hang", "garbage", "huge") and the document.
        self.keys_mode = "down"
        self.keys_document = b'{"keys": []}'
        self.keys_calls = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def _send(self, status, content_type, body):
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/oauth/v2/keys":
                    with outer.lock:
                        outer.keys_calls += 1
                        mode, document = outer.keys_mode, outer.keys_document
                    if mode == "hang":
                        time.sleep(MAX_HANG_SECONDS)
                        return
                    if mode == "huge":
                        # Valid JSON, far past max_response_bytes.
                        document = b'{"padding": "' + b"x" * HUGE_BODY_BYTES + b'", "keys": []}'
                    status, body = {"ok": (200, document), "down": (503, b'{"error":"unavailable"}'),
                                    "garbage": (200, b"\x00\xff{not json"), "huge": (200, document)}[mode]
                    self._send(status, "application/json", body)
                    return
                with outer.lock:
                    self._send(200, "application/json", json.dumps({"calls": outer.calls, "mode": outer.mode}).encode())

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/_fault/mode/"):
                    with outer.lock:
                        outer.mode = self.path.rsplit("/", 1)[-1]
                        outer.calls = 0
                    self._send(200, "application/json", b"{}")
                    return
                with outer.lock:
                    # The filter's check of its own credentials after a load (token `probe-…`) is
                    # answered like any call but not counted: the tests count the calls requests made.
                    outer.calls += 0 if body.startswith(b"token=probe-") else 1
                    mode = outer.mode
                if mode == "hang":
                    time.sleep(MAX_HANG_SECONDS)
                    self.close_connection = True
                    return
                if mode == "expired":
                    self._send(200, "application/json", json.dumps(_active(-10)).encode())
                    return
                if mode == "valid":
                    self._send(200, "application/json", json.dumps(_active(3600)).encode())
                    return
                if mode == "slow_valid":
                    time.sleep(SLOW_SECONDS)
                    self._send(200, "application/json", json.dumps(_active(3600)).encode())
                    return
                if mode.startswith("with."):
                    self._send(200, "application/json", _with_members(mode.removeprefix("with.")))
                    return
                if mode.startswith("duplicate_"):
                    self._send(200, "application/json", _duplicated(mode.removeprefix("duplicate_")))
                    return
                if mode == "text_plain":
                    self._send(200, "text/plain", json.dumps(_active(3600)).encode())
                    return
                if mode == "huge_body":
                    self._send(200, "application/json", _huge_active())
                    return
                if mode == "hangup":
                    # Reads the request, answers nothing, closes the connection.
                    self.close_connection = True
                    return
                if mode == "truncated":
                    # Promises 4096 bytes, sends the start of a valid answer, hangs up.
                    body = json.dumps(_active(3600)).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "4096")
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                status, content_type, body = MODES[mode]
                self._send(status, content_type, body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            self.calls = 0

    def set_keys(self, mode, document=None):
        """How `GET /oauth/v2/keys` answers from now on; `document` (a dict) for "ok"."""
        with self.lock:
            self.keys_mode = mode
            if document is not None:
                self.keys_document = json.dumps(document).encode()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
