#!/usr/bin/env bash
# Builds the filter's OCI image in the "compat" layout Istio's WasmPlugin reads (an OCI image
# manifest whose one layer, tar+gzip, holds plugin.wasm) and prints its digest: the value for
# the WasmPlugin's `sha256` (Istio compares it with the image manifest's digest).
#
#   scripts/oci-image.sh [--out DIR] [--tag TAG]       default: build/oci, the crate's version
#
# Reproducible: the same .wasm gives the same digest (a USTAR layer written with mtime 0,
# uid/gid 0 and mode 0644; fixed created times), with the same umoci (it gzips the layer;
# tested with Debian bookworm's 0.4.7). The layout is assembled by umoci (Debian package
# umoci); push it with any OCI client, e.g.
#   skopeo copy --preserve-digests oci:build/oci:TAG docker://REGISTRY/oauth-introspection-filter:TAG
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/oci
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: scripts/oci-image.sh [--out DIR] [--tag TAG]" >&2; exit 2 ;;
  esac
done
command -v umoci >/dev/null || { echo "oci-image: umoci is needed (apt-get install umoci)" >&2; exit 1; }

scripts/setup.sh >&2
wasm=target/oauth_introspection_filter.wasm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$wasm" "$work/layer.tar" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:4] == b"\0asm", "not a wasm module"
with tarfile.open(sys.argv[2], "w", format=tarfile.USTAR_FORMAT) as layer:
    entry = tarfile.TarInfo("plugin.wasm")
    entry.size, entry.mtime, entry.mode, entry.uid, entry.gid = len(data), 0, 0o644, 0, 0
    layer.addfile(entry, io.BytesIO(data))
PY

# Replaces an earlier layout at --out, and nothing else.
if [ -e "$out" ]; then
  [ -f "$out/oci-layout" ] || { echo "oci-image: $out exists and is not an OCI layout; not replacing it" >&2; exit 1; }
  rm -rf "$out"
fi
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
history=(--history.created 1970-01-01T00:00:00Z --history.created_by "scripts/oci-image.sh")
umoci config --image "$out:$tag" --created 1970-01-01T00:00:00Z --os wasip1 --architecture wasm \
  --manifest.annotation module.wasm.image/variant=compat "${history[@]}"
umoci raw add-layer --image "$out:$tag" "${history[@]}" "$work/layer.tar"
umoci gc --layout "$out"

digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$out/index.json")
echo "built $out:$tag (.wasm $(stat -c %s "$wasm") bytes)" >&2
echo "WasmPlugin: url: oci://<registry>/oauth-introspection-filter:$tag   sha256: ${digest#sha256:}" >&2
echo "$digest"
