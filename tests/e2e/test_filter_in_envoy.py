"""The filter's behaviour in the real Envoy, against the local ZITADEL-like issuer."""
import http.client
import json
import re
import subprocess
import time

import pytest

from conftest import RESPONSES
from stack import COUNTER_FLUSH_WAIT, first_hcm, raw_get

PROJECT_ID = "300000000000000001"
SCOPED_CHALLENGE = 'Bearer error="insufficient_scope", scope="read:messages"'


def assert_ok_from_upstream(resp):
    assert resp.status == 200, resp
    assert re.fullmatch(r"OK \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", resp.body), resp


def assert_invalid_token(resp):
    assert resp.status == 401, resp
    assert resp.header("www-authenticate").startswith('Bearer error="invalid_token"'), resp
    assert resp.header("content-type") == "application/json"
    assert resp.json()["error"] == "invalid_token"


def assert_issuer_unavailable(resp):
    assert resp.status == 503, resp
    assert resp.header("content-type") == "application/json"
    assert resp.json()["error"] == "temporarily_unavailable"
    assert resp.header("www-authenticate") is None


# ---- public routes and missing tokens ----

@pytest.mark.parametrize("path", ["/public", "/api/public", "/api/public/nested?q=1"])
def test_public_routes_pass_without_token(envoy, issuer, path):
    before = issuer.introspections()
    resp = envoy.get(path)
    assert_ok_from_upstream(resp)
    assert issuer.introspections() == before


@pytest.mark.parametrize("path", ["/protected", "/api/private", "/api/private-scoped"])
def test_protected_routes_without_header_get_401(envoy, api, path):
    hits_before = api.hits().get(path, 0)
    resp = envoy.get(path)
    assert resp.status == 401
    assert resp.header("content-type") == "application/json"
    assert resp.header("www-authenticate") == "Bearer"
    assert resp.body == '"auth header missing"'
    assert api.hits().get(path, 0) == hits_before


def test_unmatched_path_is_denied(envoy, tokens, api):
    resp = envoy.get("/admin", token=tokens("reader-opaque"))
    assert resp.status == 403
    assert resp.json()["error"] == "access_denied"
    assert "/admin" not in api.hits()


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Bearer ===", "Token abc"])
def test_malformed_authorization_is_401_without_issuer_call(envoy, issuer, header):
    before = issuer.introspections()
    resp = envoy.get("/api/private", headers={"Authorization": header})
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == "malformed bearer token"
    assert issuer.introspections() == before


# ---- valid tokens ----

@pytest.mark.parametrize("user", ["reader-opaque", "reader-jwt", "key-user"])
def test_valid_token_passes_and_upstream_gets_identity(envoy, issuer, user):
    token = issuer.token(user)
    info = issuer.ids["service_users"][user]
    before = issuer.introspections()
    for path in ["/protected", "/api/private", "/api/private-scoped"]:
        resp = envoy.get(path, token=token)
        assert_ok_from_upstream(resp)
        assert resp.header("echo-x-auth-subject") == info["user_id"]
        assert resp.header("echo-x-auth-client-id") == info["client_id"]
        assert resp.header("echo-x-auth-roles") == "read:messages"
    # Three requests, one introspection: the rest were cache hits.
    assert issuer.introspections() == before + 1


def test_jwt_access_token_is_really_a_jwt(tokens):
    assert tokens("reader-jwt").count(".") == 2
    assert tokens("reader-opaque").count(".") != 2


def test_second_request_makes_no_second_introspection_call(envoy, issuer):
    token = issuer.token("reader-opaque")
    hits_before, misses_before = envoy.metric("cache.hits"), envoy.metric("cache.misses")
    before = issuer.introspections()
    assert_ok_from_upstream(envoy.get("/api/private", token=token))
    assert issuer.introspections() == before + 1
    for _ in range(5):
        assert_ok_from_upstream(envoy.get("/api/private", token=token))
    assert issuer.introspections() == before + 1
    assert envoy.metric("cache.misses") == misses_before + 1
    assert envoy.metric("cache.hits") == hits_before + 5


def test_client_supplied_identity_headers_are_replaced(envoy, tokens):
    forged = {"x-auth-subject": "admin", "x-auth-roles": "read:messages,admin", "x-auth-client-id": "forged"}
    resp = envoy.get("/api/private", token=tokens("plain-opaque"), headers=forged)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-subject") != "admin"
    assert resp.header("echo-x-auth-client-id") == "plain-opaque"
    # plain-opaque has no roles, so no roles header reaches upstream at all.
    assert resp.header("echo-x-auth-roles") is None
    # On a public route too: the upstream never sees a forged identity.
    resp = envoy.get("/public", headers=forged)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-subject") is None


# ---- roles ----

