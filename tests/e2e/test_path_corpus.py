"""Spellings of a protected path that try to slip past the rules through a
public route or around one. Run against two Envoys: the shipped config (Envoy
normalizes paths first) and one with Envoy's normalization switched off, where
the filter's own canonicalization is the only defence. None may reach the
upstream without a verdict that allows it."""
import pytest
import yaml

from stack import raw_get
from test_filter_in_envoy import assert_ok_from_upstream

# Aimed at routes any valid token may use (/api/private, /protected): sent without a token.
TO_AUTHENTICATED = [
    "/api/private", "/api/private/", "//api/private", "/api//private", "/api/./private", "/./api/private",
    "/api/public/../private", "/api/public/../../api/private", "/public/../api/private", "/public/..%2fapi/private",
    "/public/%2e%2e/api/private", "/public/%2E%2E/api/private", "/public/.%2e/api/private", "/public/%2e./api/private",
    "/api/public/%2e%2e/private", "/api/public%2f..%2fprivate", "/api/public%2F..%2Fprivate",
    "/api/public%5c..%5cprivate", "/api/public\\..\\private", "/api/public/..;/private", "/api/public/..;x=1/private",
    "/api/public/.;/../private", "/api/public/..%3b/private", "/api/public/%2e%2e;/private",
    "/api/public#/../private", "/api/public%23/../private", "/%61pi/private", "/api/%70rivate", "/api/privat%65",
    "/api/private%00", "/api/private%2500", "/api/public/%252e%252e/private", "/api/public/%2e%2e%2fprivate",
    "/api/public/..%252fprivate", "/api/public/..%c0%afprivate", "/api/public/%u002e%u002e/private", "/API/private",
    "/api/PRIVATE", "/api/private?x=/public", "/api/private#/public", "/api/public/x/../../private",
    "/api/public/../private?/api/public", "/protected", "/protected/", "/protected/.", "/public/../protected",
    "/protected;x", "/protected%20", "/protected%09", "/public/..%5cprotected", "/public%2f..%2fprotected",
    "/public/%2e%2e/protected", "/public/./../protected", "/public/x/../../protected", "/./protected",
    "/public/../../../../protected", "/public/..\\protected", "/public%00/../protected", "/public/%2e%2e%5cprotected",
]

# Aimed at the role route (read:messages), sent with a valid token that lacks the role.
TO_ROLE_ROUTE = [
    "/api/private-scoped", "/api/private-scoped/", "/api/private-scoped/.", "/api//private-scoped",
    "/api/public/../private-scoped", "/api/private-scope%64", "/api/private-scoped;x=1", "/api/private-scoped%2f",
    "/api/private-scoped/..;/", "/api/private-scoped%00", "/public/../api/private-scoped",
    "/api/public/%2e%2e/private-scoped", "/api/private-scoped/x/..", "/api/private-scoped?role=read:messages",
]

# Spellings Envoy's normalization resolves to the role route: a token with the role gets through
# the shipped listener. Without that normalization the filter refuses all but the trailing slash
# (400): servers read dot-segments, empty segments and escapes differently (test_path_readers.py).
RESOLVED_TO_ROLE_ROUTE = ["/api/./private-scoped", "/api//private-scoped", "/api/public/../private-scoped",
                          "/api/private-scope%64", "/api/private-scoped/"]
READ_ONE_WAY_ONLY = ["/api/private-scoped/"]


def without_path_normalization(text, _envoy):
    config = yaml.safe_load(text)
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for option in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action"):
            hcm.pop(option, None)
    return yaml.safe_dump(config)


@pytest.fixture(scope="module", params=["envoy-normalizes", "filter-alone"])
def any_envoy(request, envoy, envoy_factory):
    chosen = envoy if request.param == "envoy-normalizes" else \
        envoy_factory("envoy-no-normalization", edit_config=without_path_normalization)
    chosen.path_mode = request.param
    return chosen


def test_corpus_is_large_enough():
    assert len(set(TO_AUTHENTICATED)) + len(set(TO_ROLE_ROUTE)) >= 50


def reached(api, before):
    """The paths the demo API received since `before` (a hits snapshot)."""
    return [key for key, n in api.hits().items() if key.startswith("/") and n > before.get(key, 0)]


def assert_refused_or_public(api, before, status, path, refused):
    """Refused, or served at a path that is public: Envoy's normalization may resolve a spelling
    into the public routes (1.36 reads `/api/public/.;/../private` as `/api/public/private`), and
    forwards the resolved path."""
    if status in refused:
        assert reached(api, before) == [], path
        return
    assert status == 200, (path, status)
    hit = reached(api, before)
    assert hit and all(p == "/public" or p.startswith("/api/public") for p in hit), (path, hit)


@pytest.mark.parametrize("path", TO_AUTHENTICATED)
def test_no_spelling_reaches_a_protected_route_without_a_token(any_envoy, api, path):
    before = api.hits()
    status = raw_get(any_envoy.port, path).status
    assert_refused_or_public(api, before, status, path, (400, 401, 403, 404))


@pytest.mark.parametrize("path", TO_ROLE_ROUTE)
def test_no_spelling_reaches_the_role_route_without_the_role(any_envoy, api, tokens, path):
    before = api.hits()
    status = raw_get(any_envoy.port, path, [f"Authorization: Bearer {tokens('plain-opaque')}"]).status
    assert_refused_or_public(api, before, status, path, (400, 403, 404))


@pytest.mark.parametrize("path", RESOLVED_TO_ROLE_ROUTE)
def test_equivalent_spellings_still_work_with_the_role(any_envoy, api, tokens, path):
    before = api.upstream_total()
    resp = any_envoy.get(path, token=tokens("reader-opaque"))
    if any_envoy.path_mode == "filter-alone" and path not in READ_ONE_WAY_ONLY:
        assert resp.status == 400 and resp.json()["error"] == "invalid_request", (path, resp)
        assert api.upstream_total() == before
        return
    assert_ok_from_upstream(resp)
    assert api.upstream_total() == before + 1


def test_filter_answers_ambiguous_paths_itself(envoy_factory, issuer):
    envoy = envoy_factory("envoy-no-normalization-400", edit_config=without_path_normalization)
    before = issuer.introspections()
    resp = envoy.get("/api/public%2f..%2fprivate")
    assert resp.status == 400
    assert resp.json() == {"error": "invalid_request",
                           "error_description": "path has an encoded slash, backslash or NUL, or a double encoding"}
    assert resp.header("www-authenticate") is None
    assert envoy.metric("denied.bad_path") == 1
    assert issuer.introspections() == before
