"""Many services behind one filter (envoy/gateway.json, see gateway.py): each route's allow and
deny, and the confusion matrix — every kind of token at every API, on the miss, hit and
coalesced paths — with statuses, reasons, issuer calls and upstream hits checked."""
import pytest

from gateway import BILLING, CLAIM_SCOPE, ORDERS, PARTNERS, start_gateway
from stack import Issuer, issuers_delayed, raw_get, send_together
from test_filter_in_envoy import assert_ok_from_upstream

NOT_ACTIVE = "token is not active"
WRONG_API = "token is not meant for this API"
UNTRUSTED = "token is from an issuer this API does not trust"

# kind: (issuer fixture name, service user, the API host its token is for)
KINDS = {
    "orders-opaque": ("acme", "reader-opaque", ORDERS),
    "orders-jwt": ("acme", "reader-jwt", ORDERS),
    "billing-opaque": ("acme", "other-project", BILLING),
    "billing-jwt": ("acme", "other-jwt", BILLING),
    "partners-opaque": ("partner", "reader-opaque", PARTNERS),
    "partners-jwt": ("partner", "reader-jwt", PARTNERS),
}
HOSTS = [ORDERS, BILLING, PARTNERS]
# Which instance each API's issuer entry asks.
ISSUER_OF = {ORDERS: "acme", BILLING: "acme", PARTNERS: "partner"}


@pytest.fixture(scope="module")
def acme(log_dir):
    issuer = Issuer(log_dir, "issuer-acme", instance=1)
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def partner(log_dir):
    issuer = Issuer(log_dir, "issuer-partner", instance=2, enforce_audience=True)
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def gateway(envoy_factory, acme, partner):
    return start_gateway(envoy_factory, acme, partner, "envoy-gateway")


@pytest.fixture
def issuers(acme, partner):
    return {"acme": acme, "partner": partner}


def mint(issuers, kind):
    issuer_name, user, _ = KINDS[kind]
    return issuers[issuer_name].token(user, CLAIM_SCOPE)


def expected(kind, host):
    """(status, error_description or None, the instance asked or None) for a token of `kind` at `host`."""
    issuer_name, user, own_host = KINDS[kind]
    is_jwt = kind.endswith("-jwt")
    if is_jwt and ISSUER_OF[host] != issuer_name:
        return 401, UNTRUSTED, None
    if host == own_host:
        return 200, None, ISSUER_OF[host]
    if ISSUER_OF[host] != issuer_name:
        return 401, NOT_ACTIVE, ISSUER_OF[host]  # the other instance never minted it
    return 401, WRONG_API, ISSUER_OF[host]  # acme vouches for it, for its own project


def calls(issuers):
    return {name: issuer.introspections() for name, issuer in issuers.items()}


def check_answer(resp, kind, host, issuers):
    status, description, _ = expected(kind, host)
    assert resp.status == status, (kind, host, resp)
    if status == 200:
        assert_ok_from_upstream(resp)
        _, user, _ = KINDS[kind]
        user_id = issuers[KINDS[kind][0]].ids["service_users"][user]["user_id"]
        subject = "echo-x-auth-partner-user" if host == PARTNERS else "echo-x-auth-subject"
        assert resp.header(subject) == user_id, (kind, host, resp)
    else:
        assert resp.json() == {"error": "invalid_token", "error_description": description}, (kind, host)
        assert resp.header("www-authenticate").startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("kind", KINDS)
def test_confusion_matrix_miss_then_hit(gateway, issuers, api, kind, host):
    token = mint(issuers, kind)
    status, _, asked = expected(kind, host)
    for path in ("miss", "hit"):
        before, hits_before = calls(issuers), api.hits().get(f"{host}/orders", 0)
        check_answer(gateway.get("/orders", token=token, host=host), kind, host, issuers)
        made = {name: n - before[name] for name, n in calls(issuers).items()}
        wanted = {name: int(path == "miss" and name == asked) for name in issuers}
        assert made == wanted, (path, kind, host)
        assert api.hits().get(f"{host}/orders", 0) == hits_before + (status == 200), (path, kind, host)


