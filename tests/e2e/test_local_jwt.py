"""JWT access tokens verified locally (`jwt.mode: local`): the local issuer's JWTs pass with no
introspection call; claims, signatures and headers are checked as a serious verifier does; the
keys follow a rotation at the issuer; and a key set that is down, slow, garbage or huge never
turns into a 401 or an allow. Counts come from both sides: the issuer's (introspections, GETs of
/oauth/v2/keys) and Envoy's (jwks_fetches, jwt.verifications)."""
import time

import pytest

import jwt_tools
from stack import Issuer
from test_filter_in_envoy import assert_invalid_token, assert_issuer_unavailable, assert_ok_from_upstream

LOCAL = {"mode": "local", "jwks_min_refresh_seconds": 1}
UNKNOWN_KEY = "token is signed with a key its issuer does not publish"
BAD_SIGNATURE = "token signature does not verify"
BAD_HEADER = "token is not a signed access token of a supported algorithm"
BAD_CLAIMS = "token claims are malformed or incomplete"


def eventually(predicate, timeout, what):
    """Polls `predicate` every quarter second (each poll may send a request) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def refused(envoy, api, token, description, path="/api/private"):
    hits = api.upstream_total()
    resp = envoy.get(path, token=token)
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == description, resp
    assert api.upstream_total() == hits, "the upstream saw a refused request"


@pytest.fixture(scope="module")
def local(envoy_factory):
    return envoy_factory("envoy-jwt-local", {"jwt": LOCAL})


def test_the_issuers_jwts_pass_with_no_introspection_call(local, issuer):
    token = issuer.token("reader-jwt")
    info = issuer.ids["service_users"]["reader-jwt"]
    before = issuer.introspections()
    for path in ["/protected", "/api/private", "/api/private-scoped", "/api/private"]:
        resp = local.get(path, token=token)
        assert_ok_from_upstream(resp)
        assert resp.header("echo-x-auth-subject") == info["user_id"]
        assert resp.header("echo-x-auth-client-id") == info["client_id"]
        assert resp.header("echo-x-auth-roles") == "read:messages"
    assert issuer.introspections() == before
    # One verification (the rest were cache hits), one fetch of the keys for the whole Envoy.
    assert local.metric("jwt.verifications") == 1
    assert local.metric("issuer.default.jwks_fetches") == 1
    assert local.metric("issuer.default.calls") == 0


def test_a_jwt_for_another_project_is_refused_without_a_call(local, issuer, api):
    before = issuer.introspections()
    refused(local, api, issuer.token("other-jwt"), "token is not meant for this API")
    assert issuer.introspections() == before


def test_opaque_tokens_of_the_same_issuer_are_still_introspected(local, issuer):
    before = issuer.introspections()
    assert_ok_from_upstream(local.get("/api/private", token=issuer.token("reader-opaque")))
    assert issuer.introspections() == before + 1


def test_an_id_token_is_not_an_access_token(local, issuer, api):
    before = issuer.introspections()
    # The key user's ID token: signed by the same key, but without client_id and jti.
    refused(local, api, issuer.token("key-user", kind="id_token"), BAD_CLAIMS)
    assert issuer.introspections() == before


def test_a_revoked_jwt_passes_until_it_expires(local, envoy, issuer):
    """The trade-off of the local mode (docs/configuration.md): revocation is the issuer's to
    know, and the local mode does not ask it. The introspecting Envoy refuses the same token."""
    token = issuer.token("reader-jwt")
    issuer.revoke("reader-jwt", token)
    assert_ok_from_upstream(local.get("/api/private", token=token))
    assert_invalid_token(envoy.get("/api/private", token=token))


def signed_by_the_issuer(issuer, **changes):
    jwk = issuer.signing_keys()[0]
    claims = jwt_tools.access_claims(issuer.url, issuer.ids["project_id"], **changes)
    return jwt_tools.sign(jwt_tools.private_key(jwk), {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}, claims)


# Times are offsets from when the token is made (the module is collected minutes before it runs).
@pytest.mark.parametrize("changes, description", [
    ({}, None),
    ({"exp": -1}, "token has expired"),
    ({"nbf": +120}, "token is not yet valid"),
    ({"jti": None}, BAD_CLAIMS),
    ({"client_id": None}, BAD_CLAIMS),
    ({"exp": None}, BAD_CLAIMS),
    ({"exp": "tomorrow"}, BAD_CLAIMS),
    ({"aud": ["300000000000000002"]}, "token is not meant for this API"),
    ({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}},
     "token is bound to a key (DPoP or mTLS), which is not supported"),
    ({"token_use": "id"}, "token is not a bearer access token"),
], ids=["valid", "expired", "not-yet-valid", "no-jti", "no-client-id", "no-exp", "exp-string", "other-audience",
        "dpop-bound", "token-use-id"])
def test_claims_of_a_well_signed_jwt_are_checked(local, issuer, api, changes, description):
    now = int(time.time())
    changes = {name: now + value if name in ("exp", "nbf") and isinstance(value, int) else value
               for name, value in changes.items()}
    token = signed_by_the_issuer(issuer, **changes)
    before = issuer.introspections()
    if description is None:
        assert_ok_from_upstream(local.get("/api/private-scoped", token=token))
    else:
        refused(local, api, token, description)
    assert issuer.introspections() == before


def test_a_role_missing_from_a_local_jwt_is_403(local, issuer, api):
    token = signed_by_the_issuer(issuer, roles=["write:messages"])
    assert_ok_from_upstream(local.get("/api/private", token=token))
    hits = api.upstream_total()
    resp = local.get("/api/private-scoped", token=token)
    assert resp.status == 403, resp
    assert resp.json()["error"] == "insufficient_scope"
    assert api.upstream_total() == hits


def forgeries(issuer):
    """Tokens an attacker can make without the issuer's private key."""
    jwk = issuer.signing_keys()[0]
    kid = jwk["kid"]
    issuer_key = jwt_tools.private_key(jwk)
    claims = jwt_tools.access_claims(issuer.url, issuer.ids["project_id"])
    genuine = jwt_tools.sign(issuer_key, {"alg": "RS256", "kid": kid}, claims)
    admin = dict(claims, sub="admin")
    _, _, signature = genuine.split(".")
    swapped = jwt_tools.sign(jwt_tools.new_key(), {"alg": "RS256", "kid": kid}, admin).rsplit(".", 1)[0]
    return {
        "another-key-same-kid": (jwt_tools.sign(jwt_tools.new_key(), {"alg": "RS256", "kid": kid}, claims), BAD_SIGNATURE),
        "payload-swapped": (f"{swapped}.{signature}", BAD_SIGNATURE),
        "alg-none": (jwt_tools.unsigned({"alg": "none", "kid": kid}, claims), BAD_HEADER),
        "alg-none-with-signature": (jwt_tools.relabel(genuine, alg="none"), BAD_HEADER),
        "hs256-keyed-with-the-public-key": (
            jwt_tools.hs256(jwt_tools.public_pem(issuer_key), {"alg": "HS256", "kid": kid}, claims), BAD_HEADER),
        "rs256-relabelled-ps256": (jwt_tools.relabel(genuine, alg="PS256"), BAD_HEADER),
        "no-kid": (jwt_tools.sign(issuer_key, {"alg": "RS256"}, claims), BAD_HEADER),
        "crit": (jwt_tools.sign(issuer_key, {"alg": "RS256", "kid": kid, "crit": ["exp"]}, claims), BAD_HEADER),
        "typ-not-a-jwt": (jwt_tools.sign(issuer_key, {"alg": "RS256", "kid": kid, "typ": "dpop+jwt"}, claims),
                          BAD_HEADER),
        "jku-to-the-attackers-keys": (
            jwt_tools.sign(jwt_tools.new_key(), {"alg": "RS256", "kid": kid, "jku": "https://attacker.example/k"},
                           claims), BAD_SIGNATURE),
    }


