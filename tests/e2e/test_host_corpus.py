"""Spellings of hosts that try to get a request admitted under one virtual host's rules while
Envoy's router serves it from another. Judged by where each request went: the gateway example
(gateway.py) runs with `unmatched: public` (every other host a public site) behind its virtual
hosts (envoy/gateway-routes.yaml, plus one for the loopback addresses), each of which tags what
it routes; the demo API echoes the tag and the identity headers the filter set. A spelling passes
when it is refused, or when the rule the filter applied is the one of the virtual host that
served it: orders' identity at the orders virtual host, none at the public one, and so on.

Every spelling goes without a token and with a token of each API, through four Envoys: the
shipped host options (Envoy strips one port and one trailing dot) and Envoy's defaults, each
with the example's rules as shipped (bound to Envoy's virtual hosts) and rewritten to name
hosts instead (where the filter's own reading of the host is all there is).
"""
import subprocess

import pytest

from gateway import CLAIM_SCOPE, gateway_plugin, gateway_routes, start_gateway, with_host_rules
from stack import RESPONSES, Issuer, raw_get
from test_filter_in_envoy import assert_ok_from_upstream

# Aimed at orders.example.com.
TO_ORDERS = [
    "orders.example.com", "ORDERS.EXAMPLE.COM", "Orders.Example.Com", "orders.example.com.", "ORDERS.example.com.",
    "orders.example.com..", "orders.example.com...", "orders.example.com:80", "orders.example.com:443",
    "orders.example.com:10000", "orders.example.com.:80", "orders.example.com:80:80", "orders.example.com.:80:80",
    "orders.example.com:80.", "orders.example.com..:80", "ORDERS.EXAMPLE.COM:80:443", "orders.example.com:8080:8080",
    "orders.example.com:", "orders.example.com:0", "orders.example.com:080", "orders.example.com:0080",
    "orders.example.com:65536", "orders.example.com:http", "orders..example.com", ".orders.example.com",
    "user@orders.example.com", "orders.example.com@public.test", "@orders.example.com", "orders%2eexample.com",
    "orders.example.com%00", "orders.example.com%2f", "orders.example.com/", "orders.example.com\\",
    "orders.example.com#", "orders.example.com?x", "orders.example.com;x", "orders.example.com,public.test",
    "public.test,orders.example.com", "orders.example.com ", "orders.example.com\t", " orders.example.com",
    "*.example.com", "orders.example.com.:", "\u043erders.example.com", "orders.ex\u00e4mple.com",
    "orders.example.com\u3002", "[orders.example.com]", "orders.example.com:10000.", "0rders.example.com:-1",
]
# Aimed at billing and at the partners wildcard.
TO_OTHERS = [
    "BILLING.EXAMPLE.COM", "billing.example.com.", "billing.example.com:1", "Billing.Example.Com.:8443",
    "billing.example.com..", "billing.example.com:1:1", "eu.PARTNERS.example.com", "a.b.partners.example.com",
    "eu.partners.example.com.:443", "EU.Partners.Example.Com.", "eu.partners.example.com..",
    "eu@partners.example.com", "eu.partners.example.com:443:443", "partners.example.com", ".partners.example.com",
]
# Aimed at the loopback virtual host (IPv4 and IPv6 forms of 127.0.0.1 and ::1).
TO_LOOPBACK = [
    "127.0.0.1", "127.0.0.1:10000", "127.0.0.1.", "127.0.0.1:80:80", "127.1", "0x7f.0.0.1", "2130706433",
    "0177.0.0.1", "127.000.000.001", "127.0.0.01", "[::1]", "[::1]:80", "[0:0::1]", "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]", "[::FFFF:7F00:1]", "::1", "[::1]:80:80", "[::1].", "[::1%25lo]", "[v1.x]",
]
# Request lines and header sets that disagree about the host.
MIXED = [
    ("http://orders.example.com/orders", ["Host: public.test"]),
    ("http://ORDERS.example.com./orders", ["Host: public.test"]),
    ("http://public.test/orders", ["Host: orders.example.com"]),
    ("http://user@orders.example.com/orders", ["Host: public.test"]),
    ("http://orders.example.com:80:80/orders", ["Host: orders.example.com"]),
    ("/orders", ["Host: public.test", "Host: orders.example.com"]),
    ("/orders", ["Host: orders.example.com", "Host: public.test"]),
    ("/orders", ["Host: public.test", "X-Forwarded-Host: orders.example.com"]),
    ("/orders", ["Host: public.test", ":authority: orders.example.com"]),
]
# Over HTTP/2 (cleartext), where the host is the :authority pseudo-header.
H2 = ["ORDERS.EXAMPLE.COM.", "orders.example.com:1", "orders.example.com..", "orders.example.com:80:80",
      "user@orders.example.com", "[0:0::1]"]
