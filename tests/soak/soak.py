#!/usr/bin/env python3
"""A bounded soak run: the real Envoy (--concurrency 2) with the real .wasm, the local
issuer and the demo API on loopback, under a steady mix of requests for --seconds.

Several client threads, each on a keep-alive connection (renewed now and then, so both
Envoy workers get traffic), send: valid tokens (/api/private and the role route), the
role-less user on the role route (403), random tokens (401), tokens minted during the run
and never seen before (200), and revoked tokens (401 once their cached verdict has ended:
the soak's cache TTL is short, and a 200 counts as wrong only after TTL + margin).
Every answer is checked (status, challenge, identity forwarded upstream). Envoy's RSS is
sampled every few seconds. Exits non-zero on any wrong verdict, any 5xx, any failed
request, or a VM panic. Not part of the pytest suite; run it with scripts/soak.sh.
"""
import argparse
import collections
import http.client
import json
import os
import queue
import random
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))

from stack import Api, Envoy, Issuer, render  # noqa: E402

MARGIN_SECONDS = 2  # the cache counts whole seconds: an entry can outlive max_ttl by up to 1 s
SCOPED_CHALLENGE = 'Bearer error="insufficient_scope", scope="read:messages"'
READERS = ["reader-opaque", "reader-jwt"]
# category: (path, weight)
CATEGORIES = {
    "valid": ("/api/private", 30),
    "valid_role_route": ("/api/private-scoped", 20),
    "no_role": ("/api/private-scoped", 10),
    "invalid_random": ("/api/private", 10),
    "never_seen": ("/api/private", 10),
    "revoked": ("/api/private", 20),
}


class Tally:
    """Per-category counts; one per thread, merged at the end."""

    def __init__(self):
        self.requests = collections.Counter()
        self.statuses = collections.defaultdict(collections.Counter)
        self.wrong = collections.Counter()
        self.server_errors = collections.Counter()
        self.failures = collections.Counter()
        self.examples = []
        self.stale_ok = 0  # revoked, still 200 inside TTL + margin: the documented cost of caching
        self.max_stale_age = 0.0

    def merge(self, other):
        for name in ("requests", "wrong", "server_errors", "failures"):
            getattr(self, name).update(getattr(other, name))
        for category, counter in other.statuses.items():
            self.statuses[category].update(counter)
        self.examples += other.examples
        self.stale_ok += other.stale_ok
        self.max_stale_age = max(self.max_stale_age, other.max_stale_age)


class Pools:
    """The tokens: long-lived ones, plus those the minter thread adds during the run."""

    def __init__(self, issuer):
        self.issuer = issuer
        self.user_ids = {name: info["user_id"] for name, info in issuer.ids["service_users"].items()}
        self.valid = [(user, issuer.token(user)) for user in READERS for _ in range(4)]
        self.no_role = [("plain-opaque", issuer.token("plain-opaque")) for _ in range(2)]
        self.never_seen = queue.Queue(maxsize=100)
        self.revoked = []  # (user, token, monotonic time the revocation completed)
        self.lock = threading.Lock()


def request(conn, path, token):
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def identity_ok(headers, body, pools, user):
    return (body.startswith("OK ") and headers.get("echo-x-auth-subject") == pools.user_ids[user]
            and headers.get("echo-x-auth-client-id") == user and headers.get("echo-x-auth-roles") == "read:messages")


def json_member(body, name):
    try:
        return json.loads(body).get(name)
    except (ValueError, AttributeError):
        return None


def judge(category, status, headers, body, pools, user, stale_window_open):
    """True when the answer is right for the category."""
    if category in ("valid", "valid_role_route", "never_seen", "revoke_setup"):
        return status == 200 and identity_ok(headers, body, pools, user)
    if category == "no_role":
        return (status == 403 and headers.get("www-authenticate") == SCOPED_CHALLENGE
                and json_member(body, "error") == "insufficient_scope")
    if category in ("invalid_random", "revoked"):
        refused = (status == 401 and headers.get("www-authenticate", "").startswith('Bearer error="invalid_token"')
                   and json_member(body, "error_description") == "token is not active")
        if category == "revoked" and stale_window_open and status == 200:
            return identity_ok(headers, body, pools, user)
        return refused
    raise AssertionError(category)


def record(tally, category, status, headers, body, ok, path):
    tally.requests[category] += 1
    tally.statuses[category][status] += 1
    if status >= 500:
        tally.server_errors[category] += 1
    if not ok:
        tally.wrong[category] += 1
        if len(tally.examples) < 10:
            tally.examples.append(f"{category} {path} -> {status} {headers.get('www-authenticate')} {body[:120]!r}")