def test_token_without_role_gets_403_insufficient_scope(envoy, tokens, api):
    hits_before = api.hits().get("/api/private-scoped", 0)
    resp = envoy.get("/api/private-scoped", token=tokens("plain-opaque"))
    assert resp.status == 403
    assert resp.header("www-authenticate") == SCOPED_CHALLENGE
    assert resp.json()["error"] == "insufficient_scope"
    assert api.hits().get("/api/private-scoped", 0) == hits_before


def test_cached_verdict_does_not_open_the_scoped_route(envoy, issuer):
    token = issuer.token("plain-opaque")
    before = issuer.introspections()
    assert_ok_from_upstream(envoy.get("/api/private", token=token))
    resp = envoy.get("/api/private-scoped", token=token)
    assert resp.status == 403
    assert resp.header("www-authenticate") == SCOPED_CHALLENGE
    # The 403 came from the cached verdict: no second call, roles checked anyway.
    assert issuer.introspections() == before + 1


# ---- invalid tokens ----

def test_unknown_token_is_401(envoy, issuer, api):
    before = issuer.introspections()
    resp = envoy.get("/api/private", token="not-a-real-token-" + str(time.time_ns()))
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == "token is not active"
    assert issuer.introspections() == before + 1


def test_wrong_audience_token_is_401(envoy, issuer):
    # The issuer says active (it does not enforce audience); the filter checks aud itself.
    resp = envoy.get("/api/private-scoped", token=issuer.token("other-project"))
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == "token is not meant for this API"


def test_revoked_token_is_401(envoy, issuer):
    token = issuer.token("reader-opaque")
    issuer.revoke("reader-opaque", token)
    assert_invalid_token(envoy.get("/api/private", token=token))


def test_revoked_token_is_refused_once_its_cache_entry_ends(envoy_factory, issuer):
    short = envoy_factory("envoy-short-ttl", {"cache": {"slots": 64, "max_ttl_seconds": 2}})
    token = issuer.token("reader-jwt")
    assert_ok_from_upstream(short.get("/api/private", token=token))
    issuer.revoke("reader-jwt", token)
    before = issuer.introspections()
    # Still cached: the documented cost of caching is up to max_ttl_seconds of staleness.
    assert_ok_from_upstream(short.get("/api/private", token=token))
    assert issuer.introspections() == before
    time.sleep(2.2)
    resp = short.get("/api/private", token=token)
    assert_invalid_token(resp)
    assert issuer.introspections() == before + 1


def test_cached_token_past_its_exp_is_refused(envoy, issuer):
    token = issuer.token("short-lived")  # exp = now + 3 s; the cache max is 300 s
    assert_ok_from_upstream(envoy.get("/api/private", token=token))
    before = issuer.introspections()
    assert_ok_from_upstream(envoy.get("/api/private", token=token))
    assert issuer.introspections() == before
    time.sleep(3.5)
    resp = envoy.get("/api/private", token=token)
    assert_invalid_token(resp)
    # The entry ended at exp, so the filter asked again rather than trust it.
    assert issuer.introspections() == before + 1


# ---- the shared cache ----

