"""Spellings of a protected host that try to slip past its rules. The gateway example runs with
`unmatched: public` (every other host is a public site) behind virtual hosts that tag each
request with the vhost Envoy routed it to. A bypass would be a request the filter took for
another host (public) while Envoy routed it to a protected API's vhost. Run against two
Envoys: the shipped config (Envoy strips ports and the trailing dot first) and one without
those options, where the filter's own canonicalization is the only defence."""
import json
import subprocess

import pytest
import yaml

from gateway import CLAIM_SCOPE, gateway_plugin, start_gateway
from stack import RESPONSES, Issuer, first_hcm, raw_get
from test_filter_in_envoy import assert_ok_from_upstream

VHOSTS = [("orders", ["orders.example.com"]), ("billing", ["billing.example.com"]),
          ("partners", ["*.partners.example.com"]), ("public", ["*"])]

# Host header values aimed at orders.example.com, sent without a token.
TO_ORDERS = [
    "orders.example.com", "ORDERS.EXAMPLE.COM", "Orders.Example.Com", "orders.example.com.", "ORDERS.example.com.",
    "orders.example.com:80", "orders.example.com:443", "orders.example.com:10000", "orders.example.com.:80",
    "orders.example.com:", "orders.example.com:0", "orders.example.com:080", "orders.example.com:65536",
    "orders.example.com:http", "orders.example.com:80:80", "orders.example.com..", "orders..example.com",
    ".orders.example.com", "user@orders.example.com", "orders.example.com@public.test", "@orders.example.com",
    "orders%2eexample.com", "orders.example.com%00", "orders.example.com%2f", "orders.example.com/",
    "orders.example.com\\", "orders.example.com#", "orders.example.com?x", "orders.example.com;x",
    "orders.example.com,public.test", "public.test,orders.example.com", "orders.example.com ",
    "orders.example.com\t", " orders.example.com", "*.example.com", "orders.example.com.:",
    "\u043erders.example.com", "orders.ex\u00e4mple.com", "orders.example.com\u3002", "[orders.example.com]",
    "orders.example.com:10000.", "0rders.example.com:-1",
]
# Aimed at billing and at the partners wildcard, without a token.
TO_OTHERS = [
    "BILLING.EXAMPLE.COM", "billing.example.com.", "billing.example.com:1", "Billing.Example.Com.:8443",
    "eu.PARTNERS.example.com", "a.b.partners.example.com", "eu.partners.example.com.:443", "EU.Partners.Example.Com.",
    "eu.partners.example.com..", "eu@partners.example.com",
]
# Request lines and header sets that disagree about the host.
MIXED = [
    ("http://orders.example.com/orders", ["Host: public.test"]),
    ("http://ORDERS.example.com./orders", ["Host: public.test"]),
    ("http://public.test/orders", ["Host: orders.example.com"]),
    ("http://user@orders.example.com/orders", ["Host: public.test"]),
    ("/orders", ["Host: public.test", "Host: orders.example.com"]),
    ("/orders", ["Host: orders.example.com", "Host: public.test"]),
    ("/orders", ["Host: public.test", "X-Forwarded-Host: orders.example.com"]),
    ("/orders", ["Host: public.test", ":authority: orders.example.com"]),
]
# Over HTTP/2 (cleartext), where the host is the :authority pseudo-header.
H2 = ["ORDERS.EXAMPLE.COM.", "orders.example.com:1", "orders.example.com..", "user@orders.example.com"]
# Spellings of orders.example.com that a token for orders gets through.
EQUIVALENT = ["ORDERS.example.com", "orders.example.com.", "orders.example.com:8080", "Orders.Example.COM.:443"]