def pick(pools, rng):
    names = list(CATEGORIES)
    weights = [CATEGORIES[n][1] for n in names]
    while True:
        category = rng.choices(names, weights)[0]
        if category in ("valid", "valid_role_route"):
            user, token = rng.choice(pools.valid)
            return category, user, token, None
        if category == "no_role":
            user, token = rng.choice(pools.no_role)
            return category, user, token, None
        if category == "invalid_random":
            return category, None, "soak-random-" + "%032x" % rng.getrandbits(128), None
        if category == "never_seen":
            try:
                user, token = pools.never_seen.get_nowait()
            except queue.Empty:
                continue
            return category, user, token, None
        with pools.lock:
            if not pools.revoked:
                continue
            user, token, revoked_at = rng.choice(pools.revoked)
        return category, user, token, revoked_at


def client(port, pools, deadline, ttl, tally, seed):
    rng = random.Random(seed)
    conn, used = None, 0
    while time.monotonic() < deadline:
        if conn is None or used >= 200:  # a new connection now and then: the kernel spreads them over workers
            if conn:
                conn.close()
            conn, used = http.client.HTTPConnection("127.0.0.1", port, timeout=10), 0
        category, user, token, revoked_at = pick(pools, rng)
        path = CATEGORIES[category][0]
        sent = time.monotonic()
        stale_window_open = revoked_at is not None and sent - revoked_at <= ttl + MARGIN_SECONDS
        try:
            status, headers, body = request(conn, path, token)
        except (OSError, http.client.HTTPException) as err:
            tally.failures[category] += 1
            tally.examples.append(f"{category} {path} -> {type(err).__name__}: {err}")
            conn = None
            continue
        used += 1
        ok = judge(category, status, headers, body, pools, user, stale_window_open)
        if ok and category == "revoked" and status == 200:
            tally.stale_ok += 1
            tally.max_stale_age = max(tally.max_stale_age, sent - revoked_at)
        record(tally, category, status, headers, body, ok, path)


