"""Only a plain bearer access token opens an API. What ZITADEL answers for the other tokens a
client holds (see demo/issuer/issuer.mjs: `{"active":false}` for a refresh token and for an ID
token, since its introspection knows access tokens only), what other issuers answer (a
`token_type` that is not Bearer, a `token_use` that is not access_token), and a token bound to a
key (DPoP, from the local issuer; mTLS's `cnf`, from the fault server) presented as a plain
Bearer token: each is 401 after one issuer call, and the upstream never sees the request."""
import hashlib
import json

import pytest

from fault_server import with_members
from test_filter_in_envoy import assert_invalid_token, assert_ok_from_upstream

NOT_ACTIVE = "token is not active"
NOT_BEARER = "token is not a bearer access token"
BOUND = "token is bound to a key (DPoP or mTLS), which is not supported"


def refused_once(envoy, issuer_calls, api, token, description):
    before, hits = issuer_calls(), api.upstream_total()
    resp = envoy.get("/api/private", token=token)
    assert_invalid_token(resp)
    assert resp.json()["error_description"] == description, resp
    assert issuer_calls() == before + 1
    assert api.upstream_total() == hits


@pytest.mark.parametrize("kind", ["refresh_token", "id_token"])
def test_zitadels_other_tokens_are_not_active(envoy, issuer, api, kind):
    refused_once(envoy, issuer.introspections, api, issuer.token("key-user", kind=kind), NOT_ACTIVE)


@pytest.mark.parametrize("user", ["reader-opaque", "reader-jwt"])
def test_a_dpop_bound_token_presented_as_bearer_is_refused(envoy, issuer, api, user):
    refused_once(envoy, issuer.introspections, api, issuer.token(user, dpop=True), BOUND)
    # The same user's bearer token passes.
    assert_ok_from_upstream(envoy.get("/api/private", token=issuer.token(user)))


@pytest.fixture(scope="module")
def faulty(envoy_factory, fault_server):
    introspection = {"cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}",
                     "path": "/oauth/v2/introspect", "timeout_ms": 2000}
    return envoy_factory("envoy-token-types", {"introspection": introspection}, issuer_port=fault_server.port)


@pytest.mark.parametrize("members, description", [
    ({"token_type": "refresh_token"}, NOT_BEARER),
    ({"token_type": "Refresh"}, NOT_BEARER),
    ({"token_type": "N_A"}, NOT_BEARER),
    ({"token_type": "DPoP"}, NOT_BEARER),
    ({"token_use": "id"}, NOT_BEARER),
    ({"token_use": "refresh_token"}, NOT_BEARER),
    ({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}, BOUND),
    ({"token_type": "Bearer", "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}, BOUND),
])
def test_other_issuers_non_bearer_answers_are_refused(faulty, fault_server, api, members, description):
    fault_server.set_mode(with_members(members))
    refused_once(faulty, lambda: fault_server.calls, api, "token-" + hashlib.sha256(json.dumps(members).encode()).hexdigest()[:16], description)


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
def test_bearer_in_any_case_passes(faulty, fault_server, token_type):
    fault_server.set_mode(with_members({"token_type": token_type, "token_use": "access_token"}))
    assert_ok_from_upstream(faulty.get("/api/private", token=f"token-bearer-{token_type}"))


def test_a_token_type_of_another_json_type_is_an_issuer_failure(faulty, fault_server):
    fault_server.set_mode(with_members({"token_type": 7}))
    resp = faulty.get("/api/private", token="token-type-number")
    assert resp.status == 503, resp
    assert fault_server.calls == 1