FORGERIES = ["another-key-same-kid", "payload-swapped", "alg-none", "alg-none-with-signature",
             "hs256-keyed-with-the-public-key", "rs256-relabelled-ps256", "no-kid", "crit", "typ-not-a-jwt",
             "jku-to-the-attackers-keys"]


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_jwts_are_refused_without_a_call(local, issuer, api, name):
    token, description = forgeries(issuer)[name]
    before, fetches = issuer.introspections(), local.metric("issuer.default.jwks_fetches")
    refused(local, api, token, description)
    # Refused again from the cache, and no fetch of the keys for a kid they know.
    refused(local, api, token, description)
    assert issuer.introspections() == before
    assert local.metric("issuer.default.jwks_fetches") == fetches


# ---- a key rotation at the issuer ----

@pytest.fixture(scope="module")
def rotating(log_dir, envoy_factory):
    """An issuer of its own (its keys change), and two Envoys: one that refreshes its keys
    rarely (the rotation's refetch counts are its alone) and one every two seconds."""
    issuer = Issuer(log_dir, name="issuer-rotating")
    overrides = {"issuer": issuer.url}
    env = {"ZITADEL_API_KEY_JSON": issuer.api_key_json}
    rarely = envoy_factory("envoy-jwt-rotation", dict(overrides, jwt=dict(LOCAL, jwks_refresh_seconds=3600)),
                           issuer_port=issuer.port, env=env)
    often = envoy_factory("envoy-jwt-refresh", dict(overrides, jwt=dict(LOCAL, jwks_refresh_seconds=2)),
                          issuer_port=issuer.port, env=env)
    yield issuer, rarely, often
    issuer.stop()


