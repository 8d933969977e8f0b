"""The committed docker-compose.yml, really run (see compose.py for the engine and the stand-in
images): `up`, wait for Envoy, the checks of `scripts/demo.sh --check` with curl against the
published ports, the API key absent from /config_dump, `down -v`."""
import json
import os
import subprocess
import time

import pytest

from compose import Compose, Engine, Unavailable, elapsed, skip_unless_required
from stack import COUNTER_FLUSH_WAIT, LOG_FILES, RESPONSES, SECRETS, free_port, wait_for


@pytest.fixture(scope="module")
def engine(log_dir):
    try:
        engine = Engine(log_dir)
    except Unavailable as why:
        skip_unless_required("docker-compose.yml not run", why)
    yield engine
    engine.stop()


def curl(url, *args):
    """curl's status code for a request, as the demo's check does it."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
                         capture_output=True, text=True, timeout=30).stdout
    RESPONSES.append(f"curl {url} {out}")
    return int(out or 0)


def test_docker_compose_runs_the_demo(engine, log_dir):
    began = time.monotonic()
    images = engine.stand_ins()
    images_ready = elapsed(began)
    ports = {"envoy": free_port(), "admin": free_port(), "issuer": free_port()}
    compose = Compose(engine, "oif-e2e", ports)
    compose("down", "-v", "--remove-orphans", check=False)
    api = f"http://127.0.0.1:{ports['envoy']}"
    admin = f"http://127.0.0.1:{ports['admin']}"
    try:
        up_began = time.monotonic()
        compose("up", "-d")
        # The issuer runs npm ci first; Envoy waits for it to be healthy.
        wait_for(lambda: curl(f"{admin}/ready") == 200, 420, "Envoy in compose to be ready")
        ready = elapsed(up_began)

        def token(user):
            out = compose("exec", "-T", "issuer", "node", "get-token.mjs", "--state-dir", "/state", "--user", user)
            SECRETS.add(out.stdout.strip())
            return out.stdout.strip()

        key_file = json.loads(compose("exec", "-T", "issuer", "cat", "/state/api-app-key.json").stdout)
        key_lines = [line for line in key_file["key"].splitlines() if "-----" not in line and len(line) > 20]
        SECRETS.update(key_lines)
        reader, reader_jwt, no_role = token("reader-opaque"), token("reader-jwt"), token("plain-opaque")
        assert reader_jwt.count(".") == 2
        # scripts/demo.sh --check, against the published ports.
        checks = [
            (200, "/public", None), (200, "/api/public", None), (401, "/api/private", None),
            (200, "/api/private", reader), (200, "/api/private-scoped", reader_jwt),
            (403, "/api/private-scoped", no_role), (401, "/api/private", "not-a-token"),
        ]
        for want, path, bearer in checks:
            args = ["-H", f"Authorization: Bearer {bearer}"] if bearer else []
            assert curl(f"{api}{path}", *args) == want, (path, want)
        # The issuer is published too, and speaks as ZITADEL does.
        issuer = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports['issuer']}/.well-known/openid-configuration"],
                                capture_output=True, text=True, timeout=30).stdout
        assert json.loads(issuer)["issuer"] == "http://issuer:9000"
        # The key reached the filter through Envoy's environment, not its configuration.
        dump = subprocess.run(["curl", "-s", f"{admin}/config_dump"], capture_output=True, text=True, timeout=30).stdout
        assert "oauth_introspection" in dump and "ZITADEL_API_KEY_JSON" in dump
        assert not any(line in dump for line in key_lines) and "PRIVATE KEY" not in dump
        time.sleep(COUNTER_FLUSH_WAIT)  # the filter hands its counts over once a second
        stats = subprocess.run(["curl", "-s", f"{admin}/stats"], capture_output=True, text=True, timeout=30).stdout
        for counter in ("allowed: 2", "denied.missing_token: 1", "denied.insufficient_role: 1",
                        "denied.invalid_token: 1"):
            assert f"wasmcustom.oauth_introspection.{counter}\n" in stats, (counter, stats[-2000:])
    finally:
        logs_path = os.path.join(log_dir, "compose.log")
        with open(logs_path, "w") as f:
            f.write(compose.logs())
        LOG_FILES.append(logs_path)
        compose("down", "-v", "--remove-orphans", check=False)
    took = elapsed(began)
    with open(os.path.join(log_dir, "compose-timing.txt"), "w") as f:
        f.write(f"images {images} in {images_ready:.0f} s; up to ready {ready:.0f} s; whole test {took:.0f} s\n")