@pytest.mark.parametrize("kind", KINDS)
def test_confusion_matrix_coalesced(gateway, issuers, api, kind):
    """Four requests per API host at once, all carrying one new token: one call per API
    whose issuer entry is asked, each API's own answer for every request."""
    token = mint(issuers, kind)
    before, coalesced_before = calls(issuers), gateway.metric("introspection.coalesced")
    hits_before = {host: api.hits().get(f"{host}/orders", 0) for host in HOSTS}
    with issuers_delayed(issuers.values(), 300):
        results = send_together(gateway.port, "/orders", [(host, token) for host in HOSTS for _ in range(4)])
    for i, resp in enumerate(results):
        check_answer(resp, kind, HOSTS[i // 4], issuers)
    asked = [expected(kind, host)[2] for host in HOSTS]
    made = {name: n - before[name] for name, n in calls(issuers).items()}
    assert made == {name: asked.count(name) for name in issuers}, kind
    assert gateway.metric("introspection.coalesced") - coalesced_before == 3 * sum(a is not None for a in asked)
    for host in HOSTS:
        assert api.hits().get(f"{host}/orders", 0) - hits_before[host] == 4 * (expected(kind, host)[0] == 200)


def test_each_issuer_entry_counts_its_own_calls(gateway, issuers):
    before = {name: gateway.metric(f"issuer.{name}.calls") for name in ("acme-orders", "acme-billing", "partner")}
    token = mint(issuers, "orders-opaque")
    for host in HOSTS:
        gateway.get("/orders", token=token, host=host)
    after = {name: gateway.metric(f"issuer.{name}.calls") - n for name, n in before.items()}
    assert after == {"acme-orders": 1, "acme-billing": 1, "partner": 1}


def test_routes_allow_and_deny(gateway, issuers, api):
    orders_token = mint(issuers, "orders-opaque")
    assert_ok_from_upstream(gateway.get("/health", host=ORDERS))
    missing = gateway.get("/orders", host=ORDERS)
    assert (missing.status, missing.body) == (401, '"auth header missing"')
    admin = gateway.get("/admin/users", token=orders_token, host=ORDERS)
    assert admin.status == 403
    assert admin.header("www-authenticate") == 'Bearer error="insufficient_scope", scope="orders:admin"'
    # Billing takes GET only; the rest of billing and unknown hosts match no rule.
    billing_token = mint(issuers, "billing-opaque")
    assert_ok_from_upstream(gateway.get("/invoices", token=billing_token, host=BILLING))
    for method, host, token in [("POST", BILLING, billing_token), ("GET", "shipping.example.com", orders_token),
                                ("GET", "partners.example.com", mint(issuers, "partners-opaque"))]:
        hits_before = api.hits().get(f"{host}/x", 0)
        resp = gateway.get("/x", token=token, host=host, method=method)
        assert (resp.status, resp.json()["error"]) == (403, "access_denied"), (method, host)
        assert api.hits().get(f"{host}/x", 0) == hits_before
    # A role of another project does not count: read:messages in project 1 is not billing's.
    wrong_project_role = gateway.get("/invoices", token=orders_token, host=BILLING)
    assert wrong_project_role.json()["error_description"] == "token is not meant for this API"


def test_claims_become_each_apis_headers(gateway, issuers):
    acme, partner = issuers["acme"], issuers["partner"]
    orders = gateway.get("/orders", token=mint(issuers, "orders-opaque"), host=ORDERS)
    assert_ok_from_upstream(orders)
    assert orders.header("echo-x-auth-org") == acme.ids["org_id"]
    assert orders.header("echo-x-auth-username") == "reader-opaque@demo.localhost"
    assert orders.header("echo-x-auth-roles") == "read:messages"
    billing = gateway.get("/x", token=mint(issuers, "billing-jwt"), host=BILLING)
    assert_ok_from_upstream(billing)
    assert billing.header("echo-x-auth-org") == acme.ids["org_id"]
    assert billing.header("echo-x-auth-username") is None  # billing does not forward it
    partners = gateway.get("/x", token=mint(issuers, "partners-opaque"), host=PARTNERS)
    assert_ok_from_upstream(partners)
    assert partners.header("echo-x-auth-partner-user") == partner.ids["service_users"]["reader-opaque"]["user_id"]
    assert partners.header("echo-x-auth-issuer") == partner.url
    assert partners.header("echo-x-auth-subject") is None
    assert partners.header("echo-x-auth-org") is None
    assert orders.header("echo-x-auth-issuer") is None


FORGED = ["x-auth-org: forged-org", "X-Auth-Org: forged-again", "x-auth-username: root@evil", "x-auth-issuer: evil",
          "x-auth-subject: admin", "x-auth-partner-user: admin", "x-auth-roles: orders:admin"]


@pytest.mark.parametrize("host, path, kind", [
    (ORDERS, "/orders", "orders-opaque"), (BILLING, "/x", "billing-opaque"), (PARTNERS, "/x", "partners-jwt"),
    (ORDERS, "/health", None),
])
def test_forged_claim_headers_never_reach_the_upstream(gateway, issuers, host, path, kind):
    lines = list(FORGED)
    if kind:
        lines.append(f"Authorization: Bearer {mint(issuers, kind)}")
    resp = raw_get(gateway.port, path, lines, host=host)
    assert resp.status == 200, resp
    echoed = {name: value for name, value in resp.headers.items() if name.startswith("echo-x-auth-")}
    for value in echoed.values():
        assert "forged" not in value and "admin" not in value and "evil" not in value, echoed
    if kind is None:
        assert echoed == {}, echoed
    elif host == ORDERS:
        assert echoed["echo-x-auth-org"] == issuers["acme"].ids["org_id"]
