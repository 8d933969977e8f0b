"""The processes the tests and the benchmark run: the real Envoy (from the
project's virtualenv) with the real .wasm, the local oidc-provider issuer,
and the demo API, all on 127.0.0.1 with free ports."""
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "envoy"))

import render  # noqa: E402

ENVOY = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv", "bin", "envoy"))
WASM = os.path.join(ROOT, "target", "oauth_introspection_filter.wasm")
# Everything at trace (the filter's `wasm` component included), except the two
# components where Envoy itself prints credentials (envoyproxy/envoy#9652). Found
# by running the whole suite with everything at trace and scanning the logs:
#   http    debug: conn_manager_impl.cc "request headers complete", every header;
#           trace: http1/codec_impl.cc "completed header: key=Authorization value=Bearer …"
#   router  debug: router.cc "router decoding headers", every header, including the
#           `Authorization: Basic …` of the filter's own introspection call
# Nothing else did: http2 and connection log frames and byte counts, wasm traces
# host calls with integer arguments only, and no component logs a request body,
# so the client_assertion never showed up. test_zz_no_secrets_in_logs checks it.
ENVOY_LOG_ARGS = ["-l", "trace", "--component-log-level", "http:info,router:info"]

# Every secret that passes through a test, so the last test can check logs.
SECRETS = set()
LOG_FILES = []
# Where each issuer writes the client assertions it received (--record-assertions).
ASSERTION_FILES = []
# Every response the tests got through http_request (status line, headers, body), for the same check.
RESPONSES = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name, args, log_dir, env=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        LOG_FILES.append(self.log_path)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_line(self, text, timeout=60):
        def seen():
            if self.proc.poll() is not None and text not in self.output():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            return text in self.output()
        wait_for(seen, timeout, f"{self.name} to print {text!r}")

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


