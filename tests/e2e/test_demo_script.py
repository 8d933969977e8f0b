"""The README's demo command works: it starts everything and its curl lines answer as printed."""
import os
import subprocess

from conftest import ROOT, free_port


def test_demo_script_check_mode(tmp_path):
    env = dict(os.environ, ENVOY_PORT=str(free_port()), ADMIN_PORT=str(free_port()),
               ISSUER_PORT=str(free_port()), API_PORT=str(free_port()), DEMO_STATE_DIR=str(tmp_path))
    result = subprocess.run(["scripts/demo.sh", "--check"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo check: all curl lines answered as printed" in result.stdout
    assert result.stdout.count("curl -i -H \"Authorization: Bearer ") == 4