# Spellings of orders.example.com the shipped host options fold onto it: a token for orders
# gets through, with orders' identity.
EQUIVALENT = ["ORDERS.example.com", "orders.example.com.", "orders.example.com:8080", "Orders.Example.COM.:443"]

# The loopback virtual host and the rule that makes it orders' too.
LOOPBACK_VHOST = {"name": "loopback", "domains": ["127.0.0.1", "[::1]"],
                  "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "orders"}}]}
LOOPBACK_RULE = {"virtual_host": "loopback", "api": "orders", "access": "authenticated"}
# The API whose rules each virtual host's requests must be admitted under (None: public).
API_OF_VHOST = {"orders": "orders", "loopback": "orders", "billing": "billing", "partners": "partners",
                "public": None}
TOKENS = ["no token", "orders", "billing", "partners"]


def applied_api(response):
    """Which API's rule the filter admitted the request under, read from the identity headers
    the demo API echoes (each API of the example forwards its own set); None: a public rule."""
    if response.header("echo-x-auth-partner-user"):
        return "partners"
    if response.header("echo-x-auth-username"):
        return "orders"
    if response.header("echo-x-auth-subject"):
        return "billing"
    return None


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


@pytest.fixture(scope="module")
def host_tokens(acme, partner):
    return {"no token": None, "orders": acme.token("reader-opaque", CLAIM_SCOPE),
            "billing": acme.token("other-project", CLAIM_SCOPE), "partners": partner.token("reader-opaque", CLAIM_SCOPE)}


@pytest.fixture(scope="module", params=[("strip", "virtual-host-rules"), ("strip", "host-rules"),
                                        ("defaults", "virtual-host-rules"), ("defaults", "host-rules")],
                ids="-".join)
def hosts_envoy(request, envoy_factory, acme, partner):
    options, rules = request.param
    plugin = gateway_plugin(acme, partner, unmatched="public")
    plugin["rules"] = [*plugin["rules"], LOOPBACK_RULE]
    if rules == "host-rules":
        plugin = with_host_rules(plugin, {"loopback": LOOPBACK_VHOST["domains"]})
    envoy = start_gateway(envoy_factory, acme, partner, f"envoy-hosts-{options}-{rules}", plugin=plugin,
                          edit_config=gateway_routes(options == "strip", [LOOPBACK_VHOST]))
    envoy.options, envoy.rules = options, rules
    return envoy


def outcome(response):
    """("refused" or the virtual host that served it, or None), and what is wrong (None: nothing)."""
    if "x-envoy-upstream-service-time" not in response.headers:
        ok = response.status in (400, 401, 403)
        return "refused", None if ok else f"refused with {response.status}"
    vhost = response.header("echo-x-routed-vhost")
    if vhost not in API_OF_VHOST:
        return None, f"served without a known virtual host: {response}"
    applied = applied_api(response)
    if applied != API_OF_VHOST[vhost]:
        return vhost, f"served by the {vhost} virtual host under {applied or 'a public'} rule"
    return vhost, None


def judge(response, what):
    """Refused, or admitted by the rule of the virtual host that served it."""
    _, problem = outcome(response)
    assert problem is None, (what, problem)


def test_corpus_is_large_enough():
    assert len(set(TO_ORDERS + TO_OTHERS + TO_LOOPBACK)) + len(MIXED) + len(H2) >= 100


def test_every_host_spelling_is_refused_or_admitted_by_its_virtual_hosts_rule(hosts_envoy, host_tokens):
    seen, problems = {}, []
    for host in TO_ORDERS + TO_OTHERS + TO_LOOPBACK:
        for name in TOKENS:
            token = host_tokens[name]
            lines = [f"Authorization: Bearer {token}"] if token else []
            where, problem = outcome(raw_get(hosts_envoy.port, "/orders", lines, host=host))
            seen[where] = seen.get(where, 0) + 1
            if problem:
                problems.append(f"{host!r} {name}: {problem}")
    assert not problems, f"{len(problems)} of {sum(seen.values())}:\n" + "\n".join(problems)
    # Every virtual host served something: the corpus reaches them all.
    assert set(seen) >= {"refused", "orders", "loopback", "billing", "partners", "public"}, seen


@pytest.mark.parametrize("target, lines", MIXED)
def test_disagreeing_request_lines_are_refused_or_admitted_by_their_virtual_hosts_rule(hosts_envoy, host_tokens,
                                                                                      target, lines):
    for name in TOKENS:
        token = host_tokens[name]
        auth = [f"Authorization: Bearer {token}"] if token else []
        judge(raw_get(hosts_envoy.port, target, lines + auth, host=None), (target, lines, name))


@pytest.mark.parametrize("authority", H2)
def test_h2_authorities_are_refused_or_admitted_by_their_virtual_hosts_rule(hosts_envoy, host_tokens, authority):
    for name in TOKENS:
        token = host_tokens[name]
        auth = ["-H", f"Authorization: Bearer {token}"] if token else []
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
                              "-w", "%{http_version} %{http_code}", "-H", f"Host: {authority}", *auth,
                              f"http://127.0.0.1:{hosts_envoy.port}/orders"],
                             capture_output=True, text=True, timeout=10).stdout
        RESPONSES.append(f"h2 {authority!r} {out}")
        head, _, last = out.rpartition("\n")
        version, status = last.split()
        # "0 000": Envoy's HTTP/2 codec reset the stream (a malformed :authority): refused.
        if (version, status) == ("0", "000"):
            continue
        assert version == "2", out
        upstream = "x-envoy-upstream-service-time" in head
        if not upstream:
            assert status in ("400", "401", "403"), (authority, name, out)
            continue
        vhost = next((line.split(":", 1)[1].strip() for line in head.splitlines()
                      if line.lower().startswith("echo-x-routed-vhost:")), None)
        applied = next((api for header, api in [("echo-x-auth-partner-user", "partners"),
                                                ("echo-x-auth-username", "orders"),
                                                ("echo-x-auth-subject", "billing")]
                        if header in head.lower()), None)
        assert vhost in API_OF_VHOST and applied == API_OF_VHOST[vhost], (authority, name, out)