def tagged_vhosts(strip=True):
    """edit_config: one virtual host per API, each tagging what it routes; with strip=False,
    without Envoy's host normalization (strip_any_host_port, strip_trailing_host_dot)."""
    def edit(text, _envoy):
        config = yaml.safe_load(text)
        hcm = first_hcm(config)
        hcm["route_config"]["virtual_hosts"] = [
            {"name": name, "domains": domains, "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "demo_api"}}],
             "request_headers_to_add": [{"header": {"key": "x-routed-vhost", "value": name},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
            for name, domains in VHOSTS]
        if not strip:
            hcm.pop("strip_any_host_port", None)
            hcm.pop("strip_trailing_host_dot", None)
        return yaml.safe_dump(config)
    return edit


@pytest.fixture(scope="module")
def acme(log_dir):
    issuer = Issuer(log_dir, "issuer-acme-hosts", instance=1)
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def partner(log_dir):
    issuer = Issuer(log_dir, "issuer-partner-hosts", instance=2)
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module", params=["envoy-normalizes", "filter-alone"])
def hosts_envoy(request, envoy_factory, acme, partner):
    plugin = gateway_plugin(acme, partner, unmatched="public")
    strip = request.param == "envoy-normalizes"
    return start_gateway(envoy_factory, acme, partner, f"envoy-hosts-{request.param}", plugin=plugin,
                         edit_config=tagged_vhosts(strip))


PROTECTED = ("vhost:orders", "vhost:billing", "vhost:partners")


def protected_hits(api):
    hits = api.hits()
    return {name: hits.get(name, 0) for name in PROTECTED}


def assert_refused(status, before, api, what):
    # 400: refused as malformed (by the filter, or Envoy's codec first); 401: taken for the
    # protected host, whose rule wants a token. Never 200, and no protected vhost reached.
    assert status in (400, 401), (what, status)
    assert protected_hits(api) == before, what


def test_corpus_is_large_enough():
    assert len(set(TO_ORDERS)) + len(set(TO_OTHERS)) + len(MIXED) + len(H2) >= 60


@pytest.mark.parametrize("host", TO_ORDERS + TO_OTHERS)
def test_no_host_spelling_reaches_a_protected_api_without_a_token(hosts_envoy, api, host):
    before = protected_hits(api)
    resp = raw_get(hosts_envoy.port, "/orders", host=host)
    assert_refused(resp.status, before, api, host)


@pytest.mark.parametrize("target, lines", MIXED)
def test_no_disagreeing_request_reaches_a_protected_api(hosts_envoy, api, target, lines):
    before = protected_hits(api)
    resp = raw_get(hosts_envoy.port, target, lines, host=None)
    status = resp.status
    # A request Envoy routes to the public vhost may pass (200) only when the filter saw the public
    # host too: the absolute-form target's host, or Host (X-Forwarded-Host is no host to either).
    if status == 200:
        assert protected_hits(api) == before, (target, lines)
    else:
        assert_refused(status, before, api, (target, lines))


@pytest.mark.parametrize("authority", H2)
def test_no_h2_authority_reaches_a_protected_api(hosts_envoy, api, authority):
    before = protected_hits(api)
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          "-H", f"Host: {authority}", f"http://127.0.0.1:{hosts_envoy.port}/orders"],
                         capture_output=True, text=True, timeout=10).stdout
    RESPONSES.append(f"h2 {authority!r} {out}")
    # "0 000": Envoy's HTTP/2 codec reset the stream (a malformed :authority): refused too.
    version, status = out.split()
    assert version == "2" or out == "0 000", out
    assert_refused(int(status) or 400, before, api, authority)


@pytest.mark.parametrize("host", EQUIVALENT)
def test_equivalent_spellings_pass_with_a_token(hosts_envoy, acme, host):
    resp = hosts_envoy.get("/orders", token=acme.token("reader-opaque", CLAIM_SCOPE), host=host)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-auth-org") == acme.ids["org_id"]


def test_filter_answers_malformed_hosts_itself(hosts_envoy, acme):
    before = acme.introspections()
    resp = raw_get(hosts_envoy.port, "/orders", host="user@orders.example.com")
    assert resp.status == 400, resp
    assert json.loads(resp.body) == {"error": "invalid_request", "error_description": "host has user information"}
    assert hosts_envoy.metric("denied.bad_host") >= 1
    assert acme.introspections() == before


def test_other_hosts_are_public(hosts_envoy, api):
    before = api.hits().get("vhost:public", 0)
    for host in ["public.test", "orders.example.com.evil", "partners.example.com", "127.0.0.1", "[::1]"]:
        assert raw_get(hosts_envoy.port, "/orders", host=host).status == 200, host
    assert api.hits().get("vhost:public", 0) == before + 5


def test_client_x_forwarded_host_never_reaches_the_upstream(envoy, api):
    resp = raw_get(envoy.port, "/public", ["X-Forwarded-Host: orders.example.com"])
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-forwarded-host") is None, resp
