"""Live configuration: the filter reached through ECDS (see ecds.py), its configuration changed
while a steady load of valid and invalid tokens runs, as Istio changes it on every WasmPlugin
edit. No request may fail or get an answer that neither the old nor the new configuration
gives; each change must apply within seconds; cached verdicts must follow the configuration's
fingerprint; an invalid configuration must be refused with the previous one still serving.

What Envoy does with an invalid one (found here, Envoy 1.36-1.40): the plugin's on_configure
fails, Envoy logs the filter's error naming the field and "Filesystem config update rejected:
Unable to create Wasm plugin", counts update_rejected and config_fail in
extension_config_discovery.http_filter.<name>.*, and keeps the previous configuration."""
import base64
import json
import os
import threading
import time

import pytest

import render
from ecds import discovered_filter
from stack import RESPONSES, wait_for

PROJECT, OTHER_PROJECT = "300000000000000001", "300000000000000009"
KEY_ENVS = "ZITADEL_API_KEY_JSON, ZITADEL_API_KEY_JSON_2"
# An old answer still counts as right for a request sent up to this long after Envoy reported
# the new configuration applied (the poll that sees it runs every 50 ms).
GRACE_SECONDS = 0.5


def configurations(issuer):
    """The configurations the run moves through, by name."""
    base = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}")
    rules = [dict(rule, access="public") if rule.get("path") == "/protected" else rule for rule in base["rules"]]
    rules_changed = dict(base, rules=rules)
    audiences_changed = dict(rules_changed, audiences=[OTHER_PROJECT], project_id=OTHER_PROJECT)
    key_changed = dict(audiences_changed,
                       client_auth={"method": "private_key_jwt", "key_env": "ZITADEL_API_KEY_JSON_2"})
    return {"initial": base, "rules": rules_changed, "audiences": audiences_changed, "key": key_changed}


# What each kind of request gets under each configuration (the invalid one, refused, changes
# nothing: it would have made anonymous /protected 401 again).
EXPECTED = {
    #                 initial rules audiences key
    "anonymous /protected": (401, 200, 200, 200),
    "project token": (200, 200, 401, 401),
    "other project's token": (401, 401, 200, 200),
    "new other project's token": (401, 401, 200, 200),
    "invalid token": (401, 401, 401, 401),
    "public": (200, 200, 200, 200),
}
PHASES = ["initial", "rules", "audiences", "key"]


@pytest.fixture(scope="module")
def live(envoy_factory, issuer, log_dir):
    # At info, not trace: tens of thousands of requests at trace make a log of hundreds of
    # megabytes (the other Envoys of the suite run at trace for the log scan).
    envoy = envoy_factory("envoy-ecds", edit_config=discovered_filter(os.path.join(log_dir, "ecds")),
                          env={"ZITADEL_API_KEY_JSON_2": issuer.api_key_2_json},
                          template_values={"HOST_ENV_KEYS": KEY_ENVS}, log_args=["-l", "info"])
    return envoy


def stat(envoy, name):
    return envoy.stats().get(f"extension_config_discovery.http_filter.oauth_introspection.{name}", 0)


def apply(envoy, plugin, version):
    """Moves a configuration into place and waits until Envoy has taken it, once; returns when
    it was moved into place (time.monotonic())."""
    before = stat(envoy, "update_success")
    moved = time.monotonic()
    envoy.ecds.write(plugin, version)
    wait_for(lambda: stat(envoy, "update_success") == before + 1, 10, f"configuration {version} applied")
    return moved


class Load:
    """Worker threads on keep-alive connections, each cycling through the kinds of request,
    recording (kind, sent at, answered at, status or error)."""

    def __init__(self, envoy, tokens, threads=4):
        self.envoy, self.tokens, self.threads = envoy, tokens, threads
        self.records, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.fresh = iter(tokens.pop("new other project's token"))
        self.last_fresh = 0.0

    def request(self, kind):
        token = {"anonymous /protected": None, "public": None}.get(kind, "")
        if kind == "new other project's token":
            # A few per second, so that every configuration sees some.
            if time.monotonic() - self.last_fresh < 0.2:
                return None
            self.last_fresh = time.monotonic()
            token = next(self.fresh, None)
            if token is None:
                return None
        elif token == "":
            token = self.tokens[kind]
        path = {"anonymous /protected": "/protected", "public": "/public"}.get(kind, "/api/private")
        return path, token

    def run(self, index):
        conn = self.envoy.connection(timeout=10)
        kinds = list(EXPECTED)
        i = index
        while not self.stop.is_set():
            kind = kinds[i % len(kinds)]
            i += 1
            with self.lock:
                target = self.request(kind)
            if target is None:
                continue
            path, token = target
            sent = time.monotonic()
            try:
                status = self.envoy.get(path, token=token, conn=conn).status
            except OSError as err:
                status = f"failed: {err}"
                conn.close()
                conn = self.envoy.connection(timeout=10)
            with self.lock:
                self.records.append((kind, sent, time.monotonic(), status))
        conn.close()

    def __enter__(self):
        self.workers = [threading.Thread(target=self.run, args=(n,)) for n in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=30)


