#!/usr/bin/env python3
"""Writes a working Envoy configuration for your API and your ZITADEL, from your values: no
hand edits.

    python3 envoy/configure.py --issuer https://my-org.zitadel.cloud --project-id 123456789012345678 \\
        --key-file ./api-key.json --upstream 127.0.0.1:8080 --rules rules.json --out envoy.yaml

  --issuer URL        your instance's issuer, as ZITADEL writes it in `iss` (https://my-org.zitadel.cloud;
                      http:// only for a self-hosted instance without TLS)
  --project-id ID     the ZITADEL project of the API: the audience tokens must carry, and its role claim
  --key-file PATH     the API application's key file (JSON, type "application") as the console downloads it;
                      checked here, never written into the configuration
  --upstream H:P      where your API listens
  --rules FILE        JSON: the list of rules, or {"rules": [...], "unmatched": "deny"|"public"}
                      (see docs/rules.md); default: every path needs a valid token
  --out FILE          the Envoy configuration to write (- for standard output)
  --listen H:P        where Envoy listens (default 0.0.0.0:10000)
  --admin H:P         Envoy's admin interface (default 127.0.0.1:9901)
  --wasm PATH         the filter's .wasm as Envoy will find it (default /etc/envoy/oauth_introspection_filter.wasm)
  --ca-file PATH      the CAs that sign the issuer's certificate (default: the system's bundle)
  --jwt MODE          introspect (default): every token is asked about at ZITADEL; local: JWT access tokens
                      are verified against ZITADEL's published keys, opaque ones still introspected
                      (docs/configuration.md: a revoked JWT then passes until it expires)

The key reaches the filter from Envoy's environment (ZITADEL_API_KEY_JSON, listed in
`host_env_keys`), so it is in neither the file nor Envoy's admin /config_dump; the command says how
to start Envoy. Runs with the system's python3, nothing else.
"""
import argparse
import json
import os
import sys
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import render  # noqa: E402

KEY_ENV = "ZITADEL_API_KEY_JSON"
EVERY_PATH_AUTHENTICATED = [{"prefix": "/", "access": "authenticated"}]


class Problem(Exception):
    """A value the configuration cannot be written from; the message names it."""


def host_port(text, option):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Problem(f"{option} must be HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return host.strip("[]"), int(port)


def issuer_parts(url):
    """(scheme, host, port) of the issuer URL, as ZITADEL writes it (no path, no trailing /)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or url.endswith("/"):
        raise Problem(f"--issuer must be the instance's URL as ZITADEL writes it, e.g. https://my-org.zitadel.cloud "
                      f"(got {url!r})")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def read_key_file(path):
    """The API application key file's client id; refuses what the filter would refuse."""
    try:
        with open(path) as f:
            key = json.load(f)
    except (OSError, ValueError) as err:
        raise Problem(f"--key-file {path}: {err}") from None
    if not isinstance(key, dict) or not all(isinstance(key.get(k), str) and key[k] for k in
                                            ("type", "keyId", "key", "clientId")):
        if isinstance(key, dict) and key.get("type") == "serviceaccount":
            raise Problem(f"--key-file {path} is a service user's key: the filter needs the key of the project's API "
                          "application (Projects > your project > the API app > Keys), type \"application\"")
        raise Problem(f"--key-file {path} is not a ZITADEL application key file "
                      "(JSON with type, keyId, key, clientId)")
    if key["type"] != "application":
        raise Problem(f"--key-file {path} is of type {key['type']!r}; use the API application's key (\"application\")")
    return key["clientId"]


def read_rules(path):
    if path is None:
        return EVERY_PATH_AUTHENTICATED, "deny"
    try:
        with open(path) as f:
            rules = json.load(f)
    except (OSError, ValueError) as err:
        raise Problem(f"--rules {path}: {err}") from None
    if isinstance(rules, list):
        return rules, "deny"
    if isinstance(rules, dict) and isinstance(rules.get("rules"), list) and set(rules) <= {"rules", "unmatched"}:
        return rules["rules"], rules.get("unmatched", "deny")
    raise Problem(f"--rules {path} must hold a JSON list of rules, or {{\"rules\": [...], \"unmatched\": ...}}")


def configure(args):
    """The Envoy configuration's text, and the line that starts Envoy with it."""
    scheme, host, port = issuer_parts(args.issuer)
    client_id = read_key_file(args.key_file)
    rules, unmatched = read_rules(args.rules)
    upstream_host, upstream_port = host_port(args.upstream, "--upstream")
    listen_host, listen_port = host_port(args.listen, "--listen")
    admin_host, admin_port = host_port(args.admin, "--admin")
    authority = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
    plugin = {
        "issuer": args.issuer,
        "introspection": {"cluster": "zitadel", "authority": authority, "timeout_ms": 2000},
        "project_id": args.project_id,
        "client_auth": {"method": "private_key_jwt", "key_env": KEY_ENV},
        "rules": rules,
        "unmatched": unmatched,
    }
    if args.jwt == "local":
        plugin["jwt"] = {"mode": "local"}
    dns = any(c.isalpha() for c in host) and ":" not in host
    cluster = render.issuer_cluster("zitadel", host, port, "STRICT_DNS" if dns else "STATIC",
                                    tls_name=host if scheme == "https" else None, ca_file=args.ca_file)
    text = render.render(
        "local", plugin=plugin, clusters=[cluster], WASM_PATH=args.wasm, HOST_ENV_KEYS=KEY_ENV,
        ADMIN_ADDRESS=admin_host, ADMIN_PORT=admin_port, LISTEN_ADDRESS=listen_host, LISTEN_PORT=listen_port,
        API_HOST=upstream_host, API_PORT=upstream_port,
        CLUSTER_TYPE="STRICT_DNS" if any(c.isalpha() for c in upstream_host) else "STATIC")
    header = (f"# Envoy for {args.issuer}, project {args.project_id}, API app client {client_id}: written by\n"
              f"# envoy/configure.py. Start it with the key in its environment:\n"
              f"#   {KEY_ENV}=\"$(cat {args.key_file})\" envoy -c THIS_FILE\n")
    return header + text, f"{KEY_ENV}=\"$(cat {args.key_file})\" envoy -c {args.out}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--project-id", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rules")
    parser.add_argument("--out", required=True)
    parser.add_argument("--listen", default="0.0.0.0:10000")
    parser.add_argument("--admin", default="127.0.0.1:9901")
    parser.add_argument("--wasm", default="/etc/envoy/oauth_introspection_filter.wasm")
    parser.add_argument("--ca-file", default=render.SYSTEM_CA_BUNDLE)
    parser.add_argument("--jwt", choices=["introspect", "local"], default="introspect")
    args = parser.parse_args(argv)
    if not args.project_id.isalnum():
        parser.error(f"--project-id must be the ZITADEL project's id, digits (got {args.project_id!r})")
    try:
        text, start = configure(args)
    except Problem as problem:
        parser.error(str(problem))
    if args.out == "-":
        sys.stdout.write(text)
        return
    with open(args.out, "w") as f:
        f.write(text)
    key = f"{KEY_ENV}=\"$(cat {args.key_file})\""
    print(f"wrote {args.out}. Check the credentials at your ZITADEL (scripts/setup.sh builds check-config):\n"
          f"  {key} target/release/check-config --probe {args.out}\n"
          f"then start Envoy with the API app's key in its environment:\n  {start}", file=sys.stderr)


if __name__ == "__main__":
    main()
