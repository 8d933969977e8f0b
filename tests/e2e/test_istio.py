"""Istio and Envoy Gateway: the filter's OCI image (scripts/oci-image.sh) and the kustomize bases
in deploy/.

The image: built twice from one .wasm, the same digest; pushed to a local registry (Debian's
docker-registry) and pulled back with skopeo, the same bytes and the same manifest digest,
in the layout Istio's image fetcher reads. The manifests: rendered as users apply them, with a
real kustomize (`kubectl kustomize`): deploy/istio/ingress-gateway (Istio's classic ingress
gateway, a pod selector), deploy/istio/gateway-api (a Gateway API gateway, targetRefs) and
deploy/envoy-gateway (an EnvoyExtensionPolicy with the image by digest, the cluster the filter
calls, the proxy's environment). Every rendered object is validated with the models of its
schema (PyPI cloudcoil-models-istio for Istio's, npm @kubernetes-models/envoy-gateway for Envoy
Gateway's, through tests/e2e/k8s/validate.mjs), the objects agree with each other, and each
filter configuration passes the filter's own check (check-config). No Kubernetes cluster runs
here: the manifests are checked, not applied."""
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
from stack import CHECK_CONFIG, ROOT, WASM, Process, check_config, free_port, wait_for

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

DEPLOY = os.path.join(ROOT, "deploy")
OVERLAYS = {"ingress-gateway": os.path.join(ISTIO, "ingress-gateway"), "gateway-api": os.path.join(ISTIO, "gateway-api"),
            "envoy-gateway": os.path.join(DEPLOY, "envoy-gateway")}


def kustomize(overlay):
    if not shutil.which("kubectl"):
        skip_unless_required("manifests not rendered", "kubectl (with kustomize) is not installed")
    out = subprocess.run(["kubectl", "kustomize", OVERLAYS[overlay]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out.stdout)}


def istio_model(kind):
    from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin
    from cloudcoil.models.istio.networking.v1 import DestinationRule, ServiceEntry

    return {"WasmPlugin": WasmPlugin, "ServiceEntry": ServiceEntry, "DestinationRule": DestinationRule}[kind]


