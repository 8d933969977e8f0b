"""stale-if-error: an issuer stopped in the middle of the load. With `stale_if_error_seconds`, a
token whose valid verdict ended within the window keeps passing while the issuer is down (never
past its `exp`, never after the issuer called it inactive), and gets 503 once the window is
over. Timings are generous (a 2 s cache, a 6 s window; the assertions leave a second or more
of margin on each side) so that a busy machine cannot make them fail."""
import re
import threading
import time

import pytest

from stack import Issuer
from test_filter_in_envoy import assert_issuer_unavailable, assert_ok_from_upstream

WINDOW = 6
TTL = 2


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


@pytest.fixture(scope="module")
def outage(log_dir, envoy_factory):
    issuer = Issuer(log_dir, name="issuer-outage")
    envoy = envoy_factory(
        "envoy-stale", {"issuer": issuer.url,
                        "introspection": {"cluster": "issuer", "authority": f"127.0.0.1:{issuer.port}",
                                          "path": "/oauth/v2/introspect", "timeout_ms": 500},
                        "cache": {"slots": 256, "max_ttl_seconds": TTL},
                        "stale_if_error_seconds": WINDOW},
        issuer_port=issuer.port, env={"ZITADEL_API_KEY_JSON": issuer.api_key_json})
    yield issuer, envoy
    issuer.stop()


def test_an_issuer_outage_is_bridged_for_signed_in_tokens_within_the_window(outage, api):
    issuer, envoy = outage
    token = issuer.token("reader-opaque")
    short = issuer.token("short-lived")  # exp 3 s after it is minted
    revoked = issuer.token("plain-opaque")
    for t in (token, short, revoked):
        assert_ok_from_upstream(envoy.get("/api/private", token=t))
    issuer.revoke("plain-opaque", revoked)
    time.sleep(TTL + 0.5)
    # The issuer now calls it inactive: a fresh negative answer wins at once.
    assert envoy.get("/api/private", token=revoked).status == 401

    # Load with the valid token, every 100 ms, while the issuer stops.
    results = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            results.append((time.monotonic(), envoy.get("/api/private", token=token).status))
            time.sleep(0.1)

    rss_before = rss_mb(envoy.process.proc.pid)
    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1)
    stopped_at = time.monotonic()
    issuer.stop()
    try:
        deadline = stopped_at + TTL + WINDOW + 6
        while time.monotonic() < deadline and not any(s == 503 and t > stopped_at for t, s in results):
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        thread.join()

    during = [(t - stopped_at, s) for t, s in results if t > stopped_at]
    # Inside the window (it starts when the last fresh verdict ended, at or after the stop): 200.
    assert all(s == 200 for t, s in during if t < WINDOW - 1), during
    # Over once the window is: 503, at the latest TTL + WINDOW after the stop, and no flapping back.
    first_503 = next(t for t, s in during if s == 503)
    assert WINDOW - 1 <= first_503 <= TTL + WINDOW + 2, during
    assert all(s == 503 for t, s in during if t >= first_503), during
    admitted = envoy.metric("stale_if_error.admitted")
    assert admitted > 0
    print(f"\nissuer stopped: {len(during)} requests after the stop, {sum(s == 200 for _, s in during)} answered 200 "
          f"({admitted} of them on a stale verdict), the first 503 {first_503:.1f} s after the stop "
          f"(window {WINDOW} s, cache TTL {TTL} s)")
    # Past its exp, the short-lived token is not bridged; the revoked one never is.
    assert_issuer_unavailable(envoy.get("/api/private", token=short))
    assert_issuer_unavailable(envoy.get("/api/private", token=revoked))
    # Logged once per token and worker, not per request.
    lines = envoy.process.output().count("a token is admitted on its recent verdict")
    assert 1 <= lines <= 2, lines
    # Memory: a fixed cache and a bounded list of logged tokens.
    assert rss_mb(envoy.process.proc.pid) - rss_before < 20
