"""One introspection call per token per Envoy, however many requests carry it
at once and on whichever worker; invalid verdicts remembered briefly; a cap on
calls in flight. Every Envoy here runs --concurrency 2."""
import threading

import pytest

from stack import http_request, issuers_delayed, send_together, wait_for
from test_filter_in_envoy import assert_invalid_token, assert_issuer_unavailable, assert_ok_from_upstream

CONCURRENT = 64


@pytest.fixture
def slow_issuer(issuer):
    """Introspection answers 400 ms late, so concurrent requests overlap the call."""
    with issuers_delayed([issuer], 400):
        yield issuer


def connections_per_worker(envoy):
    stats = envoy.stats()
    return [stats[f"listener.127.0.0.1_{envoy.port}.worker_{i}.downstream_cx_total"] for i in range(2)]


@pytest.fixture(scope="module")
def coalescing_envoy(envoy_factory):
    return envoy_factory("envoy-coalescing")


def test_concurrent_first_requests_make_one_call(coalescing_envoy, slow_issuer, api):
    token = slow_issuer.token("reader-opaque")
    before, hits_before = slow_issuer.introspections(), api.hits().get("/api/private", 0)
    accepted_before = connections_per_worker(coalescing_envoy)
    results = send_together(coalescing_envoy.port, "/api/private", [(None, token)] * CONCURRENT)
    accepted = [n - b for n, b in zip(connections_per_worker(coalescing_envoy), accepted_before)]
    # Both workers took some of the requests: the waiting crossed VMs.
    assert len(accepted) == 2 and min(accepted) > 0 and sum(accepted) == CONCURRENT, accepted
    for resp in results:
        assert_ok_from_upstream(resp)
        assert resp.header("echo-x-auth-roles") == "read:messages"
    assert slow_issuer.introspections() == before + 1
    assert api.hits().get("/api/private", 0) == hits_before + CONCURRENT
    # All but the leader waited for its call (none could find a cached verdict yet).
    assert coalescing_envoy.metric("introspection.calls") == 1
    assert coalescing_envoy.metric("introspection.coalesced") == CONCURRENT - 1


def test_waiters_still_get_their_own_route_check(coalescing_envoy, slow_issuer):
    # One token without the role: the role route refuses it, the other route admits it.
    token = slow_issuer.token("plain-opaque")
    before = slow_issuer.introspections()
    scoped = send_together(coalescing_envoy.port, "/api/private-scoped", [(None, token)] * 16)
    assert slow_issuer.introspections() == before + 1
    for resp in scoped:
        assert resp.status == 403, resp
        assert resp.json()["error"] == "insufficient_scope"
    assert_ok_from_upstream(coalescing_envoy.get("/api/private", token=token))
    assert slow_issuer.introspections() == before + 1


def test_concurrent_requests_with_a_revoked_token_make_one_call(coalescing_envoy, slow_issuer):
    token = slow_issuer.token("reader-jwt")
    slow_issuer.revoke("reader-jwt", token)
    before = slow_issuer.introspections()
    for resp in send_together(coalescing_envoy.port, "/api/private", [(None, token)] * CONCURRENT):
        assert_invalid_token(resp)
        assert resp.json()["error_description"] == "token is not active"
    assert slow_issuer.introspections() == before + 1


def test_an_invalid_token_is_remembered_for_the_negative_ttl(envoy_factory, issuer):
    # 3 s: the five requests below take milliseconds; the margin is for a stalled machine.
    envoy = envoy_factory("envoy-negative-ttl", {"cache": {"slots": 64, "max_ttl_seconds": 60,
                                                           "negative_ttl_seconds": 3}})
    before = issuer.introspections()
    for _ in range(5):
        resp = envoy.get("/api/private", token="never-issued-token")
        assert_invalid_token(resp)
        assert resp.json()["error_description"] == "token is not active"
    assert issuer.introspections() == before + 1
    assert envoy.metric("cache.hits") == 4
    wait_for(lambda: envoy.get("/api/private", token="never-issued-token").status == 401
             and issuer.introspections() == before + 2, 15, "the negative entry to end")


