"""Istio: the filter's OCI image (scripts/oci-image.sh) and the manifests in deploy/istio/.

The image: built twice from one .wasm, the same digest; pushed to a local registry (Debian's
docker-registry) and pulled back with skopeo, the same bytes and the same manifest digest,
in the layout Istio's image fetcher reads. The manifests: validated with the models of
Istio's and Kubernetes' schemas (PyPI cloudcoil-models-istio, cloudcoil-models-kubernetes),
every field known to them, consistent with each other, and the WasmPlugin's pluginConfig
accepted by the filter's own configuration check (src/bin/check-config.rs). No Kubernetes
cluster runs here: the manifests are checked, not applied."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from compose import skip_unless_required
from stack import ROOT, WASM, Process, check_config, free_port, wait_for

ISTIO = os.path.join(ROOT, "deploy", "istio")


def require(*tools):
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        skip_unless_required("OCI image not checked",
                             f"{', '.join(missing)} not installed (Debian packages umoci, skopeo, docker-registry)")


def build_image(out, tag="test"):
    result = subprocess.run(["scripts/oci-image.sh", "--out", out, "--tag", tag], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=True)
    return result.stdout.strip()


def blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.removeprefix("sha256:")), "rb") as f:
        data = f.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def plugin_wasm(layout, manifest_digest):
    """What Istio's fetcher does with a compat image: the last layer, tar+gzip, its plugin.wasm."""
    manifest = json.loads(blob(layout, manifest_digest))
    layers = manifest["layers"]
    assert len(layers) == 1 and layers[-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layout, layers[-1]["digest"])))) as layer:
        names = layer.getnames()
        assert names == ["plugin.wasm"], names
        return layer.extractfile("plugin.wasm").read()


@pytest.fixture(scope="module")
def registry(log_dir):
    require("umoci", "skopeo", "docker-registry")
    port = free_port()
    config = os.path.join(log_dir, "registry.yml")
    with open(config, "w") as f:
        yaml.safe_dump({"version": 0.1, "log": {"level": "warn"},
                        "storage": {"filesystem": {"rootdirectory": os.path.join(log_dir, "registry-data")}},
                        "http": {"addr": f"127.0.0.1:{port}"}}, f)
    process = Process("registry", ["docker-registry", "serve", config], log_dir)
    try:
        url = f"http://127.0.0.1:{port}/v2/"
        wait_for(lambda: subprocess.run(["curl", "-sf", url], capture_output=True).returncode == 0, 20, "the registry")
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


def test_oci_image_is_reproducible_and_survives_a_registry(registry, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    digest = build_image(first)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert build_image(second) == digest, "same .wasm, same digest"
    with open(WASM, "rb") as f:
        wasm = f.read()
    assert plugin_wasm(first, digest) == wasm

    ref = f"docker://{registry}/oauth-introspection-filter:test"
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false", f"oci:{first}:test", ref],
                   check=True, capture_output=True, timeout=120)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], check=True, capture_output=True,
                         timeout=60).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest, "the registry serves the same manifest"
    pulled = str(tmp_path / "pulled")
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{pulled}:test"], check=True,
                   capture_output=True, timeout=120)
    with open(os.path.join(pulled, "index.json")) as f:
        pulled_digest = json.load(f)["manifests"][0]["digest"]
    assert pulled_digest == digest
    assert plugin_wasm(pulled, pulled_digest) == wasm


# ---- the manifests ----

def documents():
    docs = {}
    for name in sorted(os.listdir(ISTIO)):
        if name.endswith(".yaml"):
            with open(os.path.join(ISTIO, name)) as f:
                for doc in yaml.safe_load_all(f):
                    docs[(name, doc.get("kind", "patch"))] = doc
    return docs


def model(kind):
    from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin
    from cloudcoil.models.istio.networking.v1 import DestinationRule, ServiceEntry
    from cloudcoil.models.kubernetes.core.v1 import Secret

    return {"WasmPlugin": WasmPlugin, "ServiceEntry": ServiceEntry, "DestinationRule": DestinationRule,
            "Secret": Secret}[kind]


def test_istio_manifests_follow_the_schemas():
    docs = documents()
    assert {kind for _, kind in docs} == {"WasmPlugin", "ServiceEntry", "DestinationRule", "Secret", "patch"}
    for (name, kind), doc in docs.items():
        if kind == "patch":
            continue
        parsed = model(kind).model_validate(doc)
        # The models drop fields they do not know: a dump equal to the file means none was unknown.
        assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == doc, name


def test_istio_manifests_agree_with_each_other_and_the_filter():
    docs = {kind: doc for (_, kind), doc in documents().items()}
    plugin, entry, rule = docs["WasmPlugin"]["spec"], docs["ServiceEntry"]["spec"], docs["DestinationRule"]["spec"]
    assert (plugin["phase"], plugin["failStrategy"]) == ("AUTHN", "FAIL_CLOSE")
    assert plugin["url"].startswith("oci://")
    config = plugin["pluginConfig"]
    issuer = config["issuers"]["zitadel"]
    host = entry["hosts"][0]
    assert issuer["introspection"]["cluster"] == f"outbound|443||{host}"
    assert issuer["issuer"] == f"https://{host}" and rule["host"] == host
    tls = rule["trafficPolicy"]["portLevelSettings"][0]
    assert tls["port"]["number"] == 443 == entry["ports"][0]["number"]
    # Plain HTTP leaves Envoy and the DestinationRule originates TLS; both stay in the
    # gateway's namespace, so workloads elsewhere that speak TLS to ZITADEL themselves are untouched.
    assert entry["ports"][0]["protocol"] == "HTTP"
    assert entry["exportTo"] == rule["exportTo"] == ["."]
    assert tls["tls"] == {"mode": "SIMPLE", "sni": host, "subjectAltNames": [host]}
    # The key: Secret -> the gateway's environment -> vmConfig.env -> client_auth.key_env.
    variable = issuer["client_auth"]["key_env"]
    assert plugin["vmConfig"]["env"] == [{"name": variable, "valueFrom": "HOST"}]
    env = docs["patch"]["spec"]["template"]["spec"]["containers"][0]
    assert env["name"] == "istio-proxy"
    secret = docs["Secret"]
    assert env["env"] == [{"name": variable, "valueFrom": {"secretKeyRef": {
        "name": secret["metadata"]["name"], "key": next(iter(secret["stringData"]))}}}]

    # The pluginConfig as Istio hands it to the filter (JSON), through the filter's own check,
    # with a key file of the shape ZITADEL's console downloads in the variable.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    key_file = {"type": "application", "keyId": "1", "key": key.decode(), "appId": "2", "clientId": "3@orders"}
    check = check_config(json.dumps(config), dict(os.environ, **{variable: json.dumps(key_file)}))
    assert check.returncode == 0, check.stderr
    assert f"issuer zitadel: https://{host} via cluster outbound|443||{host}" in check.stdout
    assert check.stdout.strip().endswith("ok")
    # And without the variable, the load would fail naming the field.
    check = check_config(json.dumps(config), {k: v for k, v in os.environ.items() if k != variable})
    assert check.returncode == 1
    assert "`issuers.zitadel.client_auth.key_env`" in check.stderr
