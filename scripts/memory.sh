#!/usr/bin/env bash
# Memory run: one million distinct tokens through the filter (every one a cache
# miss answered by a stub issuer), Envoy's RSS before, during and after, next to
# the cache's documented bound. About 4 minutes on 2 cores; writes
# bench/memory-results.md. Arguments go to bench/memory.py (--tokens N for a
# shorter run, --connections N; --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "==> installing wrk (Debian package)" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
exec .venv/bin/python bench/memory.py "$@"
