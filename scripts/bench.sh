#!/usr/bin/env bash
# Benchmark (the issue "Speed at scale"): no filter, an empty proxy-wasm filter,
# this filter on a cache hit, Envoy's native jwt_authn, this filter on a cache
# miss, and 64 concurrent requests per new token, all against one Envoy in one
# run (about 3 minutes on 2 cores). Writes bench/results.md and bench/results.png.
# Arguments go to bench/bench.py (--rounds N, --seconds N, --miss-tokens N, ...;
# --help lists them). Installs wrk from Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

scripts/setup.sh

say "building the empty filter (bench/empty-filter, wasm32-wasip1, release)"
cargo build --quiet --release --target wasm32-wasip1 --manifest-path bench/empty-filter/Cargo.toml \
  --target-dir target/empty-filter
# The same wasm-opt pass as the filter's, so (b) is the floor of a like-built module.
empty=target/empty-filter/wasm32-wasip1/release/empty_filter.wasm
if [ ! -f target/empty_filter.wasm ] || [ "$empty" -nt target/empty_filter.wasm ]; then
  scripts/wasm-opt.sh "$empty" target/empty_filter.wasm
fi

bench_stamp=".venv/.bench-requirements.sha256"
bench_hash=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$bench_stamp" 2>/dev/null)" != "$bench_hash" ]; then
  say "installing the benchmark's plotting library into .venv (bench/requirements.txt)"
  .venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
  echo "$bench_hash" > "$bench_stamp"
fi

if ! command -v wrk >/dev/null; then
  say "installing wrk (Debian package)"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

if [ "${1:-}" = "--hit" ]; then
  shift
  exec .venv/bin/python bench/hit.py "$@"
fi
exec .venv/bin/python bench/bench.py "$@"
