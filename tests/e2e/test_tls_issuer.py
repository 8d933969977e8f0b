"""An issuer served over HTTPS, as ZITADEL Cloud is: the local issuer with a CA and certificates
made for this run (scripts/make_certs.py), reached through an Envoy cluster with an
UpstreamTlsContext (SNI, the CA, the issuer's name checked; envoy/render.py issuer_cluster).
A valid certificate works; an unknown CA, another name and an expired certificate each give
503 — never an allow — and one error-level log line saying why."""
import json
import os
import sys

import pytest

import render
from stack import ROOT, Issuer, wait_for
from test_filter_in_envoy import assert_issuer_unavailable, assert_ok_from_upstream

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_certs  # noqa: E402

TLS_NAME = "localhost"
# In both of the filter's wordings: Envoy 1.36-1.39 pass the TLS error on to the VM, 1.40 does not.
VERIFY_FAILED = "an unknown CA, a certificate for another name than the cluster checks, or an expired one"


@pytest.fixture(scope="module")
def certs(log_dir):
    return make_certs.make(os.path.join(log_dir, "certs"), TLS_NAME)


def https_envoy(envoy_factory, issuer, certs, name):
    plugin = render.plugin_config(issuer.url, f"{TLS_NAME}:{issuer.port}")
    cluster = render.issuer_cluster("issuer", "127.0.0.1", issuer.port, tls_name=TLS_NAME, ca_file=certs["ca"])
    return envoy_factory(name, raw_plugin_text=json.dumps(plugin), issuer_clusters=[cluster],
                         env={"ZITADEL_API_KEY_JSON": issuer.api_key_json})


@pytest.fixture(scope="module")
def tls_issuer(log_dir, certs):
    issuer = Issuer(log_dir, "issuer-tls", tls=(certs["server"], certs["server_key"], certs["ca"]))
    yield issuer
    issuer.stop()


def test_issuer_over_https_vouches_for_tokens(envoy_factory, tls_issuer, certs, api):
    assert tls_issuer.url.startswith("https://localhost:")
    envoy = https_envoy(envoy_factory, tls_issuer, certs, "envoy-https-issuer")
    token = tls_issuer.token("reader-jwt")
    before = tls_issuer.introspections()
    resp = envoy.get("/api/private-scoped", token=token)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-roles") == "read:messages"
    assert tls_issuer.introspections() == before + 1
    # The JWT names the HTTPS issuer, and the answer's iss must be it.
    assert envoy.get("/api/private", token="not-a-token").status == 401
    assert tls_issuer.introspections() == before + 2
    stats = envoy.stats()
    assert stats.get("cluster.issuer.ssl.handshake", 0) >= 1, {k: v for k, v in stats.items() if ".ssl." in k}
    # Envoy sent the issuer's name as SNI (the issuer records what it received).
    assert "localhost" in tls_issuer.stats()["tls_server_names"]


@pytest.mark.parametrize("bad", ["unknown-ca", "wrong-name", "expired"])
def test_a_certificate_envoy_refuses_is_503_with_one_clear_log_line(envoy_factory, log_dir, certs, api, bad):
    issuer = Issuer(log_dir, f"issuer-tls-{bad}", tls=(certs[bad], certs[f"{bad}_key"], certs["ca"]), verify=False)
    try:
        envoy = https_envoy(envoy_factory, issuer, certs, f"envoy-https-{bad}")
        hits_before = api.upstream_total()
        log_start = len(envoy.process.output())
        for token in ("any-token-at-all", issuer.token("reader-opaque")):
            resp = envoy.get("/api/private", token=token)
            assert_issuer_unavailable(resp)
        # The handshake failed, so no request ever reached the issuer, and nothing reached the API.
        assert issuer.introspections() == 0
        assert api.upstream_total() == hits_before
        log = lambda: envoy.process.output()[log_start:]  # noqa: E731
        wait_for(lambda: log().count(VERIFY_FAILED) == 2, 5, "two error lines, one per request")
        lines = [line for line in log().splitlines() if VERIFY_FAILED in line]
        assert all("][error][wasm]" in line and "(issuer default)" in line for line in lines), lines
        assert "could not connect to the issuer (reset reason: remote connection failure" in lines[0], lines[0]
        # Envoy's own log has the detail (at debug, in its connection component).
        assert any("][connection]" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in log().splitlines())
        # Envoy's own count says which check failed.
        stats = envoy.stats()
        failed = {k: v for k, v in stats.items() if k.startswith("cluster.issuer.ssl.fail_verify")}
        assert sum(failed.values()) >= 1, failed
        if bad == "wrong-name":
            assert stats.get("cluster.issuer.ssl.fail_verify_san", 0) >= 1, failed
        else:
            assert stats.get("cluster.issuer.ssl.fail_verify_error", 0) >= 1, failed
    finally:
        issuer.stop()
