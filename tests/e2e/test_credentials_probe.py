"""The filter checks its own credentials at each issuer shortly after a configuration loads, once
per Envoy (not per worker): one log line per issuer (info when accepted, error with the issuer's
answer when not) and a counter; requests never wait for it."""
import json
import re

from stack import free_port, wait_for

ACCEPTED = re.compile(r"issuer default: credentials accepted for client (\S+) at ")


def probe_lines(envoy, pattern):
    return [line for line in envoy.process.output().splitlines() if re.search(pattern, line)]


def test_good_credentials_are_accepted_once_per_envoy(envoy_factory, issuer):
    envoy = envoy_factory("envoy-probe-good", concurrency=3)
    wait_for(lambda: envoy.metric("issuer.default.credentials_accepted") == 1, 15, "the probe's answer")
    lines = probe_lines(envoy, ACCEPTED.pattern)
    assert len(lines) == 1 and "[info]" in lines[0], lines
    assert ACCEPTED.search(lines[0]).group(1) == issuer.ids["api_client_id"]
    # Once per Envoy: no other VM probes later either.
    assert envoy.get("/public").status == 200
    assert envoy.metric("issuer.default.credentials_rejected") == 0
    assert len(probe_lines(envoy, "issuer default: credentials")) == 1
    assert issuer.stats()["probe_requests"] >= 1


def test_rejected_credentials_are_logged_with_the_issuers_answer(envoy_factory, issuer):
    # The API app's key file with another app's private key: the signature cannot verify.
    key = json.loads(issuer.api_key_json)
    key["key"] = json.loads(issuer.other_api_key_json)["key"]
    envoy = envoy_factory("envoy-probe-bad", env={"ZITADEL_API_KEY_JSON": json.dumps(key)})
    # Requests do not wait for the probe.
    assert envoy.get("/public").status == 200
    wait_for(lambda: envoy.metric("issuer.default.credentials_rejected") == 1, 15, "the probe's answer")
    [line] = probe_lines(envoy, "credentials rejected")
    assert "[error]" in line and "HTTP 401: invalid_client" in line, line
    assert envoy.metric("issuer.default.credentials_accepted") == 0


def test_an_unreachable_issuer_is_reported(envoy_factory):
    envoy = envoy_factory("envoy-probe-unreachable", issuer_port=free_port())
    wait_for(lambda: envoy.metric("issuer.default.credentials_unchecked") == 1, 15, "the probe's answer")
    [line] = probe_lines(envoy, "credentials not checked")
    assert "[error]" in line and "could not connect" in line, line