def test_a_key_rotation_costs_one_refetch_and_a_retired_key_is_refused_after_the_refresh(rotating, api):
    issuer, rarely, often = rotating
    old = [issuer.token("reader-jwt") for _ in range(4)]
    old_kid = jwt_tools.header_of(old[0])["kid"]
    for envoy in (rarely, often):
        assert_ok_from_upstream(envoy.get("/api/private", token=old[0]))
    assert rarely.metric("issuer.default.jwks_fetches") == 1
    assert issuer.introspections() == 0

    # The issuer signs with a new key and still publishes the old one.
    issuer.restart("--rotate-signing-key")
    new = issuer.token("reader-jwt")
    new_kid = jwt_tools.header_of(new)["kid"]
    assert new_kid != old_kid
    assert_ok_from_upstream(rarely.get("/api/private", token=new))
    assert rarely.metric("issuer.default.jwks_fetches") == 2, "one refetch for the new kid"
    assert_ok_from_upstream(rarely.get("/api/private", token=old[1]))
    assert rarely.metric("issuer.default.jwks_fetches") == 2, "the old key is still known: no refetch"

    # The old key is retired: an Envoy refused its tokens once its keys were refreshed.
    issuer.restart("--retire-old-signing-keys")
    fetches = often.metric("issuer.default.jwks_fetches")
    eventually(lambda: often.metric("issuer.default.jwks_fetches") >= fetches + 1, 10, "the next refresh")
    refused(often, api, old[2], UNKNOWN_KEY)
    # A verdict cached before the retirement holds until its cache entry ends (cache.max_ttl_seconds).
    assert_ok_from_upstream(often.get("/api/private", token=old[0]))
    # The rarely refreshing Envoy still holds the old key: a retired key is honoured until the
    # refresh (jwks_refresh_seconds), the documented bound.
    assert_ok_from_upstream(rarely.get("/api/private", token=old[3]))
    assert_ok_from_upstream(often.get("/api/private", token=new))
    assert issuer.introspections() == 0


# ---- a key set that is down, slow, garbage or huge ----

FAULT_ISSUER = "https://keys.fault.example"


@pytest.fixture(scope="module")
def faulty_keys(envoy_factory, fault_server, issuer):
    fault_server.set_keys("down")
    introspection = {"cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}",
                     "path": "/oauth/v2/introspect", "timeout_ms": 500}
    jwt = {"mode": "local", "jwks_refresh_seconds": 1, "jwks_min_refresh_seconds": 1, "jwks_max_stale_seconds": 8}
    envoy = envoy_factory("envoy-jwt-faulty-keys", {"issuer": FAULT_ISSUER, "introspection": introspection,
                                                    "jwt": jwt}, issuer_port=fault_server.port)
    yield envoy
    fault_server.set_keys("down")


def test_a_failing_key_set_never_gives_a_401_or_an_allow(faulty_keys, fault_server, issuer, api):
    key = jwt_tools.new_key()
    project = issuer.ids["project_id"]
    introspections = fault_server.calls

    def token():
        claims = jwt_tools.access_claims(FAULT_ISSUER, project)
        return jwt_tools.sign(key, {"alg": "RS256", "kid": "f1"}, claims)

    def errors():
        return faulty_keys.metric("issuer.default.jwks_errors")

    def status_of(fresh_token):
        return faulty_keys.get("/api/private", token=fresh_token)

    # Down from the start: no keys at all, so 503.
    eventually(lambda: errors() >= 1, 10, "the first fetch to fail")
    hits = api.upstream_total()
    assert_issuer_unavailable(status_of(token()))
    assert api.upstream_total() == hits

    # Up: within a refresh the keys arrive.
    fault_server.set_keys("ok", {"keys": [jwt_tools.public_jwk(key, "f1")]})
    eventually(lambda: status_of(token()).status == 200, 10, "the keys to be fetched")

    # Garbage, huge, then hanging past the 500 ms timeout: each refresh fails, and the last good
    # keys stay in use (jwks_max_stale_seconds) for tokens never seen before.
    # (The fault server counts the fetches at once; Envoy's counters lag a second.)
    for mode in ["garbage", "huge", "hang"]:
        fault_server.set_keys(mode)
        fetches = fault_server.keys_calls
        eventually(lambda: fault_server.keys_calls > fetches, 10, f"a refresh ({mode})")
        time.sleep(0.7)  # a hanging fetch ends at the 500 ms timeout
        assert_ok_from_upstream(status_of(token()))
        assert fault_server.calls == introspections, "a JWT was introspected"
    assert errors() >= 4

    # Still hanging: once the last good keys are older than refresh + max_stale, 503 again.
    eventually(lambda: status_of(token()).status == 503, 30, "the keys to go stale")
    hits = api.upstream_total()
    assert_issuer_unavailable(status_of(token()))
    assert api.upstream_total() == hits

    # And back.
    fault_server.set_keys("ok")
    eventually(lambda: status_of(token()).status == 200, 15, "the keys to be fetched again")
