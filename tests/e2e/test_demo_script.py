"""The README's demo command works: it starts everything and its curl lines answer as printed,
with the issuer over plain HTTP and over HTTPS (--tls)."""
import os
import subprocess

import pytest

from conftest import ROOT, free_port


@pytest.mark.parametrize("flags", [[], ["--tls"]], ids=["http-issuer", "https-issuer"])
def test_demo_script_check_mode(tmp_path, flags):
    env = dict(os.environ, ENVOY_PORT=str(free_port()), ADMIN_PORT=str(free_port()),
               ISSUER_PORT=str(free_port()), API_PORT=str(free_port()), DEMO_STATE_DIR=str(tmp_path))
    result = subprocess.run(["scripts/demo.sh", "--check", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo check: all curl lines answered as printed" in result.stdout
    assert result.stdout.count("curl -i -H \"Authorization: Bearer ") == 4
    scheme = "https://localhost:" if flags else "http://127.0.0.1:"
    assert f"the issuer is {scheme}{env['ISSUER_PORT']}" in result.stdout
    if flags:
        envoy_yaml = (tmp_path / "envoy.yaml").read_text()
        assert "UpstreamTlsContext" in envoy_yaml and "sni: localhost" in envoy_yaml
