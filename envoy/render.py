#!/usr/bin/env python3
"""Renders envoy/envoy.yaml.in into a runnable Envoy config: the demo's, docker compose's and the
tests'. For your own API and ZITADEL, use envoy/configure.py.

    python3 envoy/render.py --profile local --out build/envoy.yaml [--wasm PATH]
    python3 envoy/render.py --profile local --out build/envoy.yaml --issuer-tls-name localhost --issuer-ca ca.pem
    python3 envoy/render.py --profile docker --out envoy/envoy.docker.yaml

The tests import `render()` and `plugin_config()` to build variants.
"""
import argparse
import json
import os
import string
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WASM_BUILD_PATH = os.path.join(ROOT, "target", "oauth_introspection_filter.wasm")

# The demo issuer's fixed ids (demo/issuer/ids.json has them too).
PROJECT_ID = "300000000000000001"

PROFILES = {
    "local": dict(
        ADMIN_ADDRESS="127.0.0.1", ADMIN_PORT=9901, LISTEN_ADDRESS="127.0.0.1", LISTEN_PORT=10000,
        API_HOST="127.0.0.1", API_PORT=8000, ISSUER_HOST="127.0.0.1", ISSUER_PORT=9000,
        CLUSTER_TYPE="STATIC", WASM_PATH=WASM_BUILD_PATH,
        HOST_ENV_KEYS="ZITADEL_API_KEY_JSON, INTROSPECTION_CLIENT_SECRET", ACCESS_LOG="/dev/stdout",
    ),
    "docker": dict(
        ADMIN_ADDRESS="0.0.0.0", ADMIN_PORT=9901, LISTEN_ADDRESS="0.0.0.0", LISTEN_PORT=10000,
        API_HOST="api", API_PORT=8000, ISSUER_HOST="issuer", ISSUER_PORT=9000,
        CLUSTER_TYPE="STRICT_DNS", WASM_PATH="/etc/envoy/oauth_introspection_filter.wasm",
        HOST_ENV_KEYS="ZITADEL_API_KEY_JSON, INTROSPECTION_CLIENT_SECRET", ACCESS_LOG="/dev/stdout",
    ),
}


def demo_rules():
    return [
        {"path": "/public", "access": "public"},
        {"prefix": "/api/public", "access": "public"},
        {"path": "/protected", "access": "authenticated"},
        {"path": "/api/private-scoped", "access": "roles", "roles": ["read:messages"]},
        {"prefix": "/api/private", "access": "authenticated"},
    ]


def plugin_config(issuer_url, issuer_authority, **overrides):
    """The filter configuration the demo uses; keyword arguments replace top-level members."""
    config = {
        "issuer": issuer_url,
        "introspection": {
            "cluster": "issuer",
            "authority": issuer_authority,
            "path": "/oauth/v2/introspect",
            "timeout_ms": 2000,
        },
        "audiences": [PROJECT_ID],
        "project_id": PROJECT_ID,
        "client_auth": {"method": "private_key_jwt", "key_env": "ZITADEL_API_KEY_JSON"},
        "cache": {"slots": 8192, "max_ttl_seconds": 300},
        "identity_headers": {"subject": "x-auth-subject", "client_id": "x-auth-client-id", "roles": "x-auth-roles"},
        "rules": demo_rules(),
        "unmatched": "deny",
    }
    config.update(overrides)
    return config


# Debian's and Ubuntu's bundle of the system's trusted CAs (the official Envoy image is Ubuntu).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def issuer_cluster(name, host, port, cluster_type="STATIC", tls_name=None, ca_file=SYSTEM_CA_BUNDLE):
    """An issuer's cluster, as YAML lines for the template's cluster list. With `tls_name`, the
    calls go over TLS: SNI `tls_name`, the certificate checked against `ca_file` (the system's
    CAs by default) and required to name `tls_name` (a DNS subject alternative name)."""
    # A name that resolves to both families (localhost, say) is reached over IPv4 first.
    family = "\n    dns_lookup_family: V4_PREFERRED" if cluster_type == "STRICT_DNS" else ""
    cluster = f"""\
  - name: {name}
    type: {cluster_type}{family}
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {host}, port_value: {port} }}"""
    if tls_name is None:
        return cluster
    return cluster + f"""
    # HTTPS: SNI, the issuer's certificate checked against the trusted CAs, and its name.
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {tls_name}
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: {ca_file} }}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{ exact: {tls_name} }}"""


def render(profile="local", plugin=None, raw_plugin_text=None, clusters=None, **values):
    """Returns the Envoy YAML. `plugin` is a dict, or `raw_plugin_text` any text (for invalid-config tests);
    `clusters` a list of issuer_cluster() texts, by default the one `issuer` cluster."""
    params = dict(PROFILES[profile])
    params.update(values)
    tls_name = params.pop("ISSUER_TLS_NAME", None)
    ca_file = params.pop("ISSUER_CA", SYSTEM_CA_BUNDLE)
    host, port = params["ISSUER_HOST"], params["ISSUER_PORT"]
    if clusters is None:
        clusters = [issuer_cluster("issuer", host, port, params["CLUSTER_TYPE"], tls_name=tls_name, ca_file=ca_file)]
    params["ISSUER_CLUSTERS"] = "\n".join(clusters)
    if raw_plugin_text is None:
        if plugin is None and tls_name:
            origin = tls_name if str(port) == "443" else f"{tls_name}:{port}"  # as `iss` writes it
            plugin = plugin_config(f"https://{origin}", origin)
        elif plugin is None:
            plugin = plugin_config(f"http://{host}:{port}", f"{host}:{port}")
        raw_plugin_text = json.dumps(plugin, indent=2)
    params["PLUGIN_CONFIG"] = "\n".join("                    " + line for line in raw_plugin_text.splitlines())
    with open(os.path.join(HERE, "envoy.yaml.in")) as f:
        return string.Template(f.read()).substitute(params)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=sorted(PROFILES), default="local")
    parser.add_argument("--out", required=True)
    parser.add_argument("--wasm", help="path of the .wasm (local profile)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="override template values, e.g. ENVOY_PORT=10001 ISSUER_PORT=9001")
    parser.add_argument("--issuer-tls-name", help="reach the issuer over HTTPS, at https://NAME:ISSUER_PORT")
    parser.add_argument("--issuer-ca", default=SYSTEM_CA_BUNDLE, help="CA file for the HTTPS issuer (default: the system's)")
    args = parser.parse_args()
    values = {"WASM_PATH": os.path.abspath(args.wasm)} if args.wasm else {}
    aliases = {"ENVOY_PORT": "LISTEN_PORT"}
    for item in args.set:
        name, _, value = item.partition("=")
        values[aliases.get(name, name)] = value
    if args.issuer_tls_name:
        values.update(ISSUER_TLS_NAME=args.issuer_tls_name, ISSUER_CA=os.path.abspath(args.issuer_ca))
    text = render(args.profile, **values)
    if args.out == "-":
        sys.stdout.write(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
