"""One gateway, three services: the shipped example (envoy/gateway.json) run in the real Envoy
against two local issuers shaped like two ZITADEL instances.

  acme     instance 1 (ids 3000…): project 300000000000000001 (orders) and
           300000000000000009 (billing); answers for any audience, like a generic RFC 7662
           issuer, so the filter's own audience checks are what keeps the projects apart
  partner  instance 2 (ids 4000…): project 400000000000000001 (partners); answers active
           only to an API app whose project is in the token's aud, as ZITADEL does

The example is loaded as it is; only the issuer URLs are swapped for the local ones, and its
clusters (zitadel_acme, zitadel_partner) point at them.
"""
import json
import os

from stack import ROOT, render

GATEWAY_JSON = os.path.join(ROOT, "envoy", "gateway.json")
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


def start_gateway(envoy_factory, acme, partner, name, plugin=None, **kwargs):
    return envoy_factory(name, raw_plugin_text=json.dumps(plugin or gateway_plugin(acme, partner)),
                         issuer_clusters=gateway_clusters(acme, partner), env=gateway_env(acme, partner),
                         template_values={"HOST_ENV_KEYS": KEY_ENVS}, **kwargs)
