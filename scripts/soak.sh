#!/usr/bin/env bash
# Soak run: about two minutes of mixed traffic (valid, role-less, random, never-seen
# and revoked tokens) through the real Envoy with the filter, on loopback. Checks every
# verdict, counts 5xx and issuer calls, samples Envoy's RSS; exits non-zero on any
# wrong verdict or 5xx. Arguments go to tests/soak/soak.py (--seconds N, --clients N,
# --ttl N, --slots N).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python tests/soak/soak.py "$@"
