"""End-to-end fixtures: the real Envoy with the real .wasm, the local issuer
and the demo API (see stack.py). scripts/test.sh builds the .wasm and installs
everything before pytest runs."""
import os
import tempfile

import pytest

import upstreams
from fault_server import FaultServer
from stack import ROOT, WASM, Api, Envoy, Issuer, render  # noqa: F401  (re-exported for the tests)
from stack import ASSERTION_FILES, ENVOY, LOG_FILES, RESPONSES, SECRETS, free_port  # noqa: F401


@pytest.fixture(scope="session")
def log_dir():
    path = os.environ.get("E2E_LOG_DIR") or tempfile.mkdtemp(prefix="e2e-")
    os.makedirs(path, exist_ok=True)
    assert os.path.exists(WASM), f"{WASM} is missing: run scripts/test.sh (it builds the .wasm)"
    return path


@pytest.fixture(scope="session")
def issuer(log_dir):
    issuer = Issuer(log_dir)
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def api(log_dir):
    api = Api(log_dir)
    yield api
    api.stop()


@pytest.fixture(scope="session")
def envoy_factory(log_dir, issuer, api):
    """Starts extra Envoys with their own plugin configuration; all stopped at the end."""
    started = []

    def start(name, plugin_overrides=None, issuer_port=None, env=None, **kwargs):
        port = issuer_port or issuer.port
        plugin = None
        if kwargs.get("raw_plugin_text") is None:
            plugin = render.plugin_config(issuer.url, f"127.0.0.1:{port}", **(plugin_overrides or {}))
        full_env = {"ZITADEL_API_KEY_JSON": issuer.api_key_json}
        full_env.update(env or {})
        envoy = Envoy(log_dir, port, api.port, name=name, plugin=plugin, env=full_env, **kwargs)
        started.append(envoy)
        return envoy

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture(scope="session")
def envoy(envoy_factory):
    """The demo configuration, two workers."""
    return envoy_factory("envoy-main")


@pytest.fixture(scope="session")
def framework_upstreams(log_dir):
    """Every real framework upstream that can run here (see upstreams.py): (started, missing)."""
    started, missing = upstreams.start_all(log_dir)
    yield started, missing
    for upstream in started.values():
        upstream.stop()


@pytest.fixture(scope="session")
def fault_server():
    server = FaultServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tokens(issuer):
    """One token per service user, minted once for the session."""
    cache = {}

    def get(user):
        if user not in cache:
            cache[user] = issuer.token(user)
        return cache[user]

    return get
