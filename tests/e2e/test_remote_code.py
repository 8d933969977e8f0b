"""The .wasm fetched by Envoy itself (vm_config.code.remote, with its sha256), from a local HTTP
server, as a deployment without a shared volume would. The right hash loads the filter; a
wrong one never lets a request through unchecked: Envoy refuses the module after its retries,
and with failure_policy FAIL_CLOSED every request gets 503, public routes included, none
reaching the upstream. (Envoy retries a fetch whose hash does not match like a failed one,
then starts the listener without the module: the 503s are FAIL_CLOSED's.)"""
import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from stack import ROOT, WASM, first_hcm, render
from test_filter_in_envoy import assert_ok_from_upstream


class ModuleServer:
    """Serves the .wasm at /oauth_introspection_filter.wasm and counts the fetches."""

    def __init__(self, body):
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.fetches += 1
                self.send_response(200)
                self.send_header("content-type", "application/wasm")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def module_server():
    with open(WASM, "rb") as f:
        server = ModuleServer(f.read())
    yield server
    server.stop()


def remote_code(server, sha256):
    """edit_config: the filter's code as envoy/remote-code.yaml fetches it, from `server`, checked
    against `sha256`, with quick retries."""

    def edit(text, _envoy):
        config = yaml.safe_load(text)
        hcm = first_hcm(config)
        vm = hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]
        with open(os.path.join(ROOT, "envoy", "remote-code.yaml")) as f:
            code = yaml.safe_load(f)
        remote = code["remote"]
        remote["http_uri"]["uri"] = f"http://127.0.0.1:{server.port}/oauth_introspection_filter.wasm"
        remote["sha256"] = sha256
        remote["retry_policy"]["retry_back_off"] = {"base_interval": "0.1s", "max_interval": "0.2s"}
        vm["code"] = code
        cluster = render.issuer_cluster(remote["http_uri"]["cluster"], "127.0.0.1", server.port)
        config["static_resources"]["clusters"] += yaml.safe_load(cluster)
        return yaml.safe_dump(config)

    return edit


def test_the_right_hash_loads_the_filter(envoy_factory, module_server, issuer):
    with open(WASM, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    envoy = envoy_factory("envoy-remote-code", edit_config=remote_code(module_server, digest))
    assert module_server.fetches >= 1
    assert envoy.get("/api/private").status == 401
    assert_ok_from_upstream(envoy.get("/api/private", token=issuer.token("reader-opaque")))
    assert_ok_from_upstream(envoy.get("/public"))


def test_a_wrong_hash_never_lets_a_request_through(envoy_factory, module_server, issuer, api):
    fetches_before = module_server.fetches
    envoy = envoy_factory("envoy-remote-code-wrong-hash", edit_config=remote_code(module_server, "0" * 64))
    assert module_server.fetches - fetches_before >= 2, "fetched, refused, retried"
    hits_before = api.upstream_total()
    token = issuer.token("reader-opaque")
    for path, bearer in [("/api/private", token), ("/api/private", None), ("/public", None), ("/admin", token)]:
        resp = envoy.get(path, token=bearer)
        assert resp.status == 503, (path, resp)
    assert api.upstream_total() == hits_before
    # What Envoy says: the fetch refused (a wrong hash counts as a failed fetch, retried), then
    # the plugin not loaded, and FAIL_CLOSED.
    log = envoy.process.output()
    for line in ("Retry limit exceeded for fetching data from remote data source",
                 "Plugin oauth_introspection failed to load", "Plugin configured to fail closed failed to load"):
        assert line in log, line
