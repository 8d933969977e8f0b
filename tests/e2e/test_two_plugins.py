"""Two filters on one VM do not share state. Envoy runs the plugins of two listeners in the
same VMs when their vm_config is the same (one vm_id), and shared data is per VM id, seen by
every plugin on it (proxy-wasm-cpp-host#203). Each plugin keeps its shared data under its own
namespace (from its name and root id), and each cached verdict carries its issuer's
fingerprint (URL, endpoint, client, what is kept of the answer)."""
import json

import pytest
import yaml

import render
from conftest import free_port
from test_filter_in_envoy import assert_invalid_token, assert_ok_from_upstream


def second_listener(plugin_b, name_b):
    """edit_config: a copy of the listener on another port whose filter is plugin `name_b`,
    configured with `plugin_b`, on the same vm_config (same vm_id, same code)."""
    def edit(text, envoy):
        config = yaml.safe_load(text)
        listeners = config["static_resources"]["listeners"]
        copy = json.loads(json.dumps(listeners[0]))
        envoy.port_b = free_port()
        copy["name"] = "api_b"
        copy["address"]["socket_address"]["port_value"] = envoy.port_b
        hcm = copy["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        wasm["name"] = name_b
        wasm["configuration"]["value"] = json.dumps(plugin_b)
        listeners.append(copy)
        return yaml.safe_dump(config)
    return edit


def vm_stats(envoy):
    return {name: value for name, value in envoy.stats().items() if name.startswith("wasm.envoy.wasm.runtime.v8.")}


@pytest.fixture(scope="module")
def two_plugins(envoy_factory, issuer, fault_server, envoy):
    """Plugin A asks the real issuer; plugin B, with the same issuer URL and rules, asks the fault
    server (cluster issuer_b), which calls any token valid."""
    plugin_b = render.plugin_config(issuer.url, f"127.0.0.1:{fault_server.port}")
    plugin_b["introspection"]["cluster"] = "issuer_b"
    clusters = [render.issuer_cluster("issuer", "127.0.0.1", issuer.port),
                render.issuer_cluster("issuer_b", "127.0.0.1", fault_server.port)]
    both = envoy_factory("envoy-two-plugins", edit_config=second_listener(plugin_b, "oauth_introspection_b"),
                         issuer_clusters=clusters)
    # As many live VMs as the one-plugin Envoy has: the two plugins do share their VMs.
    active = "wasm.envoy.wasm.runtime.v8.active"
    assert vm_stats(both)[active] == vm_stats(envoy)[active] > 0, (vm_stats(both), vm_stats(envoy))
    return both


def get_b(envoy, path, token):
    from stack import http_request
    return http_request(envoy.port_b, path, headers={"Authorization": f"Bearer {token}"})


def test_a_verdict_of_one_plugin_is_not_the_others(two_plugins, fault_server, issuer):
    fault_server.set_mode("valid")
    token = "made-up-token-the-fault-server-calls-valid"
    before = issuer.introspections()
    # B's issuer vouches for anything: 200, and the verdict is cached on the shared VM.
    assert_ok_from_upstream(get_b(two_plugins, "/api/private", token))
    assert fault_server.calls == 1
    # A asks its own issuer, which never minted the token: 401, not B's cached 200.
    assert_invalid_token(two_plugins.get("/api/private", token=token))
    assert issuer.introspections() == before + 1
    # And A's negative verdict does not reach B either.
    assert_ok_from_upstream(get_b(two_plugins, "/api/private", token))
    assert fault_server.calls == 1


def test_each_plugin_keeps_its_own_cache(envoy_factory, issuer, envoy):
    """Identical configurations but for the plugin name: nothing would go wrong if they shared
    verdicts, yet each asks for itself — their shared data lives in separate namespaces."""
    plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}")
    twins = envoy_factory("envoy-twin-plugins", edit_config=second_listener(plugin, "oauth_introspection_twin"))
    token = issuer.token("reader-opaque")
    before = issuer.introspections()
    for _ in range(2):
        assert_ok_from_upstream(twins.get("/api/private", token=token))
    assert issuer.introspections() == before + 1
    for _ in range(2):
        assert_ok_from_upstream(get_b(twins, "/api/private", token))
    assert issuer.introspections() == before + 2