@pytest.mark.parametrize("host", EQUIVALENT)
def test_equivalent_spellings_pass_with_a_token_behind_the_shipped_options(hosts_envoy, acme, host_tokens, host):
    if hosts_envoy.options != "strip":
        pytest.skip("Envoy's defaults keep ports and dots: these are other hosts to its router")
    resp = hosts_envoy.get("/orders", token=host_tokens["orders"], host=host)
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-routed-vhost") == "orders"
    assert resp.header("echo-x-auth-org") == acme.ids["org_id"]


def test_filter_answers_malformed_hosts_itself(hosts_envoy, acme):
    before = acme.introspections()
    resp = raw_get(hosts_envoy.port, "/orders", host="user@orders.example.com")
    assert resp.status == 400, resp
    assert resp.json() == {"error": "invalid_request", "error_description": "host has user information"}
    assert hosts_envoy.metric("denied.bad_host") >= 1
    assert acme.introspections() == before


def test_a_port_that_decides_the_rule_is_refused_where_rules_name_hosts(hosts_envoy, host_tokens):
    """Envoy's defaults leave the port: counted, no host rule matches (public); ignored, orders'
    rule does. The filter cannot know which its router does: 400."""
    resp = hosts_envoy.get("/orders", token=host_tokens["orders"], host="orders.example.com:8080")
    if (hosts_envoy.options, hosts_envoy.rules) == ("defaults", "host-rules"):
        assert resp.status == 400, resp
        assert resp.json()["error_description"] == \
            "host has a port, and whether it is counted decides which rule applies"
    elif hosts_envoy.options == "defaults":
        # Bound to the virtual host: the router served it from the public one, and so did the filter.
        assert_ok_from_upstream(resp)
        assert resp.header("echo-x-routed-vhost") == "public" and applied_api(resp) is None
    else:
        assert_ok_from_upstream(resp)
        assert resp.header("echo-x-routed-vhost") == "orders" and applied_api(resp) == "orders"


def test_other_hosts_are_public(hosts_envoy, api):
    before = api.hits().get("vhost:public", 0)
    for host in ["public.test", "orders.example.com.evil", "partners.example.com"]:
        resp = raw_get(hosts_envoy.port, "/orders", host=host)
        assert resp.status == 200 and resp.header("echo-x-routed-vhost") == "public", (host, resp)
    assert api.hits().get("vhost:public", 0) == before + 3


def test_client_x_forwarded_host_never_reaches_the_upstream(envoy, api):
    resp = raw_get(envoy.port, "/public", ["X-Forwarded-Host: orders.example.com"])
    assert_ok_from_upstream(resp)
    assert resp.header("echo-x-forwarded-host") is None, resp