def test_two_workers_share_one_cache(envoy, issuer):
    token = issuer.token("reader-opaque")
    prefix = f"listener.127.0.0.1_{envoy.port}."

    def per_worker():
        stats = envoy.stats()
        return [stats.get(f"{prefix}worker_{i}.downstream_cx_total", 0) for i in (0, 1)]

    workers_before = per_worker()
    before = issuer.introspections()
    for _ in range(24):  # a new connection each time: the kernel spreads them over both workers
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        conn.request("GET", "/api/private", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200
    workers_after = per_worker()
    assert all(after > before_ for after, before_ in zip(workers_after, workers_before)), (
        workers_before, workers_after)
    assert issuer.introspections() == before + 1


# ---- HTTP/2 ----

def curl_h2(envoy, path, token):
    """One request over cleartext HTTP/2 (prior knowledge), as a mesh sidecar would send it."""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", f"Authorization: Bearer {token}",
                          "-w", "\n%{http_version} %{http_code}", f"http://127.0.0.1:{envoy.port}{path}"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    RESPONSES.append(out)
    body, _, version_and_status = out.rpartition("\n")
    return version_and_status, body


def test_http2_requests_get_the_same_verdicts(envoy, tokens, api):
    # Also puts Envoy's http2 codec (logging at trace) under the log check at the end.
    hits_before = api.hits().get("/api/private-scoped", 0)
    status, body = curl_h2(envoy, "/api/private-scoped", tokens("reader-jwt"))
    assert status == "2 200"
    assert re.fullmatch(r"OK \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", body), body
    status, body = curl_h2(envoy, "/api/private-scoped", tokens("plain-opaque"))
    assert (status, json.loads(body)["error"]) == ("2 403", "insufficient_scope")
    status, body = curl_h2(envoy, "/api/private-scoped", "not-a-real-token-h2")
    assert (status, json.loads(body)["error"]) == ("2 401", "invalid_token")
    assert api.hits().get("/api/private-scoped", 0) == hits_before + 1


# ---- client_secret_basic ----

def test_client_secret_basic_authenticates_introspection(envoy_factory, issuer):
    basic = envoy_factory(
        "envoy-basic",
        {"client_auth": {"method": "client_secret_basic", "client_id": issuer.ids["basic_api_client_id"],
                         "client_secret_env": "INTROSPECTION_CLIENT_SECRET"}},
        env={"INTROSPECTION_CLIENT_SECRET": issuer.ids["basic_api_client_secret"]},
    )
    before = issuer.introspections()
    assert_ok_from_upstream(basic.get("/api/private-scoped", token=issuer.token("reader-opaque")))
    assert_invalid_token(basic.get("/api/private", token="unknown-token"))
    assert issuer.introspections() == before + 2
    assert basic.metric("assertion.signatures") == 0


# ---- metrics ----

def test_metrics_are_in_envoy_stats(envoy, issuer):
    stats = envoy.stats()
    names = [
        "allowed", "denied.missing_token", "denied.malformed_token", "denied.invalid_token",
        "denied.insufficient_role", "denied.no_rule", "denied.issuer_unavailable", "cache.hits", "cache.misses",
        "introspection.calls", "introspection.issuer_errors", "assertion.signatures", "denied.bad_path",
        "denied.overloaded", "introspection.coalesced",
    ]
    for name in names:
        assert f"wasmcustom.oauth_introspection.{name}" in stats, name
    assert stats["wasmcustom.oauth_introspection.allowed"] > 0
    assert stats["wasmcustom.oauth_introspection.denied.missing_token"] > 0
    # One signature per VM that introspected, reused for every call after it.
    calls = stats["wasmcustom.oauth_introspection.introspection.calls"]
    signatures = stats["wasmcustom.oauth_introspection.assertion.signatures"]
    assert 1 <= signatures <= 2 < calls, (signatures, calls)
    time.sleep(COUNTER_FLUSH_WAIT)  # the filter hands its counts over once a second
    prometheus = envoy.admin("/stats/prometheus").body
    assert "oauth_introspection_cache_hits" in prometheus


# ---- hostile headers ----

def test_non_utf8_header_is_refused_and_the_vm_survives(envoy_factory, issuer, api):
    single = envoy_factory("envoy-one-worker", concurrency=1)
    for header in ["Bearer \xff\xfe", "\xffearer abc"]:
        resp = single.get("/api/private", headers={"Authorization": header})
        assert_invalid_token(resp)
    # A non-UTF-8 value in an unrelated header on a public route must not hurt either.
    assert_ok_from_upstream(single.get("/public", headers={"X-Note": "caf\xe9"}))
    # Same worker, same VM: still answering normally.
    assert_ok_from_upstream(single.get("/public"))
    assert_ok_from_upstream(single.get("/api/private", token=issuer.token("reader-opaque")))
    assert "panicked" not in single.process.output()


@pytest.mark.parametrize("header", ["x_auth_subject", "x_auth_roles", "X_Auth_Client_Id"])
def test_identity_header_spelled_with_underscores_is_rejected(envoy, api, header):
    # CGI-style upstreams read x_auth_roles as x-auth-roles: Envoy refuses such headers outright.
    hits_before = api.hits().get("/public", 0)
    resp = envoy.get("/public", headers={header: "admin"})
    assert resp.status == 400, resp
    assert api.hits().get("/public", 0) == hits_before


def allow_underscores(text, _envoy):
    import yaml

    config = yaml.safe_load(text)
    hcm = first_hcm(config)
    hcm.pop("common_http_protocol_options", None)  # Envoy's default: ALLOW
    return yaml.safe_dump(config)


def test_identity_header_spelled_with_underscores_is_removed_where_envoy_allows_it(envoy_factory, tokens):
    """Envoy's default lets `x_auth_roles` through, and CGI-style upstreams read it as
    `x-auth-roles`: the filter removes underscore spellings of every forwarded header itself."""
    lenient = envoy_factory("envoy-underscores-allowed", edit_config=allow_underscores)
    forged = ["x_auth_subject: admin", "X_Auth_Roles: read:messages,admin", "x_auth-client-id: forged"]
    for path, token in (("/public", None), ("/api/private", tokens("plain-opaque"))):
        lines = forged + ([f"Authorization: Bearer {token}"] if token else [])
        resp = raw_get(lenient.port, path, lines)
        assert_ok_from_upstream(resp)
        echoed = {k: v for k, v in resp.headers.items() if k.startswith("echo-")}
        assert not any("admin" in v or "forged" in v for v in echoed.values()), echoed
        assert not any("_" in k for k in echoed), echoed
    # An underscore name that is no forwarded header's spelling is left alone.
    resp = raw_get(lenient.port, "/public", ["x_auth_unrelated: kept"])
    assert resp.headers.get("echo-x_auth_unrelated") == "kept", resp.headers
