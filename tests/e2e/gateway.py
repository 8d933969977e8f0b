"""One gateway, three services: the shipped example (envoy/gateway.json) run in the real Envoy
against two local issuers shaped like two ZITADEL instances.

  acme     instance 1 (ids 3000…): project 300000000000000001 (orders) and
           300000000000000009 (billing); answers for any audience, like a generic RFC 7662
           issuer, so the filter's own audience checks are what keeps the projects apart
  partner  instance 2 (ids 4000…): project 400000000000000001 (partners); answers active
           only to an API app whose project is in the token's aud, as ZITADEL does

The example is loaded as it is; only the issuer URLs are swapped for the local ones, and its
clusters (zitadel_acme, zitadel_partner) point at them. Its Envoy side, envoy/gateway-routes.yaml
(one virtual host per service, which the rules name), is loaded as it is too: each virtual host
also tags what it routes (`x-routed-vhost`, echoed by the demo API), and every service's cluster
is the demo API.
"""
import json
import os

import yaml

from stack import ROOT, first_hcm, render

GATEWAY_JSON = os.path.join(ROOT, "envoy", "gateway.json")
GATEWAY_ROUTES = os.path.join(ROOT, "envoy", "gateway-routes.yaml")
# The hosts each virtual host of gateway-routes.yaml serves, for rules that name hosts instead.
VHOST_DOMAINS = {"orders": ["orders.example.com"], "billing": ["billing.example.com"],
                 "partners": ["*.partners.example.com"]}
ACME_URL = "https://acme.zitadel.cloud"
PARTNER_URL = "https://partner.zitadel.cloud"
KEY_ENVS = "ACME_ORDERS_API_KEY, ACME_BILLING_API_KEY, PARTNER_API_KEY"
# Asks ZITADEL for the claims the example forwards: username (profile) and the organization.
CLAIM_SCOPE = "openid profile urn:zitadel:iam:user:resourceowner"

ORDERS, BILLING, PARTNERS = "orders.example.com", "billing.example.com", "eu.partners.example.com"


def gateway_plugin(acme, partner, **overrides):
    with open(GATEWAY_JSON) as f:
        plugin = json.load(f)
    urls = {ACME_URL: acme.url, PARTNER_URL: partner.url}
    for issuer in plugin["issuers"].values():
        issuer["issuer"] = urls[issuer["issuer"]]
    plugin.update(overrides)
    return plugin


def gateway_clusters(acme, partner):
    """The example's two issuer clusters, pointed at the local issuers."""
    return [render.issuer_cluster("zitadel_acme", "127.0.0.1", acme.port),
            render.issuer_cluster("zitadel_partner", "127.0.0.1", partner.port)]


def gateway_env(acme, partner):
    """The variables of KEY_ENVS: each API app's key file."""
    return {"ACME_ORDERS_API_KEY": acme.api_key_json, "ACME_BILLING_API_KEY": acme.other_api_key_json,
            "PARTNER_API_KEY": partner.api_key_json}


def with_host_rules(plugin, more_domains=None):
    """The plugin with each rule's `virtual_host` replaced by the hosts that virtual host serves
    (VHOST_DOMAINS and `more_domains`), one rule per host: the example as it would be written
    for a filter that reads hosts rather than Envoy's routing."""
    domains = dict(VHOST_DOMAINS, **(more_domains or {}))
    rules = []
    for rule in plugin["rules"]:
        rule = dict(rule)
        if "path" not in rule and "prefix" not in rule:
            rule["prefix"] = "/"
        rules += [dict(rule, host=host) for host in domains[rule.pop("virtual_host")]]
    return dict(plugin, rules=rules)


def gateway_routes(strip=True, extra_vhosts=()):
    """edit_config: envoy/gateway-routes.yaml as the route configuration, with `extra_vhosts`
    (before the catch-all), each virtual host tagging what it routes, every cluster it names
    pointing at the demo API; with strip=False, without Envoy's host normalization
    (strip_any_host_port, strip_trailing_host_dot)."""
    def edit(text, envoy):
        config = yaml.safe_load(text)
        hcm = first_hcm(config)
        with open(GATEWAY_ROUTES) as f:
            routes = yaml.safe_load(f)
        *services, catch_all = routes["virtual_hosts"]
        routes["virtual_hosts"] = [*services, *extra_vhosts, catch_all]
        api_port = next(c for c in config["static_resources"]["clusters"] if c["name"] == "demo_api")
        for vhost in routes["virtual_hosts"]:
            vhost["request_headers_to_add"] = [{"header": {"key": "x-routed-vhost", "value": vhost["name"]},
                                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
            for route in vhost["routes"]:
                cluster = route["route"]["cluster"]
                if all(c["name"] != cluster for c in config["static_resources"]["clusters"]):
                    config["static_resources"]["clusters"].append(
                        dict(api_port, name=cluster, load_assignment=dict(api_port["load_assignment"],
                                                                          cluster_name=cluster)))
        hcm["route_config"] = routes
        if not strip:
            hcm.pop("strip_any_host_port")
            hcm.pop("strip_trailing_host_dot")
        return yaml.safe_dump(config)
    return edit


def start_gateway(envoy_factory, acme, partner, name, plugin=None, edit_config=None, **kwargs):
    return envoy_factory(name, raw_plugin_text=json.dumps(plugin or gateway_plugin(acme, partner)),
                         issuer_clusters=gateway_clusters(acme, partner), env=gateway_env(acme, partner),
                         template_values={"HOST_ENV_KEYS": KEY_ENVS}, edit_config=edit_config or gateway_routes(),
                         **kwargs)
