#!/usr/bin/env bash
# Benchmark: a cache-hit request through the filter vs. the same Envoy without
# it, measured in one run on loopback (about a minute). Installs wrk from
# Debian's packages if it is missing. Arguments go to bench/bench.py
# (--seconds N, --rounds N).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "==> installing wrk (Debian package)" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
exec .venv/bin/python bench/bench.py "$@"
