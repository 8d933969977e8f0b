#!/usr/bin/env bash
# The long fuzz run: every property in tests/fuzz.rs (config parser and its
# error locator, introspection response parser, JWKS and JWT header readers,
# Authorization header parser, path canonicalizer, cache-entry decoder) with FUZZ_CASES cases each, default one
# million. `cargo test` (and so scripts/test.sh) runs the same properties with
# 2,000 cases each.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_CASES="${FUZZ_CASES:-1000000}"
echo "==> fuzzing: $FUZZ_CASES cases per property (profile fuzz)"
start=$(date +%s)
cargo test --quiet --profile fuzz --test fuzz -- --test-threads 2 "$@"
echo "==> $FUZZ_CASES cases per property passed in $(( $(date +%s) - start )) s"
