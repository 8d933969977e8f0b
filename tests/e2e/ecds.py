"""The filter delivered the way Istio delivers a WasmPlugin: through Envoy's extension config
discovery (ECDS), here from a file (a `path_config_source` with a watched directory). A new
configuration is a new file moved over the old one; Envoy notices the move and applies it.

The shapes are the shipped examples, envoy/ecds/http-filter.yaml and envoy/ecds/filter.yaml,
loaded as they are; the tests change only paths, the environment keys and the configuration."""
import copy
import json
import os

import yaml

from stack import ROOT, first_hcm

EXAMPLES = os.path.join(ROOT, "envoy", "ecds")
EXAMPLE_DIR = "/etc/envoy/ecds"


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return yaml.safe_load(f)


def discovered_filter(ecds_dir):
    """edit_config: the listener's Wasm filter is replaced by the shipped ECDS filter entry,
    watching `ecds_dir`; the first configuration is the one the template rendered."""

    def edit(text, envoy):
        config = yaml.safe_load(text)
        # Envoy wants a node identity for any xDS source, file-based ones included.
        config["node"] = {"id": "oauth-introspection-e2e", "cluster": "e2e"}
        hcm = first_hcm(config)
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        envoy.ecds = Ecds(ecds_dir, wasm)
        envoy.ecds.write(json.loads(wasm["configuration"]["value"]), version="0")
        entry = example("http-filter.yaml")
        source = entry["config_discovery"]["config_source"]["path_config_source"]
        assert source["path"] == f"{EXAMPLE_DIR}/filter.yaml" and source["watched_directory"]["path"] == EXAMPLE_DIR
        source["path"], source["watched_directory"]["path"] = envoy.ecds.path, ecds_dir
        hcm["http_filters"][0] = entry
        return yaml.safe_dump(config)

    return edit


class Ecds:
    """The watched file: the shipped DiscoveryResponse, with this run's .wasm, environment keys
    and plugin configuration."""

    def __init__(self, directory, rendered_wasm):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "filter.yaml")
        self.rendered = rendered_wasm

    def write(self, plugin, version, raw_text=None):
        """Moves a new configuration into place: `plugin` (a dict), or `raw_text` as it is."""
        response = example("filter.yaml")
        response["version_info"] = version
        config = response["resources"][0]["typed_config"]["config"]
        vm = config["vm_config"]
        vm["code"]["local"]["filename"] = self.rendered["vm_config"]["code"]["local"]["filename"]
        vm["environment_variables"] = copy.deepcopy(self.rendered["vm_config"]["environment_variables"])
        config["configuration"]["value"] = raw_text if raw_text is not None else json.dumps(plugin)
        staged = os.path.join(self.directory, f".filter-{version}.yaml")
        with open(staged, "w") as f:
            yaml.safe_dump(response, f)
        os.replace(staged, self.path)
