"""envoy/configure.py, the one command from a ZITADEL console's values to a working Envoy
configuration: its output passes Envoy's own validation for arbitrary values, refuses the
mistakes it can see (a service user's key, an issuer URL with a path), and runs: against the
local issuer over HTTPS, a token is admitted and a request without one refused (with --jwt
local, a JWT with no introspection call), and check-config --probe finds the credentials
accepted."""
import json
import os
import random
import subprocess
import sys

import pytest

from stack import ENVOY, ROOT, WASM, Issuer, Process, check_config, free_port, http_request, wait_for

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_certs  # noqa: E402

CONFIGURE = os.path.join(ROOT, "envoy", "configure.py")


def configure(*args):
    return subprocess.run([sys.executable, CONFIGURE, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def key_file(issuer, tmp_path_factory):
    path = tmp_path_factory.mktemp("configure") / "api-key.json"
    path.write_text(issuer.api_key_json)
    return str(path)


def test_the_output_for_arbitrary_values_passes_envoys_validation(key_file, tmp_path):
    generator = random.Random(12)
    for i in range(4):
        host = generator.choice(["my-org.zitadel.cloud", f"auth{i}.example.org", "10.1.2.3"])
        port = generator.choice([443, 8443, 9000])
        issuer = f"https://{host}" + ("" if port == 443 else f":{port}")
        rules = generator.choice([
            [{"prefix": "/", "access": "authenticated"}],
            {"rules": [{"path": "/health", "access": "public"},
                       {"prefix": "/admin", "methods": ["GET", "post"], "access": "roles", "roles": ["admin"]}],
             "unmatched": "public"},
        ])
        rules_file = tmp_path / f"rules-{i}.json"
        rules_file.write_text(json.dumps(rules))
        out = tmp_path / f"envoy-{i}.yaml"
        project = str(generator.randrange(10**17, 10**18))
        upstream = generator.choice(["127.0.0.1:8080", "api.internal:80", "[::1]:3000"])
        result = configure("--issuer", issuer, "--project-id", project, "--key-file", key_file, "--upstream", upstream,
                           "--rules", str(rules_file), "--out", str(out), "--wasm", WASM,
                           "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}")
        assert result.returncode == 0, result.stderr
        assert f"target/release/check-config --probe {out}" in result.stderr
        text = out.read_text()
        assert '"project_id": "%s"' % project in text and "PRIVATE KEY" not in text
        validate = subprocess.run([ENVOY, "--mode", "validate", "-c", str(out), "--disable-hot-restart"],
                                  capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, ZITADEL_API_KEY_JSON=open(key_file).read()))
        assert validate.returncode == 0, (issuer, upstream, (validate.stdout + validate.stderr)[-2000:])


@pytest.mark.parametrize("change, message", [
    (("--issuer", "https://my-org.zitadel.cloud/oauth/v2"), "--issuer must be the instance's URL"),
    (("--issuer", "my-org.zitadel.cloud"), "--issuer must be the instance's URL"),
    (("--upstream", "localhost"), "--upstream must be HOST:PORT"),
    (("--project-id", "my project"), "--project-id must be the ZITADEL project's id"),
])
def test_wrong_values_are_refused_naming_them(key_file, tmp_path, change, message):
    args = {"--issuer": "https://my-org.zitadel.cloud", "--project-id": "123", "--key-file": key_file,
            "--upstream": "127.0.0.1:8080", "--out": str(tmp_path / "envoy.yaml")}
    args.update([change])
    result = configure(*[part for pair in args.items() for part in pair])
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "envoy.yaml").exists()


def test_a_service_users_key_is_refused(issuer, tmp_path):
    key = os.path.join(issuer.state_dir, issuer.ids["service_user_key_file"])
    result = configure("--issuer", "https://my-org.zitadel.cloud", "--project-id", "123", "--key-file", key,
                       "--upstream", "127.0.0.1:8080", "--out", str(tmp_path / "envoy.yaml"))
    assert result.returncode == 2 and "is a service user's key" in result.stderr


def test_the_output_runs_against_an_https_issuer(log_dir, tmp_path, api, key_file):
    certs = make_certs.make(os.path.join(log_dir, "configure-certs"), "localhost")
    issuer = Issuer(log_dir, "issuer-configure", tls=(certs["server"], certs["server_key"], certs["ca"]))
    envoy = None
    try:
        key = tmp_path / "key.json"
        key.write_text(issuer.api_key_json)
        rules = tmp_path / "rules.json"
        rules.write_text(json.dumps([{"path": "/public", "access": "public"},
                                     {"prefix": "/", "access": "roles", "roles": ["read:messages"]}]))
        port, admin = free_port(), free_port()
        out = tmp_path / "envoy.yaml"
        result = configure("--issuer", issuer.url, "--project-id", issuer.ids["project_id"], "--key-file", str(key),
                           "--upstream", f"127.0.0.1:{api.port}", "--rules", str(rules), "--out", str(out),
                           "--wasm", WASM, "--ca-file", certs["ca"], "--listen", f"127.0.0.1:{port}",
                           "--admin", f"127.0.0.1:{admin}", "--jwt", "local")
        assert result.returncode == 0, result.stderr
        env = dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json)
        probe = subprocess.run([os.path.join(ROOT, "target", "release", "check-config"), "--probe", "--ca-file",
                                certs["ca"], str(out)], capture_output=True, text=True, timeout=60, env=env)
        assert probe.returncode == 0 and "probe issuer default: credentials accepted" in probe.stdout, \
            probe.stdout + probe.stderr
        envoy = Process("envoy-configured", [ENVOY, "-c", str(out), "--disable-hot-restart"], log_dir, env=env)
        wait_for(lambda: _ready(admin), 30, "the configured Envoy")
        headers = {"Authorization": f"Bearer {issuer.token('reader-opaque')}"}
        assert http_request(port, "/api/x", headers=headers).status == 200
        assert http_request(port, "/api/x").status == 401
        assert http_request(port, "/public").status == 200
        plain = {"Authorization": f"Bearer {issuer.token('plain-opaque')}"}
        assert http_request(port, "/api/x", headers=plain).status == 403
        # --jwt local: a JWT is verified with the keys fetched over the same HTTPS cluster, no introspection.
        introspections = issuer.introspections()
        jwt = {"Authorization": f"Bearer {issuer.token('reader-jwt')}"}
        assert http_request(port, "/api/x", headers=jwt).status == 200
        assert issuer.introspections() == introspections
        assert issuer.key_fetches() == 1
    finally:
        if envoy:
            envoy.stop()
        issuer.stop()


def _ready(admin_port):
    try:
        return http_request(admin_port, "/ready", timeout=1).body.strip() == "LIVE"
    except OSError:
        return False


def test_check_config_reads_the_envoy_configuration_it_writes(key_file, tmp_path, issuer):
    out = tmp_path / "envoy.yaml"
    assert configure("--issuer", "https://my-org.zitadel.cloud", "--project-id", "123", "--key-file", key_file,
                     "--upstream", "127.0.0.1:8080", "--out", str(out)).returncode == 0
    check = check_config(out.read_text(), dict(os.environ, ZITADEL_API_KEY_JSON=issuer.api_key_json))
    assert check.returncode == 0, check.stderr
    assert "== Envoy Wasm plugin oauth_introspection" in check.stdout
    assert "rule 1: any host, prefix /, any method -> api default, any valid token" in check.stdout