def minter(port, pools, deadline, tally):
    """Mints never-seen tokens all along; about once a second one more is used once
    (its verdict is then cached), revoked, and handed to the clients as revoked."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    rng = random.Random(7)
    last_revocation = 0.0
    while time.monotonic() < deadline:
        user = rng.choice(READERS)
        try:
            if time.monotonic() - last_revocation >= 1.0:
                last_revocation = time.monotonic()
                token = pools.issuer.token(user)
                status, headers, body = request(conn, "/api/private", token)
                record(tally, "revoke_setup", status, headers, body,
                       judge("revoke_setup", status, headers, body, pools, user, False), "/api/private")
                pools.issuer.revoke(user, token)
                with pools.lock:
                    pools.revoked = pools.revoked[-19:] + [(user, token, time.monotonic())]
            if not pools.never_seen.full():
                pools.never_seen.put((user, pools.issuer.token(user)))
            else:
                time.sleep(0.05)
        except (OSError, http.client.HTTPException) as err:
            tally.failures["minter"] += 1
            tally.examples.append(f"minter -> {type(err).__name__}: {err}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            time.sleep(0.2)


def guarded(target, tally, *args):
    """Runs a thread's loop; a crash counts as a failure instead of passing silently."""
    try:
        target(*args)
    except Exception as err:  # noqa: BLE001
        tally.failures["thread crashed"] += 1
        tally.examples.append(f"{target.__name__} crashed: {type(err).__name__}: {err}")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def sampler(pid, started, deadline, every, samples):
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - started, rss_mb(pid)))
        time.sleep(every)
    samples.append((time.monotonic() - started, rss_mb(pid)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="length of the run (default 120)")
    parser.add_argument("--clients", type=int, default=4, help="client threads, one connection each (default 4)")
    parser.add_argument("--ttl", type=int, default=5, help="the filter's cache.max_ttl_seconds (default 5)")
    parser.add_argument("--slots", type=int, default=256,
                        help="cache.slots (default 256: fewer than the tokens minted, so slots get reused)")
    parser.add_argument("--warmup", type=int, default=20, help="seconds before the reference RSS sample (default 20)")
    args = parser.parse_args()

    log_dir = tempfile.mkdtemp(prefix="soak-")
    issuer, api, envoy = Issuer(log_dir), Api(log_dir), None
    threads, tally, samples = [], Tally(), []
    try:
        plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}",
                                      cache={"slots": args.slots, "max_ttl_seconds": args.ttl})
        envoy = Envoy(log_dir, issuer.port, api.port, name="envoy-soak", plugin=plugin, log_args=["-l", "info"],
                      env={"ZITADEL_API_KEY_JSON": issuer.api_key_json})
        pools = Pools(issuer)
        calls_before, stats_before = issuer.introspections(), envoy.stats()
        started = time.monotonic()
        deadline = started + args.seconds
        tallies = [Tally() for _ in range(args.clients + 1)]
        threads = [threading.Thread(target=guarded, args=(client, tallies[i], envoy.port, pools, deadline, args.ttl,
                                                          tallies[i], i)) for i in range(args.clients)]
        threads.append(threading.Thread(target=guarded, args=(minter, tallies[-1], envoy.port, pools, deadline,
                                                              tallies[-1])))
        threads.append(threading.Thread(target=guarded, args=(sampler, tallies[-1], envoy.process.proc.pid, started,
                                                               deadline, 5, samples)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        for part in tallies:
            tally.merge(part)
        calls, stats_after = issuer.introspections() - calls_before, envoy.stats()
        envoy_alive = envoy.process.proc.poll() is None
        panicked = "panicked" in envoy.process.output()
    finally:
        for part in (envoy, api, issuer):
            if part:
                part.stop()

    def delta(name):
        key = f"wasmcustom.oauth_introspection.{name}"
        return stats_after.get(key, 0) - stats_before.get(key, 0)

    expected = {"valid": "200", "valid_role_route": "200", "no_role": "403", "invalid_random": "401",
                "never_seen": "200", "revoked": f"401 (200 ok ≤ {args.ttl}+{MARGIN_SECONDS} s)", "revoke_setup": "200"}
    total = sum(tally.requests.values())
    print(f"\nSoak: {elapsed:.0f} s, {args.clients} clients + minter, Envoy --concurrency 2, "
          f"cache slots {args.slots}, max TTL {args.ttl} s. Logs: {log_dir}\n")
    print("| category | requests | expected | got | wrong | 5xx |")
    print("| --- | --- | --- | --- | --- | --- |")
    for category in list(CATEGORIES) + ["revoke_setup"]:
        got = ", ".join(f"{s}×{n}" for s, n in sorted(tally.statuses[category].items()))
        print(f"| {category} | {tally.requests[category]:,} | {expected[category]} | {got} | "
              f"{tally.wrong[category]} | {tally.server_errors[category]} |")
    print(f"\nrequests: {total:,} ({total / elapsed:,.0f}/s); failed requests (connection errors): "
          f"{sum(tally.failures.values())}")
    print(f"revoked tokens still 200 inside the window: {tally.stale_ok:,}, latest {tally.max_stale_age:.1f} s "
          f"after revocation (TTL {args.ttl} s)")
    print(f"introspection calls: issuer counted {calls:,}, filter counted {delta('introspection.calls'):,}; "
          f"cache hits {delta('cache.hits'):,}, misses {delta('cache.misses'):,}; "
          f"issuer errors {delta('introspection.issuer_errors')}, "
          f"denied.issuer_unavailable {delta('denied.issuer_unavailable')}")
    warm = next((rss for t, rss in samples if t >= args.warmup), samples[-1][1])
    print(f"Envoy RSS: start {samples[0][1]:.1f} MB, after {args.warmup} s warm-up {warm:.1f} MB, "
          f"end {samples[-1][1]:.1f} MB ({samples[-1][1] - warm:+.1f} MB), max {max(r for _, r in samples):.1f} MB "
          f"({len(samples)} samples)")
    for example in tally.examples[:10]:
        print("  example:", example)

    problems = []
    if sum(tally.wrong.values()):
        problems.append(f"{sum(tally.wrong.values())} wrong verdicts")
    if sum(tally.server_errors.values()) or delta("introspection.issuer_errors"):
        problems.append("5xx answers or issuer errors while the issuer was healthy")
    if sum(tally.failures.values()):
        problems.append(f"{sum(tally.failures.values())} failed requests")
    if not envoy_alive or panicked:
        problems.append("Envoy exited or a VM panicked")
    if min(tally.requests[c] for c in CATEGORIES) == 0:
        problems.append("a category got no requests")
    if problems:
        raise SystemExit("SOAK FAILED: " + "; ".join(problems))
    print("\nsoak: OK (no wrong verdict, no 5xx)")


if __name__ == "__main__":
    main()