def test_configuration_changes_apply_under_load_without_a_wrong_answer(live, issuer, api, log_dir):
    configs = configurations(issuer)
    tokens = {
        "project token": issuer.token("reader-opaque"),
        "other project's token": issuer.token("other-project"),
        "invalid token": "not-a-token-" + str(time.time_ns()),
        # Each used once: every one needs an introspection call, also after the key changes.
        "new other project's token": [issuer.token("other-project") for _ in range(200)],
    }
    apply(live, configs["initial"], "initial")
    switches = []  # (phase index, moved into place at, first answer of the new configuration at)
    with Load(live, tokens) as load:
        time.sleep(2)
        for index, phase in enumerate(PHASES[1:], start=1):
            moved = apply(live, configs[phase], phase)
            switches.append((index, moved, time.monotonic()))
            time.sleep(4)
        # An invalid configuration, sent the same way: refused, the last one keeps serving. Had it
        # been taken (the unknown member ignored), its rules would close /protected again.
        rejected_before = stat(live, "update_rejected")
        log_start = len(live.process.output())
        invalid = dict(configs["key"], rules=configs["initial"]["rules"], isuer="typo")
        live.ecds.write(None, "invalid", raw_text=json.dumps(invalid))
        wait_for(lambda: stat(live, "update_rejected") == rejected_before + 1, 10, "the invalid configuration refused")
        refused_at = time.monotonic()
        time.sleep(2)
    log = live.process.output()[log_start:]
    assert "invalid plugin configuration: `isuer`: unknown field `isuer`" in log
    assert "config update rejected" in log
    assert stat(live, "config_fail") >= 1

    # Every answer is one the configuration in force (or, during a switch, the previous one) gives.
    def phase_at(t):
        index = 0
        for number, moved, _ in switches:
            if t >= moved:
                index = number
        return index

    wrong, failed, counts = [], [], {}
    for kind, sent, done, status in load.records:
        counts[kind] = counts.get(kind, 0) + 1
        if not isinstance(status, int) or status >= 500:
            failed.append((kind, status))
            continue
        index = phase_at(done)
        allowed = {EXPECTED[kind][index]}
        switched = next((s for s in switches if s[0] == index), None)
        if switched and sent < switched[2] + GRACE_SECONDS:
            allowed.add(EXPECTED[kind][index - 1])  # sent before Envoy had the new configuration
        if status not in allowed:
            wrong.append((kind, status, index, round(done - (switched[1] if switched else 0), 3)))
    total = len(load.records)
    summary = {"requests": total, "failed": len(failed), "wrong": len(wrong),
               "applied_within_s": [round(applied - moved, 3) for _, moved, applied in switches],
               "after_the_invalid_one": sum(1 for _, _, done, _ in load.records if done > refused_at),
               "per_kind": counts, "key_ids": sorted(set(key_ids_used(issuer)))}
    with open(os.path.join(log_dir, "live-config-summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    RESPONSES.append(json.dumps(summary))
    assert not failed, failed[:10]
    assert not wrong, wrong[:10]
    assert total > 500, summary
    assert all(seconds < 5 for seconds in summary["applied_within_s"]), summary
    assert summary["after_the_invalid_one"] > 50, summary
    # New tokens kept being introspected across the key change, then with the new key.
    new_token_phases = {phase_at(done) for kind, _, done, _ in load.records if kind == "new other project's token"}
    assert new_token_phases == {0, 1, 2, 3}, new_token_phases
    assert key_ids_used(issuer)[-1] == issuer.ids["api_key_2_id"]
    # Each kind kept being answered to the end with the last valid configuration's answer.
    last = {kind: [s for k, _, done, s in load.records if k == kind and done > refused_at] for kind in EXPECTED}
    for kind, statuses in last.items():
        if statuses:
            assert set(statuses) == {EXPECTED[kind][-1]}, (kind, set(statuses))


def key_ids_used(issuer):
    """The keyId of each client assertion the issuer received (it records them)."""
    path = os.path.join(issuer.state_dir, "client-assertions.txt")
    with open(path) as f:
        headers = [json.loads(base64.urlsafe_b64decode(a.split(".")[0] + "==")) for a in f.read().split()]
    return [h["kid"] for h in headers]


def test_cached_verdicts_follow_the_fingerprint(live, issuer):
    """A changed audience makes cached verdicts void (new calls); a new key for the same
    client keeps them (no calls), and the calls that follow are signed with the new key."""
    configs = configurations(issuer)
    other = issuer.token("other-project")
    apply(live, configs["audiences"], "fp-audiences")
    assert live.get("/api/private", token=other).status == 200
    before = issuer.introspections()
    assert live.get("/api/private", token=other).status == 200
    assert issuer.introspections() == before, "cached under this configuration"

    apply(live, configs["key"], "fp-key")
    assert live.get("/api/private", token=other).status == 200
    assert issuer.introspections() == before, "another key of the same client: the verdict still counts"
    fresh = issuer.token("other-project")
    assert live.get("/api/private", token=fresh).status == 200
    assert issuer.introspections() == before + 1
    assert key_ids_used(issuer)[-1] == issuer.ids["api_key_2_id"], "signed with the new key"

    apply(live, dict(configs["key"], audiences=[OTHER_PROJECT, PROJECT]), "fp-audiences-again")
    assert live.get("/api/private", token=other).status == 200
    assert issuer.introspections() == before + 2, "another audience list: asked again"
