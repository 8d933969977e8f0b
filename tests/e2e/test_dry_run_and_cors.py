"""Dry run and CORS preflights, in Envoy.

A dry-run rule checks everything, counts and logs what it would deny, and lets the request
through without any identity header (a forged one removed). An API with `cors_preflight: allow`
lets a browser's preflight (OPTIONS with Origin and Access-Control-Request-Method) through
without a token, and nothing else. The alternative, Envoy's CORS filter placed before this one
(envoy/cors.yaml, as docs/configuration.md shows it), answers preflights itself: neither this
filter nor the upstream sees them."""
import json
import os

import pytest
import yaml

from stack import ROOT, first_hcm, wait_for
from test_filter_in_envoy import assert_invalid_token, assert_ok_from_upstream

PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}


def rules(dry_run):
    return [
        {"path": "/public", "access": "public"},
        {"prefix": "/api/trial", "access": "authenticated", "dry_run": True},
        {"path": "/api/private-scoped", "access": "roles", "roles": ["read:messages"], "dry_run": dry_run},
        {"prefix": "/api/private", "access": "authenticated"},
    ]


@pytest.fixture(scope="module")
def trial(envoy_factory):
    return envoy_factory("envoy-dry-run", {"rules": rules(dry_run=True), "cors_preflight": "allow"})


def last_log(envoy, path, since=0):
    """The access log's last entry for `path` among those after the first `since` (it is
    flushed every 200 ms: waits for one)."""
    def entry():
        entries = [e for e in envoy.access_log_entries()[since:] if e["path"] == path]
        return entries[-1] if entries else None
    wait_for(lambda: entry() is not None, 10, f"an access log entry for {path}")
    return entry()


def test_a_dry_run_rule_lets_every_denial_through_and_counts_it(trial, tokens, api, issuer):
    hits = api.hits().get("/api/trial", 0)
    forged = {"x-auth-subject": "admin", "x-auth-roles": "admin"}
    resp = trial.get("/api/trial", headers=forged)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-subject") is None and resp.header("echo-x-auth-roles") is None
    bad = trial.get("/api/trial", token="not-a-token-anyone-issued", headers=forged)
    assert_ok_from_upstream(bad)
    assert bad.header("echo-x-auth-subject") is None
    # A role the token lacks, on a dry-run roles rule.
    plain = trial.get("/api/private-scoped", token=tokens("plain-opaque"))
    assert_ok_from_upstream(plain)
    assert plain.header("echo-x-auth-subject") is None
    assert api.hits().get("/api/trial", 0) == hits + 2
    # A valid token passes as always, with its identity.
    good = trial.get("/api/trial", token=tokens("reader-opaque"))
    assert good.header("echo-x-auth-subject") == issuer.ids["service_users"]["reader-opaque"]["user_id"]
    assert trial.metric("would_deny.missing_token") == 1
    assert trial.metric("would_deny.invalid_token") == 1
    assert trial.metric("would_deny.insufficient_role") == 1
    assert trial.metric("denied.missing_token") == 0
    entry = last_log(trial, "/api/private-scoped")
    assert (entry["decision"], entry["reason"], entry["status"]) == ("would_deny", "insufficient_role", 200)
    assert "dry run: would deny (missing_token) on api default" in trial.process.output()
    # Rules without dry_run still deny.
    assert_invalid_token(trial.get("/api/private", token="not-a-token-anyone-issued"))


def test_a_cors_preflight_passes_without_a_token_where_the_api_allows_it(trial, api):
    hits, since = api.hits().get("/api/private", 0), len(trial.access_log_entries())
    resp = trial.get("/api/private", method="OPTIONS", headers=PREFLIGHT)
    assert_ok_from_upstream(resp)
    assert api.hits().get("/api/private", 0) == hits + 1
    entry = last_log(trial, "/api/private", since)
    assert (entry["decision"], entry["reason"]) == ("allow", "cors_preflight")
    assert trial.metric("cors_preflight.passed") == 1
    # Not a preflight: an OPTIONS without Access-Control-Request-Method, or a GET with both headers.
    assert trial.get("/api/private", method="OPTIONS", headers={"Origin": "https://app.example.com"}).status == 401
    assert trial.get("/api/private", headers=PREFLIGHT).status == 401
    # With a body it is no preflight either.
    assert trial.get("/api/private", method="OPTIONS", headers=PREFLIGHT, body="delete everything").status == 401
    assert api.hits().get("/api/private", 0) == hits + 1


def test_where_the_api_does_not_allow_them_a_preflight_needs_a_token(envoy, api):
    hits = api.hits().get("/api/private", 0)
    assert envoy.get("/api/private", method="OPTIONS", headers=PREFLIGHT).status == 401
    assert api.hits().get("/api/private", 0) == hits


@pytest.fixture(scope="module")
def cors_first(envoy_factory):
    with open(os.path.join(ROOT, "envoy", "cors.yaml")) as f:
        cors = yaml.safe_load(f)

    def edit(text, envoy):
        config = yaml.safe_load(text)
        hcm = first_hcm(config)
        hcm["http_filters"] = cors["http_filters"] + hcm["http_filters"]
        hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] = cors["typed_per_filter_config"]
        return json.dumps(config)

    return envoy_factory("envoy-cors-filter", edit_config=edit)


def test_envoys_cors_filter_before_this_one_answers_preflights_itself(cors_first, api):
    hits = api.upstream_total()
    entries = len(cors_first.access_log_entries())
    resp = cors_first.get("/api/private", method="OPTIONS", headers=PREFLIGHT)
    wait_for(lambda: len(cors_first.access_log_entries()) > entries, 10, "the preflight's access log entry")
    assert resp.status == 200, resp
    assert resp.header("access-control-allow-origin") == "https://app.example.com"
    assert "POST" in resp.header("access-control-allow-methods")
    assert api.upstream_total() == hits
    # The token filter never saw it: no decision in the access log.
    new = cors_first.access_log_entries()[entries:]
    assert all(entry["decision"] is None for entry in new), new
    # Everything else still needs a token.
    assert cors_first.get("/api/private", headers={"Origin": "https://app.example.com"}).status == 401
