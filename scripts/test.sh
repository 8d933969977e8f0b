#!/usr/bin/env bash
# Runs every test: formatting, lints, host unit tests, then the end-to-end
# suite against the real Envoy with the real .wasm (which also runs the demo
# script once in --check mode), then the core end-to-end tests on the older
# Envoy releases of scripts/envoys.sh. Installs what it needs first
# (scripts/setup.sh, scripts/envoys.sh). Arguments go to pytest, and then only
# the newest Envoy runs: scripts/test.sh -k gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --quiet --all-targets --all-features -- -D warnings
echo "==> unit tests (host)"
cargo test --quiet
echo "==> end-to-end tests (Envoy $(.venv/bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1))"
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"

if [ $# -eq 0 ]; then
  # The core of the suite: requests, tokens, coalescing, failures, many issuers, the host and path
  # corpora (where each spelling went), token types, JWTs verified locally, an MCP client, an issuer
  # outage bridged, dry runs and CORS, HTTPS issuers, live configuration (ECDS), remote code,
  # and the check that no log of the run holds a secret.
  core=(test_filter_in_envoy.py test_authorization_header.py test_coalescing.py test_issuer_failures.py
        test_gateway.py test_host_corpus.py test_path_readers.py test_token_types.py test_local_jwt.py
        test_mcp.py test_stale_if_error.py test_dry_run_and_cors.py test_tls_issuer.py
        test_two_plugins.py test_live_config.py test_remote_code.py test_zz_no_secrets_in_logs.py)
  envoys=$(scripts/envoys.sh)  # fails the run if an Envoy cannot be installed
  while IFS= read -r envoy; do
    echo "==> core end-to-end tests on Envoy $("$envoy" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1)"
    ENVOY_BIN="$envoy" .venv/bin/python -m pytest "${core[@]/#/tests/e2e/}" -q -p no:cacheprovider
  done <<< "$envoys"
fi
