"""The filter delivered the way Istio delivers a WasmPlugin: through Envoy's extension config
discovery (ECDS), here from a file (a `path_config_source` with a watched directory). A new
configuration is a new file moved over the old one; Envoy notices the move and applies it."""
import copy
import json
import os

import yaml

FILTER_NAME = "oauth_introspection"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def discovered_filter(ecds_dir):
    """edit_config: the listener's Wasm filter is replaced by one found through ECDS in `ecds_dir`,
    whose first configuration is the one the template rendered (written there too)."""

    def edit(text, envoy):
        config = yaml.safe_load(text)
        # Envoy wants a node identity for any xDS source, file-based ones included.
        config["node"] = {"id": "oauth-introspection-e2e", "cluster": "e2e"}
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = hcm["http_filters"][0]
        envoy.ecds = Ecds(ecds_dir, wasm["typed_config"])
        envoy.ecds.write(json.loads(wasm["typed_config"]["config"]["configuration"]["value"]), version="0")
        hcm["http_filters"][0] = {
            "name": FILTER_NAME,
            "config_discovery": {
                "config_source": {
                    "path_config_source": {"path": envoy.ecds.path, "watched_directory": {"path": ecds_dir}},
                    "resource_api_version": "V3",
                },
                "type_urls": [WASM_TYPE],
            },
        }
        return yaml.safe_dump(config)

    return edit


class Ecds:
    """The watched file: a DiscoveryResponse holding the filter's TypedExtensionConfig."""

    def __init__(self, directory, wasm_typed_config):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "filter.yaml")
        self.wasm = wasm_typed_config

    def write(self, plugin, version, raw_text=None):
        """Moves a new configuration into place: `plugin` (a dict), or `raw_text` as it is."""
        wasm = copy.deepcopy(self.wasm)
        wasm["config"]["configuration"]["value"] = raw_text if raw_text is not None else json.dumps(plugin)
        response = {
            "version_info": version,
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": FILTER_NAME,
                "typed_config": wasm,
            }],
        }
        staged = os.path.join(self.directory, f".filter-{version}.yaml")
        with open(staged, "w") as f:
            yaml.safe_dump(response, f)
        os.replace(staged, self.path)