def test_negative_caching_can_be_switched_off(envoy_factory, issuer):
    envoy = envoy_factory("envoy-no-negative", {"cache": {"slots": 64, "negative_ttl_seconds": 0}})
    before = issuer.introspections()
    for _ in range(3):
        assert_invalid_token(envoy.get("/api/private", token="another-unknown-token"))
    assert issuer.introspections() == before + 3


def test_a_failed_leader_fails_its_waiters_without_more_calls(envoy_factory, fault_server):
    introspection = {"cluster": "issuer", "authority": f"127.0.0.1:{fault_server.port}",
                     "path": "/oauth/v2/introspect", "timeout_ms": 500}
    envoy = envoy_factory("envoy-coalescing-faulty", {"introspection": introspection}, issuer_port=fault_server.port)
    fault_server.set_mode("hang")
    for resp in send_together(envoy.port, "/api/private", [(None, "hanging-token")] * 16):
        assert_issuer_unavailable(resp)
    assert fault_server.calls == 1
    assert envoy.metric("introspection.issuer_errors") == 1
    # The failure is not remembered: the next request asks again.
    fault_server.set_mode("valid")
    assert_ok_from_upstream(envoy.get("/api/private", token="hanging-token"))
    assert fault_server.calls == 1


def test_calls_past_max_in_flight_get_503(envoy_factory, issuer):
    envoy = envoy_factory("envoy-in-flight-cap", {"introspection": {
        "cluster": "issuer", "authority": f"127.0.0.1:{issuer.port}", "path": "/oauth/v2/introspect",
        "timeout_ms": 5000, "max_in_flight": 2}})
    tokens = [issuer.token("reader-opaque") for _ in range(4)]
    before = issuer.introspections()
    with issuers_delayed([issuer], 1500):
        results = [None, None]

        def first_two(i):
            results[i] = envoy.get("/api/private", token=tokens[i])

        threads = [threading.Thread(target=first_two, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: issuer.introspections() == before + 2, 5, "two calls in flight")
        for resp in send_together(envoy.port, "/api/private", [(None, t) for t in tokens[2:]]):
            assert resp.status == 503, resp
            assert resp.json() == {"error": "temporarily_unavailable",
                                   "error_description": "too many token checks under way, try again later"}
        for thread in threads:
            thread.join(timeout=10)
    for resp in results:
        assert_ok_from_upstream(resp)
    assert issuer.introspections() == before + 2
    assert envoy.metric("denied.overloaded") == 2
    # Once the calls are done, there is room again.
    assert_ok_from_upstream(envoy.get("/api/private", token=tokens[2]))


def test_waiters_call_themselves_when_the_leader_goes_away(coalescing_envoy, issuer, api):
    # The leader's client gives up after 0.3 s, while the issuer takes 0.8 s: Envoy resets the
    # leader's stream, the filter frees its slot, and one waiter makes the call instead.
    token = issuer.token("reader-opaque")
    before = issuer.introspections()
    log_start = len(coalescing_envoy.process.output())
    leader_outcome = []

    def impatient_leader():
        try:
            http_request(coalescing_envoy.port, "/api/private", headers={"Authorization": f"Bearer {token}"},
                         timeout=0.3)
            leader_outcome.append("answered")
        except OSError:
            leader_outcome.append("gave up")

    with issuers_delayed([issuer], 800):
        leader = threading.Thread(target=impatient_leader)
        leader.start()
        wait_for(lambda: issuer.introspections() == before + 1, 5, "the leader's call")
        results = send_together(coalescing_envoy.port, "/api/private", [(None, token)] * 8)
        leader.join(timeout=10)
    assert leader_outcome == ["gave up"]
    for resp in results:
        assert_ok_from_upstream(resp)
    # The abandoned call, then one by a waiter; never one per waiter.
    assert issuer.introspections() == before + 2
    # The waiters did not sit out the stale limit: the leader's slot was released at once.
    assert "introspection call: slot" in coalescing_envoy.process.output()[log_start:]