def raw_get(port, path, header_lines=(), host="127.0.0.1"):
    """A GET written byte for byte: the path unvalidated and header lines as given (repeats
    allowed), which http.client refuses; `host=None` sends no Host line. Returns once the head
    and Content-Length body are in, without waiting for Envoy to close the connection."""
    host_lines = [] if host is None else [f"Host: {host}"]
    request = "\r\n".join([f"GET {path} HTTP/1.1", *host_lines, *header_lines]) + "\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Latin-1 keeps each char one byte (\xff stays 0xff); wider chars go out as UTF-8.
        wide = any(ord(c) > 0xff for c in request)
        sock.sendall(request.encode("utf-8" if wide else "latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without a response to {path!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        status_line, *header_block = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in header_block)}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    response = Response(int(status_line.split()[1]), headers, body.decode("utf-8", "replace"))
    RESPONSES.append(f"{port} GET {path!r} {response.status}\n{response.headers}\n{response.body}")
    return response


def http_request(port, path, method="GET", headers=None, body=None, timeout=10, conn=None):
    """One request on a new connection, or on `conn` (kept open: same Envoy worker next time)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        response = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data.decode("utf-8", "replace"))
        RESPONSES.append(f"{port} {method} {path} {response.status}\n{response.headers}\n{response.body}")
        return response
    finally:
        if own:
            conn.close()


# The filter's configuration check without Envoy (src/bin/check-config.rs), built by scripts/setup.sh.
CHECK_CONFIG = os.path.join(ROOT, "target", "release", "check-config")


def check_config(text, env, *args):
    """check-config on `text` (its standard input), with `env` as its whole environment and
    `args` (e.g. "--probe") before the file."""
    return subprocess.run([CHECK_CONFIG, *args, "-"], cwd=ROOT, input=text, capture_output=True, text=True,
                          timeout=60, env=env)


def first_hcm(config):
    """The HTTP connection manager of the first listener of a parsed Envoy config (for edit_config)."""
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def send_together(port, path, requests):
    """One request per (host, token), each on its own connection, released at the same moment;
    a host of None sends no Host header of its own."""
    barrier = threading.Barrier(len(requests))
    results = [None] * len(requests)

    def send(i, host, token):
        headers = {"Authorization": f"Bearer {token}"}
        if host is not None:
            headers["Host"] = host
        barrier.wait(timeout=10)
        try:
            results[i] = http_request(port, path, headers=headers, timeout=15)
        except OSError as err:
            results[i] = err

    threads = [threading.Thread(target=send, args=(i, host, token)) for i, (host, token) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@contextlib.contextmanager
def issuers_delayed(issuers, ms):
    """Every introspection at each of `issuers` answers `ms` late until the block ends."""
    for issuer in issuers:
        issuer.set_delay(ms)
    try:
        yield
    finally:
        for issuer in issuers:
            issuer.set_delay(0)


class Issuer:
    """The local ZITADEL-like issuer (demo/issuer, npm oidc-provider)."""

    def __init__(self, log_dir, name="issuer", instance=1, enforce_audience=False, tls=None, verify=True):
        """`instance` picks the ZITADEL instance it plays (its ids start with instance + 2);
        `enforce_audience` answers active only to an API app whose project is in the token's aud.
        `tls=(cert, key, ca)` serves HTTPS as https://localhost:PORT; `verify=False` lets the tests'
        own requests (stats, tokens) accept a certificate Envoy is meant to refuse."""
        self.port = free_port()
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        self.ca_file = tls[2] if tls else None
        self.ssl_context = None
        if tls:
            self.ssl_context = ssl.create_default_context(cafile=self.ca_file)
            if not verify:
                self.ssl_context.check_hostname = False
                self.ssl_context.verify_mode = ssl.CERT_NONE
        self.state_dir = tempfile.mkdtemp(prefix=f"{name}-state-", dir=log_dir)
        args = ["node", "demo/issuer/issuer.mjs", "--port", str(self.port), "--issuer", self.url, "--state-dir",
                self.state_dir, "--instance", str(instance), "--record-assertions", "--verbose"]
        if enforce_audience:
            args.append("--enforce-audience")
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.name, self.args, self.log_dir, self.restarts = name, args, log_dir, 0
        ASSERTION_FILES.append(os.path.join(self.state_dir, "client-assertions.txt"))
        self._start(self.args)
        with open(os.path.join(self.state_dir, "ids.json")) as f:
            self.ids = json.load(f)

        def key_file(field):
            with open(os.path.join(self.state_dir, self.ids[field])) as f:
                return f.read()
        self.api_key_json = key_file("api_key_file")
        self.other_api_key_json = key_file("other_api_key_file")
        self.api_key_2_json = key_file("api_key_2_file")
        for text in (self.api_key_json, self.other_api_key_json, self.api_key_2_json):
            key = json.loads(text)["key"]
            SECRETS.update(line for line in key.splitlines() if "-----" not in line and len(line) > 20)
        if self.ids.get("basic_api_client_secret"):
            secret = self.ids["basic_api_client_secret"]
            client_id = urllib.parse.quote(self.ids["basic_api_client_id"], safe="")
            # The secret itself and the Basic credentials a log would show.
            SECRETS.add(secret)
            SECRETS.add(base64.b64encode(f"{client_id}:{urllib.parse.quote(secret, safe='')}".encode()).decode())

    def _start(self, args):
        name = self.name if not self.restarts else f"{self.name}-{self.restarts}"
        self.process = Process(name, args, self.log_dir)
        try:
            self.process.wait_for_line("issuer ready")
        except AssertionError:
            self.process.stop()
            raise
        for key in self.signing_keys():
            SECRETS.add(key["d"])

    def restart(self, *flags):
        """Stops the issuer and starts it again on the same port and state, with `flags` (say
        --rotate-signing-key): what it issued stays valid; its counters start again at 0."""
        self.process.stop()
        self.restarts += 1
        self._start([*self.args, *flags])

    def signing_keys(self):
        """The issuer's signing keys as private JWKs, newest (the one that signs) first."""
        with open(os.path.join(self.state_dir, "issuer-signing-keys.json")) as f:
            return json.load(f)

    def _post_form(self, path, form, user, secret):
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        basic = base64.b64encode(f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(secret, safe='')}".encode())
        req.add_header("Authorization", "Basic " + basic.decode())
        with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
            return resp.read()

    def token(self, user, scope="openid", kind="access_token", dpop=False):
        """A fresh token for a service user, through the real grant. `kind` picks which token of the
        response: "access_token", or the key user's "refresh_token" or "id_token" (get-token.mjs adds
        offline_access or openid to the scope). `dpop=True` sends a DPoP proof made with a key that is
        then thrown away: a DPoP-bound token that can only be presented without a valid proof."""
        info = self.ids["service_users"][user]
        if info["grant"] == "jwt-bearer" or kind != "access_token" or dpop:
            env = dict(os.environ, **({"NODE_EXTRA_CA_CERTS": self.ca_file} if self.ca_file else {}))
            out = subprocess.run(["node", "demo/issuer/get-token.mjs", "--state-dir", self.state_dir, "--user", user,
                                  "--scope", scope, "--print", kind, *(["--dpop"] if dpop else [])],
                                 cwd=ROOT, capture_output=True, text=True, timeout=30, env=env)
            if out.returncode != 0:
                raise AssertionError(f"get-token.mjs failed ({out.returncode}): {out.stderr.strip()}")
            token = out.stdout.strip()
        else:
            body = self._post_form("/oauth/v2/token", {"grant_type": "client_credentials", "scope": scope},
                                   info["client_id"], info["client_secret"])
            token = json.loads(body)["access_token"]
        SECRETS.add(token)
        return token

    def revoke(self, user, token):
        info = self.ids["service_users"][user]
        self._post_form("/oauth/v2/revoke", {"token": token, "token_type_hint": "access_token"},
                        info["client_id"], info["client_secret"])

    def stats(self):
        with urllib.request.urlopen(self.url + "/_test/stats", timeout=5, context=self.ssl_context) as resp:
            return json.load(resp)

    def introspections(self):
        return self.stats()["introspect_requests"]

    def key_fetches(self):
        """GETs of /oauth/v2/keys since the issuer (re)started."""
        return self.stats()["keys_requests"]

    def set_delay(self, ms):
        """Every introspection answers `ms` late from now on."""
        req = urllib.request.Request(f"{self.url}/_test/introspect-delay?ms={ms}", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5, context=self.ssl_context) as resp:
            assert json.load(resp) == {"introspect_delay_ms": ms}

    def stop(self):
        self.process.stop()


# The filter hands its counts to Envoy once a second; reading them waits this long first.
COUNTER_FLUSH_WAIT = 1.3


class Envoy:
    """The real Envoy binary with the real .wasm."""

    def __init__(self, log_dir, issuer_port, api_port, name="envoy", concurrency=2, plugin=None,
                 raw_plugin_text=None, env=None, expect_start=True, log_args=ENVOY_LOG_ARGS, edit_config=None,
                 issuer_clusters=None, template_values=None):
        """`edit_config(text, envoy)` may rewrite the rendered YAML (the benchmark adds listeners);
        `issuer_clusters` replaces the one `issuer` cluster (see render.issuer_cluster);
        `template_values` sets more of the template's values (HOST_ENV_KEYS, say)."""
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = os.path.join(log_dir, f"{name}.yaml")
        # The access log (JSON lines with the filter's verdict), scanned for secrets like every log.
        self.access_log = os.path.join(log_dir, f"{name}-access.log")
        LOG_FILES.append(self.access_log)
        text = render.render("local", plugin=plugin, raw_plugin_text=raw_plugin_text, clusters=issuer_clusters,
                             WASM_PATH=WASM, ADMIN_PORT=self.admin_port, LISTEN_PORT=self.port, API_PORT=api_port,
                             ISSUER_PORT=issuer_port, **{"ACCESS_LOG": self.access_log, **(template_values or {})})
        if edit_config:
            text = edit_config(text, self)
        with open(self.config_path, "w") as f:
            f.write(text)
        full_env = dict(os.environ)
        full_env.update(env or {})
        # Access log lines reach the file within 200 ms (Envoy's default: 10 s), for the tests that read it.
        self.process = Process(name, [ENVOY, "-c", self.config_path, "--concurrency", str(concurrency),
                                      "--disable-hot-restart", "--file-flush-interval-msec", "200", *log_args],
                               log_dir, env=full_env)
        if expect_start:
            try:
                wait_for(self._ready, 30, f"{name} to be ready")
            except AssertionError:
                self.process.stop()
                raise

    def _ready(self):
        if self.process.proc.poll() is not None:
            raise AssertionError(f"envoy exited ({self.process.proc.returncode}):\n{self.process.output()[-4000:]}")
        try:
            return http_request(self.admin_port, "/ready", timeout=1).body.strip() == "LIVE"
        except OSError:
            return False

    def wait_exit(self, timeout=30):
        return self.process.proc.wait(timeout=timeout)

    def get(self, path, token=None, headers=None, method="GET", body=None, conn=None, host=None):
        headers = dict(headers or {})
        if host is not None:
            headers["Host"] = host
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return http_request(self.port, path, method=method, headers=headers, body=body, conn=conn)

    def connection(self, timeout=10):
        """A keep-alive connection: Envoy serves all its requests on one worker, so one VM."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def stats(self):
        """Envoy's counters, once the filter's latest counts are in (it hands them over once a
        second, on its tick: see src/filter.rs)."""
        time.sleep(COUNTER_FLUSH_WAIT)
        text = http_request(self.admin_port, "/stats").body
        return {k: int(v) for k, v in re.findall(r"^([\w.:\-]+): (\d+)$", text, re.M)}

    def metric(self, name):
        return self.stats().get(f"wasmcustom.oauth_introspection.{name}", 0)

    def admin(self, path):
        return http_request(self.admin_port, path)

    def access_log_entries(self):
        """The access log's JSON lines so far (Envoy writes a request's when it ends; the file
        is flushed every 200 ms, see the command line)."""
        try:
            with open(self.access_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        self.process.stop()


class Api:
    def __init__(self, log_dir):
        self.port = free_port()
        self.process = Process("api", [sys.executable, "demo/api.py", "--port", str(self.port)], log_dir)
        self.process.wait_for_line("demo api ready")

    def hits(self):
        """Requests seen, by path, by host and path, and by `vhost:` route name."""
        return json.loads(http_request(self.port, "/_upstream/stats").body)

    def upstream_total(self):
        """Every request the API saw (each counted once, by its path)."""
        return sum(n for key, n in self.hits().items() if key.startswith("/"))

    def stop(self):
        self.process.stop()
