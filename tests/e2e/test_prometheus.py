"""The filter's counters as Prometheus scrapes them: the real Envoy's /stats/prometheus, read with
a maintained parser (PyPI prometheus-client). The shipped configs' stats_tags (envoy/envoy.yaml.in)
turn the denial's reason and the issuer's name into labels."""
import time

from prometheus_client.parser import text_string_to_metric_families

from stack import COUNTER_FLUSH_WAIT


def scrape(envoy):
    time.sleep(COUNTER_FLUSH_WAIT)  # the filter hands its counts over once a second
    text = envoy.admin("/stats/prometheus").body
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family):
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


def test_counters_are_prometheus_families_with_labels(envoy, issuer, tokens):
    before = scrape(envoy)
    denied_before = samples(before["oauth_introspection_denied"]).get((("reason", "missing_token"),), 0)
    assert envoy.get("/api/private").status == 401
    assert envoy.get("/api/private", token=tokens("reader-opaque")).status == 200
    families = scrape(envoy)
    denied = samples(families["oauth_introspection_denied"])
    assert denied[(("reason", "missing_token"),)] == denied_before + 1
    # Every denial reason is one label value of the one family.
    assert {labels[0][1] for labels in denied} >= {
        "missing_token", "malformed_token", "invalid_token", "insufficient_role", "bad_path", "bad_host", "no_rule",
        "issuer_unavailable", "overloaded"}
    assert families["oauth_introspection_denied"].type == "counter"
    calls = samples(families["oauth_introspection_issuer_calls"])
    assert calls[(("issuer", "default"),)] >= 1
    assert (("issuer", "default"),) in samples(families["oauth_introspection_issuer_errors"])
    for name in ("oauth_introspection_allowed", "oauth_introspection_cache_hits", "oauth_introspection_cache_misses",
                 "oauth_introspection_introspection_calls", "oauth_introspection_introspection_coalesced",
                 "oauth_introspection_assertion_signatures"):
        assert families[name].type == "counter", name
    assert samples(families["oauth_introspection_allowed"])[()] >= 1