def key_env(variable):
    """An environment with a key file of the shape ZITADEL's console downloads in `variable`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    key_file = {"type": "application", "keyId": "1", "key": key.decode(), "appId": "2", "clientId": "3@orders"}
    return dict(os.environ, **{variable: json.dumps(key_file)})


def test_every_manifest_file_has_a_kind():
    for folder, _, files in os.walk(DEPLOY):
        for name in files:
            with open(os.path.join(folder, name)) as f:
                for doc in yaml.safe_load_all(f):
                    assert doc.get("kind"), os.path.join(folder, name)


@pytest.mark.parametrize("overlay", ["ingress-gateway", "gateway-api"])
def test_istio_overlays_render_objects_that_follow_the_schemas(overlay):
    docs = kustomize(overlay)
    assert set(docs) == {"WasmPlugin", "ServiceEntry", "DestinationRule"}
    for kind, doc in docs.items():
        parsed = istio_model(kind).model_validate(doc)
        # The models drop fields they do not know: a dump equal to the file means none was unknown.
        assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == doc, kind


def test_each_istio_overlay_sets_the_namespace_and_the_gateway_in_one_place():
    classic, gateway_api = kustomize("ingress-gateway"), kustomize("gateway-api")
    assert {doc["metadata"]["namespace"] for doc in classic.values()} == {"istio-system"}
    assert {doc["metadata"]["namespace"] for doc in gateway_api.values()} == {"istio-ingress"}
    assert classic["WasmPlugin"]["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert "targetRefs" not in classic["WasmPlugin"]["spec"]
    assert "selector" not in gateway_api["WasmPlugin"]["spec"]
    assert gateway_api["WasmPlugin"]["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "api-gateway"}]


def test_istio_manifests_agree_with_each_other_and_the_filter():
    docs = kustomize("ingress-gateway")
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
    # The key: a Secret -> the gateway's environment (the patch file) -> vmConfig.env -> client_auth.key_env.
    variable = issuer["client_auth"]["key_env"]
    assert plugin["vmConfig"]["env"] == [{"name": variable, "valueFrom": "HOST"}]
    with open(os.path.join(ISTIO, "ingress-gateway", "ingressgateway-env-patch.yaml")) as f:
        patch = yaml.safe_load(f)
    assert (patch["kind"], patch["metadata"]["namespace"]) == ("Deployment", docs["WasmPlugin"]["metadata"]["namespace"])
    [container] = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "istio-proxy"
    assert container["env"] == [{"name": variable, "valueFrom": {"secretKeyRef": {"name": "zitadel-api-key",
                                                                                   "key": "key.json"}}}]

    # The pluginConfig as Istio hands it to the filter (JSON), through the filter's own check.
    check = check_config(json.dumps(config), key_env(variable))
    assert check.returncode == 0, check.stderr
    assert f"issuer zitadel: https://{host} via cluster outbound|443||{host}" in check.stdout
    assert check.stdout.strip().endswith("ok")
    # And without the variable, the load would fail naming the field.
    check = check_config(json.dumps(config), {k: v for k, v in os.environ.items() if k != variable})
    assert check.returncode == 1
    assert "`issuers.zitadel.client_auth.key_env`" in check.stderr


def test_envoy_gateway_objects_follow_the_schemas_and_agree(tmp_path):
    docs = kustomize("envoy-gateway")
    assert set(docs) == {"EnvoyExtensionPolicy", "EnvoyPatchPolicy", "EnvoyProxy"}
    validate = subprocess.run(["node", os.path.join(ROOT, "tests", "e2e", "k8s", "validate.mjs")],
                              input=json.dumps(list(docs.values())), capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0 and json.loads(validate.stdout) == [], validate.stdout + validate.stderr
    policy, patch, proxy = docs["EnvoyExtensionPolicy"]["spec"], docs["EnvoyPatchPolicy"]["spec"], \
        docs["EnvoyProxy"]["spec"]
    assert {doc["metadata"]["namespace"] for doc in docs.values()} == {"default"}
    assert policy["targetRefs"][0]["name"] == patch["targetRef"]["name"] == "api-gateway"
    [wasm] = policy["wasm"]
    # The image by its digest, and never open on failure.
    assert "@sha256:" in wasm["code"]["image"]["url"] and wasm["failOpen"] is False
    assert wasm["rootID"] == "oauth_introspection"
    issuer = wasm["config"]["issuers"]["zitadel"]
    [cluster] = patch["jsonPatches"]
    assert cluster["name"] == cluster["operation"]["value"]["name"] == issuer["introspection"]["cluster"]
    variable = issuer["client_auth"]["key_env"]
    assert wasm["env"]["hostKeys"] == [variable]
    [env] = proxy["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    assert env["name"] == variable
    manifests = tmp_path / "envoy-gateway.yaml"
    manifests.write_text(yaml.safe_dump_all(docs.values()))
    check = subprocess.run([CHECK_CONFIG, str(manifests)], capture_output=True, text=True, timeout=60,
                           env=key_env(variable))
    assert check.returncode == 0, check.stderr
    assert "== EnvoyExtensionPolicy oauth-introspection wasm oauth-introspection" in check.stdout


def test_a_broken_envoy_gateway_object_is_caught_by_its_schema():
    docs = kustomize("envoy-gateway")
    docs["EnvoyExtensionPolicy"]["spec"]["wasm"][0]["code"]["type"] = "Registry"
    validate = subprocess.run(["node", os.path.join(ROOT, "tests", "e2e", "k8s", "validate.mjs")],
                              input=json.dumps(list(docs.values())), capture_output=True, text=True, timeout=60)
    assert validate.returncode == 1 and "code/type" in validate.stdout
