"""When the issuer is down, slow or talks nonsense, the filter answers 503, never 200."""
import pytest

from conftest import Issuer, free_port
from test_filter_in_envoy import assert_invalid_token, assert_issuer_unavailable, assert_ok_from_upstream


@pytest.fixture(scope="module")
def faulty(envoy_factory, fault_server):
    """An Envoy whose issuer cluster points at the fault server, with a 500 ms timeout."""
    introspection = {"cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}",
                     "path": "/oauth/v2/introspect", "timeout_ms": 500}
    return envoy_factory("envoy-faulty", {"introspection": introspection}, issuer_port=fault_server.port)


@pytest.mark.parametrize("mode", [
    "status500", "status502", "garbage", "html", "invalid_client", "unauthorized_client", "active_string",
    "no_active", "hang",
])
def test_issuer_fault_is_503(faulty, fault_server, api, mode):
    fault_server.set_mode(mode)
    hits_before = api.hits().get("/api/private", 0)
    errors_before = faulty.metric("introspection.issuer_errors")
    resp = faulty.get("/api/private", token=f"token-for-{mode}")
    assert_issuer_unavailable(resp)
    assert fault_server.calls == 1
    assert faulty.metric("introspection.issuer_errors") == errors_before + 1
    assert api.hits().get("/api/private", 0) == hits_before


def test_rejected_client_credentials_are_logged_loudly(faulty, fault_server):
    fault_server.set_mode("invalid_client")
    assert_issuer_unavailable(faulty.get("/api/private", token="token-loud"))
    log = faulty.process.output()
    assert "rejected the filter's client credentials (HTTP 401)" in log
    assert "[error][wasm]" in log


def test_issuer_answer_with_past_exp_is_401(faulty, fault_server):
    fault_server.set_mode("expired")
    resp = faulty.get("/api/private", token="token-expired")
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == "token has expired"


def test_issuer_failures_are_not_cached(faulty, fault_server):
    fault_server.set_mode("status500")
    assert_issuer_unavailable(faulty.get("/api/private", token="token-retry"))
    fault_server.set_mode("valid")
    assert_ok_from_upstream(faulty.get("/api/private", token="token-retry"))
    assert fault_server.calls == 1


def test_unreachable_issuer_is_503(envoy_factory):
    closed_port = free_port()  # nothing listens here
    envoy = envoy_factory("envoy-no-issuer", issuer_port=closed_port)
    assert_issuer_unavailable(envoy.get("/api/private", token="any-token"))
    assert envoy.metric("introspection.issuer_errors") == 1


def test_issuer_stopped_is_503(envoy_factory, log_dir):
    issuer = Issuer(log_dir, name="issuer-to-stop")
    try:
        envoy = envoy_factory("envoy-stopped-issuer", issuer_port=issuer.port,
                              env={"ZITADEL_API_KEY_JSON": issuer.api_key_json},
                              plugin_overrides={"issuer": issuer.url})
        cached = issuer.token("reader-opaque")
        fresh = issuer.token("reader-jwt")
        assert_ok_from_upstream(envoy.get("/api/private", token=cached))
    finally:
        issuer.stop()
    assert_issuer_unavailable(envoy.get("/api/private", token=fresh))
    # A verdict cached before the outage still holds until its entry ends.
    assert_ok_from_upstream(envoy.get("/api/private", token=cached))


@pytest.mark.parametrize("mode, expected", [("hang", 503), ("status500", 503), ("valid", 200)])
def test_request_body_waits_for_the_verdict(faulty, fault_server, api, mode, expected):
    # A body arriving while the introspection call is pending must not push the request upstream.
    fault_server.set_mode(mode)
    path = f"/api/private/upload-{mode}"
    resp = faulty.get(path, token=f"token-body-{mode}", method="POST",
                      headers={"Content-Type": "application/json"}, body=b'{"data": "' + b"x" * 100_000 + b'"}')
    assert resp.status == expected, resp
    assert api.hits().get(path, 0) == (1 if expected == 200 else 0)
