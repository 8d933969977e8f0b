#!/usr/bin/env bash
# wasm-opt -Oz IN -> OUT with the features rustc's wasm32-wasip1 output uses
# (wasm-opt refuses them unless enabled). binaryen comes from tools/ (setup.sh).
set -euo pipefail
in=$1 out=$2
"$(dirname "$0")/../tools/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-sign-ext \
  --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
  "$in" -o "$out.tmp"
mv "$out.tmp" "$out"
