"""check-config, the operators' check (target/release/check-config, built by scripts/setup.sh):
what a configuration compiles to, in JSON, YAML or an Istio WasmPlugin manifest, and with
--probe whether each issuer takes the filter's credentials, against the local issuer: a good
key, the key file with another app's private key, a service user's key, an unknown client id,
and an unreachable issuer."""
import json
import os

import yaml

from stack import ROOT, check_config, free_port, render


def run(issuer, key_json, *args, config=None):
    plugin = config or render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}")
    return check_config(json.dumps(plugin), dict(os.environ, ZITADEL_API_KEY_JSON=key_json), *args)


def test_a_good_key_is_accepted(issuer):
    check = run(issuer, issuer.api_key_json, "--probe")
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert f"issuer default: {issuer.url} via cluster issuer (127.0.0.1:{issuer.port}/oauth/v2/introspect), " \
           f"client {issuer.ids['api_client_id']} (private_key_jwt)" in lines
    assert "rule 4: any host, path /api/private-scoped, any method -> api default, a role of read:messages" in lines
    assert "unmatched -> deny" in lines
    assert "probe issuer default: credentials accepted" in lines and lines[-1] == "ok"


def test_another_apps_private_key_is_rejected_in_the_issuers_words(issuer):
    key = json.loads(issuer.api_key_json)
    key["key"] = json.loads(issuer.other_api_key_json)["key"]
    check = run(issuer, json.dumps(key), "--probe")
    assert check.returncode == 1
    assert "probe issuer default: credentials rejected: the issuer answered HTTP 401: invalid_client" in check.stdout


def test_an_unknown_client_id_is_rejected(issuer):
    key = json.loads(issuer.api_key_json)
    key["clientId"] = "999999999999999999@demo"
    check = run(issuer, json.dumps(key), "--probe")
    assert check.returncode == 1
    assert "credentials rejected: the issuer answered HTTP 401: invalid_client" in check.stdout


def test_a_service_users_key_fails_before_any_probe(issuer):
    with open(os.path.join(issuer.state_dir, issuer.ids["service_user_key_file"])) as f:
        service_user_key = f.read()
    check = run(issuer, service_user_key, "--probe")
    assert check.returncode == 1 and "probe" not in check.stdout
    assert "`client_auth.key_env (ZITADEL_API_KEY_JSON).type`" in check.stderr
    assert "use an API application key" in check.stderr


def test_an_unreachable_issuer_is_reported(issuer):
    check = run(issuer, issuer.api_key_json, "--probe", "--url", f"http://127.0.0.1:{free_port()}")
    assert check.returncode == 1
    assert "probe issuer default: credentials not checked: could not reach http://127.0.0.1:" in check.stdout


def test_without_probe_only_the_configuration_is_checked(issuer):
    check = run(issuer, issuer.api_key_json, config=render.plugin_config("http://127.0.0.1:1", "127.0.0.1:1"))
    assert check.returncode == 0 and "probe" not in check.stdout


def test_yaml_and_wasmplugin_manifests_are_read(issuer, tmp_path):
    plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}")
    env = dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json)
    as_yaml = check_config(yaml.safe_dump(plugin), env)
    assert as_yaml.returncode == 0 and "issuer default:" in as_yaml.stdout, as_yaml.stderr
    manifests = yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key"}},
        {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": {"name": "orders"},
         "spec": {"pluginConfig": plugin}},
    ])
    check = check_config(manifests, env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("== WasmPlugin orders\n")
    broken = dict(plugin, rules=[])
    bad = check_config(yaml.safe_dump({"kind": "WasmPlugin", "metadata": {"name": "x"},
                                       "spec": {"pluginConfig": broken}}), env)
    assert bad.returncode == 1 and "`rules`: must list at least one rule" in bad.stderr


def test_the_shipped_gateway_example_is_described(issuer):
    with open(os.path.join(ROOT, "envoy", "gateway.json")) as f:
        gateway = json.load(f)
    env = dict(os.environ, **{name: issuer.api_key_json for name in
                              ("ACME_ORDERS_API_KEY", "ACME_BILLING_API_KEY", "PARTNER_API_KEY")})
    check = check_config(json.dumps(gateway), env)
    assert check.returncode == 0, check.stderr
    assert "rule 2: virtual host orders, any host, prefix /admin, any method -> api orders, a role of orders:admin" \
        in check.stdout.splitlines()


def test_the_readmes_minimal_configuration_loads(issuer):
    with open(os.path.join(ROOT, "envoy", "minimal.json")) as f:
        minimal = f.read()
    check = check_config(minimal, dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json))
    assert check.returncode == 0, check.stderr
    assert "api default: audiences 123456789012345678; issuers default;" in check.stdout
    assert "rule 2: any host, prefix /admin, any method -> api default, a role of admin" in check.stdout


def test_the_mcp_pages_configuration_loads(issuer):
    with open(os.path.join(ROOT, "envoy", "mcp.json")) as f:
        mcp = f.read()
    check = check_config(mcp, dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json))
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert "api mcp: audiences 123456789012345678, https://mcp.example.com/mcp; issuers zitadel;" \
        " forwards x-auth-subject, x-auth-client-id, x-auth-roles" in lines
    assert "api mcp: resource https://mcp.example.com/mcp, its metadata served at " \
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" in lines
    assert "api mcp: CORS preflights pass without a token" in lines
