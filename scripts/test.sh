#!/usr/bin/env bash
# Runs every test: formatting, lints, host unit tests, then the end-to-end
# suite against the real Envoy with the real .wasm (which also runs the demo
# script once in --check mode). Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings
echo "==> unit tests (host)"
cargo test --quiet
echo "==> end-to-end tests (Envoy $(.venv/bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1))"
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
