"""When the issuer is down, slow or talks nonsense, the filter answers 503, never 200."""
import re
import time

import pytest

from conftest import Issuer, free_port
from fault_server import SLOW_SECONDS
from stack import wait_for
from test_filter_in_envoy import assert_invalid_token, assert_issuer_unavailable, assert_ok_from_upstream

UNAVAILABLE = {"error": "temporarily_unavailable", "error_description": "the token could not be verified, try again later"}

# Fault mode: what the filter logs about it, and at which level. Rejected client credentials
# (401, or 400 invalid_client/unauthorized_client) are the operator's problem, logged at error
# level; the caller gets 503, not 401: its token is not blamed. The rest is the issuer's (warning).
FAULTS = {
    "status500": ("warning", "the issuer answered HTTP 500"),
    "status502": ("warning", "the issuer answered HTTP 502"),
    "garbage": ("warning", "the issuer's answer is not a JSON object"),
    "html": ("warning", "the issuer's answer is not application/json"),
    "text_plain": ("warning", "the issuer's answer is not application/json"),
    "huge_body": ("warning", "the issuer's answer is larger than allowed"),
    # Envoy 1.40 passes an empty 503 on; earlier ones their own "connection termination" reply.
    "hangup": ("warning", re.compile(
        r"(the issuer answered HTTP 503|could not connect to the issuer \(reset reason: connection termination\))")),
    "invalid_client": ("error", "the issuer rejected the filter's client credentials (HTTP 401)"),
    "invalid_client_400": ("error", "the issuer rejected the filter's client credentials (HTTP 400)"),
    "unauthorized_client": ("error", "the issuer rejected the filter's client credentials (HTTP 400)"),
    "active_string": ("warning", "the issuer's answer has an invalid `active` member"),
    "no_active": ("warning", "the issuer's answer has an invalid `active` member"),
    "hang": ("warning", "the issuer answered HTTP 504"),
    # An answer that could be read two ways is no answer (issue 8): a repeated member at any place.
    "duplicate_active": ("warning", "the issuer's answer repeats a member name"),
    "duplicate_aud": ("warning", "the issuer's answer repeats a member name"),
    "duplicate_sub": ("warning", "the issuer's answer repeats a member name"),
}


@pytest.fixture(scope="module")
def faulty(envoy_factory, fault_server):
    """An Envoy whose issuer cluster points at the fault server, with a 500 ms timeout."""
    introspection = {"cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}",
                     "path": "/oauth/v2/introspect", "timeout_ms": 500}
    return envoy_factory("envoy-faulty", {"introspection": introspection}, issuer_port=fault_server.port)


def wait_for_log(envoy, start, level, message):
    pattern = message.pattern if isinstance(message, re.Pattern) else re.escape(message)
    line = re.compile(rf"\[{level}\]\[wasm\][^\n]*token introspection failed \(issuer default\): {pattern}")
    wait_for(lambda: line.search(envoy.process.output()[start:]), 5, f"[{level}] {message!r} in {envoy.process.name}")


def assert_vm_survived(envoy, fault_server, conn, name):
    """A fresh token on the same keep-alive connection, so the same worker and VM, passes:
    a VM that panicked would answer 503 to everything from now on (FAIL_CLOSED)."""
    assert conn.sock is not None, "Envoy closed the connection: the next request could reach another worker"
    fault_server.set_mode("valid")
    resp = envoy.get("/api/private", token=f"fresh-token-after-{name}", conn=conn)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-subject") == "fault-user"
    assert fault_server.calls == 1


@pytest.mark.parametrize("mode", list(FAULTS))
def test_issuer_fault_is_503(faulty, fault_server, api, mode):
    level, message = FAULTS[mode]
    conn = faulty.connection()
    fault_server.set_mode(mode)
    hits_before = api.hits().get("/api/private", 0)
    errors_before = faulty.metric("introspection.issuer_errors")
    log_start = len(faulty.process.output())
    resp = faulty.get("/api/private", token=f"token-for-{mode}", conn=conn)
    assert_issuer_unavailable(resp)
    assert resp.json() == UNAVAILABLE
    assert resp.header("cache-control") == "no-store"
    assert fault_server.calls == 1
    assert faulty.metric("introspection.issuer_errors") == errors_before + 1
    assert api.hits().get("/api/private", 0) == hits_before
    wait_for_log(faulty, log_start, level, message)
    assert_vm_survived(faulty, fault_server, conn, mode)
    conn.close()


def test_truncated_answer_is_503_and_the_vm_survives(envoy_factory, fault_server, api):
    # Content-Length promises more than arrives, then the issuer hangs up: Envoy resets the call
    # after its headers came in and reports it with no response headers at all. On its own Envoy
    # with one worker, so that a VM this kills takes no other test down with it.
    envoy = envoy_factory("envoy-truncated", {"introspection": {
        "cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}", "path": "/oauth/v2/introspect",
        "timeout_ms": 500}}, issuer_port=fault_server.port, concurrency=1)
    conn = envoy.connection(timeout=3)
    fault_server.set_mode("truncated")
    hits_before = api.hits().get("/api/private", 0)
    log_start = len(envoy.process.output())
    try:
        resp = envoy.get("/api/private", token="token-for-truncated", conn=conn)
        assert_issuer_unavailable(resp)
        assert resp.json() == UNAVAILABLE
        assert fault_server.calls == 1
        assert api.hits().get("/api/private", 0) == hits_before
        wait_for_log(envoy, log_start, "warning", "")  # any issuer error, as long as it is one
        assert_vm_survived(envoy, fault_server, conn, "truncated")
    finally:
        conn.close()
    assert "panicked" not in envoy.process.output()


def test_answer_just_under_the_timeout_passes(faulty, fault_server, api):
    conn = faulty.connection()
    fault_server.set_mode("slow_valid")
    hits_before = api.hits().get("/api/private", 0)
    errors_before = faulty.metric("introspection.issuer_errors")
    started = time.monotonic()
    resp = faulty.get("/api/private", token="token-slow-answer", conn=conn)
    assert time.monotonic() - started >= SLOW_SECONDS  # the verdict really waited for the slow answer
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-subject") == "fault-user"
    assert resp.header("echo-x-auth-client-id") == "fault-client"
    assert fault_server.calls == 1
    assert faulty.metric("introspection.issuer_errors") == errors_before
    assert api.hits().get("/api/private", 0) == hits_before + 1
    assert_vm_survived(faulty, fault_server, conn, "slow_valid")
    conn.close()


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
