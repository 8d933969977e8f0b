"""Runs last (file order): no token, client assertion, client secret or key fragment in any
log of the session (every Envoy's, the issuers', the API's), nor in any response the tests got.

Envoy runs at trace level for every component except `http` and `router`, where Envoy
itself prints request headers, credentials included (envoyproxy/envoy#9652; the evidence
is in stack.py beside ENVOY_LOG_ARGS); the README tells operators to keep those two at info.
"""
import os
import re

from conftest import ASSERTION_FILES, LOG_FILES, RESPONSES, SECRETS

JWS = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{16,}")


def client_assertions():
    """The assertions the filter signed, as the issuers received them (--record-assertions)."""
    found = set()
    for path in ASSERTION_FILES:
        if os.path.exists(path):
            with open(path) as f:
                found.update(f.read().split())
    return found


def all_secrets():
    assertions = client_assertions()
    assert assertions, "no issuer recorded a client assertion: the check would not cover them"
    assert all(JWS.fullmatch(a) for a in assertions)
    assert len(SECRETS) > 5  # the key's lines, the basic secret, and the tokens of this session
    return SECRETS | assertions


def assert_clean(name, text, secrets):
    leaked = [s[:6] + "…" for s in secrets if s in text]
    assert not leaked, f"{name} contains secrets starting with {leaked}"
    assert not JWS.search(text), f"{name} contains a JWT (token or client assertion)"
    assert "PRIVATE KEY" not in text, name


def test_logs_hold_no_secrets(envoy, issuer, api, tokens):
    tokens("reader-opaque")
    tokens("reader-jwt")
    secrets = all_secrets()
    names = {os.path.basename(path) for path in LOG_FILES}
    assert {"envoy-main.log", "envoy-main-access.log", "envoy-basic.log", "issuer.log", "api.log"} <= names, names
    wasm_lines = wasm_trace_lines = http2_trace_lines = 0
    for path in LOG_FILES:
        if path.endswith("-access.log") and not os.path.exists(path):
            continue  # an Envoy that never started writes no access log
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        wasm_lines += text.count("wasm log oauth_introspection")
        wasm_trace_lines += text.count("][trace][wasm]")
        http2_trace_lines += text.count("][trace][http2]")
        assert_clean(path, text, secrets)
    # The check saw the filter's own lines, and Envoy really logged at trace level,
    # the HTTP/2 codec included (test_http2_requests_get_the_same_verdicts).
    assert wasm_lines > 0
    assert wasm_trace_lines > 0
    assert http2_trace_lines > 0


def test_responses_hold_no_secrets(envoy):
    secrets = all_secrets()
    assert len(RESPONSES) > 100
    for response in RESPONSES:
        assert_clean(response.split("\n", 1)[0], response, secrets)
