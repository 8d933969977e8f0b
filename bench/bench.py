#!/usr/bin/env python3
"""Speed at scale: the filter next to no filter, an empty proxy-wasm filter and
Envoy's native jwt_authn, in one run on one machine.

One Envoy (--concurrency 2) gets one listener per case, all in front of the
same demo API (demo/api.py), so every case shares the binary and the machine
state; wrk (loopback only, bounded) alternates between them over several
rounds and the report gives medians and ratios measured in this one run:

  a  no filter
  b  an empty proxy-wasm filter (bench/empty-filter: returns Continue)
  c  this filter, cache hit (one warmed token)
  d  Envoy's envoy.filters.http.jwt_authn, RS256 JWT against an inline JWKS
  e  this filter, cache miss: every request a token never seen, minted by
     the real local issuer (demo/issuer) beforehand, each used once
  f  64 concurrent requests carrying the same brand-new token, for several
     new tokens: issuer calls per new token
  g  with --baseline-wasm PATH: (c) with another build of the filter (the one
     before a change, say), on its own listener and VMs, in the same rounds
  j  this filter with the issuer in the local JWT mode: every request a JWT
     never seen, signed with the local issuer's key and verified against the
     keys the filter fetched from it once (no issuer call); its own VMs

The filter of (e) and (f) runs in its own VMs (vm_id oauth_introspection_miss),
so its verdict cache is not the one (c) reads. Run it with scripts/bench.sh
(or `make bench`); it writes bench/results.md and bench/results.png.
"""
import argparse
import concurrent.futures
import copy
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import yaml  # noqa: E402

import jwt_tools  # noqa: E402
from stack import ENVOY, WASM, Api, Envoy, Issuer, free_port  # noqa: E402

EMPTY_WASM = os.path.join(ROOT, "target", "empty_filter.wasm")  # wasm-opt'd like the filter (scripts/bench.sh)
TOKENS_LUA = os.path.join(HERE, "wrk", "tokens.lua")
JWT_ISSUER = "https://bench.jwt.local"
AUDIENCE = "300000000000000001"
PATH = "/api/private"
# The limit the local JWT mode was given (jwt-simple with RS256 verification added).
WASM_LIMIT_BYTES = 640_000

CASES = {
    "a": "no filter",
    "b": "empty proxy-wasm filter",
    "c": "this filter, cache hit",
    "d": "jwt_authn (RS256, inline JWKS)",
    "e": "this filter, cache miss (real issuer)",
    "j": "this filter, local JWT, every JWT new",
    "r": "this filter, cache hit, 1,000 rules",
}
SHORT = {"a": "no filter", "b": "empty\nwasm filter", "c": "this filter\ncache hit", "d": "jwt_authn\nRS256",
         "e": "this filter\ncache miss", "j": "this filter\nlocal JWT", "r": "cache hit\n1,000 rules"}
# Listener kind per case; (f) uses the (e) listener.
KINDS = {"a": "plain", "b": "empty", "c": "filter", "d": "jwt", "e": "miss", "j": "local", "r": "many_rules"}
# The cases whose every request carries a token never seen (a file of tokens per run).
FRESH = "ej"
CONNECTIONS = (1, 16)


# ---- the Envoy configuration: one listener per case ------------------------------------------

def wasm_filter(filters):
    return next(f for f in filters if f["name"] == "envoy.filters.http.wasm")


def empty_filter():
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "empty",
                "root_id": "",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {"vm_id": "empty", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": EMPTY_WASM}}},
            },
        },
    }


def jwt_filter(jwks_json):
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": JWT_ISSUER,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": jwks_json},
                    # The same identity headers the filter forwards.
                    "claim_to_headers": [{"header_name": "x-auth-subject", "claim_name": "sub"},
                                         {"header_name": "x-auth-client-id", "claim_name": "client_id"}],
                },
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


# The host the many-rules listener is asked for: the last of its 100 hosts, so a linear match
# would pass every other rule first.
MANY_RULES_HOST = "svc-99.example.com"


def many_rules(count):
    """`count` rules over 100 hosts (`count / 100` per host), the one the bench matches last."""
    per_host = max(count // 100, 1)
    rules = []
    for h in range(100):
        host = f"svc-{h}.example.com"
        for i in range(per_host - 1):
            rules.append({"host": host, "prefix": f"/v{i}", "access": "authenticated"})
        rules.append({"host": host, "prefix": "/api/private", "access": "authenticated"})
    return rules


def host_for(kind):
    return MANY_RULES_HOST if kind == "many_rules" else None


def url_for(envoy, kind):
    return f"http://127.0.0.1:{envoy.ports[kind]}{PATH}"


def config_editor(kinds, jwks_json, wasm=WASM, baseline_wasm=None, rule_count=1000):
    """An `edit_config` for stack.Envoy: one listener per kind, ports in `envoy.ports`."""

    def edit(text, envoy):
        config = yaml.safe_load(text)
        base = config["static_resources"]["listeners"][0]
        envoy.ports = {}
        listeners = []
        for kind in kinds:
            listener = copy.deepcopy(base)
            port = envoy.port if kind == "filter" else free_port()
            envoy.ports[kind] = port
            listener["name"] = f"bench_{kind}"
            listener["address"]["socket_address"]["port_value"] = port
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["stat_prefix"] = f"bench_{kind}"
            filters = hcm["http_filters"]
            router = filters[-1]
            wasm_filter(filters)["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = wasm
            if kind == "plain":
                hcm["http_filters"] = [router]
            elif kind == "empty":
                hcm["http_filters"] = [empty_filter(), router]
            elif kind == "jwt":
                hcm["http_filters"] = [jwt_filter(jwks_json), router]
            elif kind == "miss":
                # Its own VMs, hence its own shared data: (e) and (f) never touch (c)'s cache.
                wasm_filter(filters)["typed_config"]["config"]["vm_config"]["vm_id"] = "oauth_introspection_miss"
            elif kind == "local":
                # Its own VMs too, with the issuer's JWTs verified locally.
                wasm_config = wasm_filter(filters)["typed_config"]["config"]
                wasm_config["vm_config"]["vm_id"] = "oauth_introspection_local"
                plugin = json.loads(wasm_config["configuration"]["value"])
                plugin["jwt"] = {"mode": "local"}
                wasm_config["configuration"]["value"] = json.dumps(plugin)
            elif kind == "many_rules":
                # Its own VMs, with `rule_count` rules over 100 hosts instead of the demo's five.
                wasm_config = wasm_filter(filters)["typed_config"]["config"]
                wasm_config["vm_config"]["vm_id"] = "oauth_introspection_many_rules"
                plugin = json.loads(wasm_config["configuration"]["value"])
                plugin["rules"] = many_rules(rule_count)
                wasm_config["configuration"]["value"] = json.dumps(plugin)
            elif kind == "baseline":
                vm_config = wasm_filter(filters)["typed_config"]["config"]["vm_config"]
                vm_config["vm_id"] = "oauth_introspection_baseline"
                vm_config["code"]["local"]["filename"] = baseline_wasm
            listeners.append(listener)
        config["static_resources"]["listeners"] = listeners
        return json.dumps(config)

    return edit


# ---- load and measurements ---------------------------------------------------------------------

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def wrk(url, connections, seconds, token=None, script=None, script_args=(), allow_errors=False, host=None):
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if host:
        args += ["-H", f"Host: {host}"]
    if script:
        args += ["-s", script]
    args.append(url)
    if script_args:
        args += ["--", *script_args]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    if errors and not allow_errors:
        raise SystemExit(f"wrk saw non-2xx answers for {url}:\n{out}")
    pct = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_us": pct["50"],
        "p99_us": pct["99"],
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": errors,
    }


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def get_status(port, token, host=None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_bytes(token, host))
        return read_status(s)


def request_bytes(token, host=None):
    return (f"GET {PATH} HTTP/1.1\r\nHost: {host or '127.0.0.1'}\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n").encode()


def read_status(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def burst(port, token, concurrency):
    """`concurrency` requests with the same token, on connections opened first, sent together."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(concurrency)]
    try:
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = request_bytes(token)
        start = time.monotonic()
        for s in socks:
            s.sendall(payload)
        statuses = [read_status(s) for s in socks]
        return statuses, time.monotonic() - start
    finally:
        for s in socks:
            s.close()


def mint(issuer, count):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: issuer.token("reader-opaque"), range(count)))


def mint_jwts(issuer, count):
    """JWT access tokens shaped like the issuer's, signed with its key (faster than its grant)."""
    jwk = issuer.signing_keys()[0]
    key = jwt_tools.private_key(jwk)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": jwk["kid"]}
    return [jwt_tools.sign(key, header, jwt_tools.access_claims(issuer.url, AUDIENCE)) for _ in range(count)]


def make_jwt(work_dir):
    subprocess.run(["node", os.path.join(HERE, "make-jwt.mjs"), work_dir, JWT_ISSUER, AUDIENCE],
                   check=True, timeout=60)
    with open(os.path.join(work_dir, "jwks.json")) as f:
        jwks = f.read()
    with open(os.path.join(work_dir, "token.txt")) as f:
        return jwks, f.read().strip()


def filter_origin(wasm):
    """Which code the .wasm was built from, as far as git can tell."""
    if os.path.abspath(wasm) != WASM:
        return f"`{wasm}` (given with --wasm)"
    paths = ["src", "Cargo.toml", "Cargo.lock"]
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h", "--", *paths],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", *paths],
                           capture_output=True, text=True).stdout.strip()
    return (f"`{os.path.relpath(WASM, ROOT)}`, built from commit {commit}"
            + (" plus uncommitted changes" if dirty else ""))


def envoy_version():
    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "?"


# ---- the report --------------------------------------------------------------------------------

def med(runs, key):
    return statistics.median(r[key] for r in runs)


def paired(results, case, other, c, key, op):
    """Median over rounds of op(case, other), each pair measured in the same round."""
    return statistics.median(op(x[key], y[key]) for x, y in zip(results[(case, c)], results[(other, c)]))


def ratio(results, case, other, c, key):
    return paired(results, case, other, c, key, lambda x, y: x / y)


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def build_report(args, results, miss_info, burst_info, rss, alone_rss, sizes, env):
    lines = [
        f"Envoy {env['envoy']} (`--concurrency 2`), one listener per case, upstream `demo/api.py`, wrk -t1 on "
        f"loopback; {env['cores']} cores (load average {env['load']} when the run began: the machine is shared). "
        f"{args.rounds} alternating rounds of {args.seconds} s per case and connection count (e, j: "
        f"{args.miss_tokens:,} new tokens per run); medians over the rounds, requests/s with the slowest and fastest "
        f"round. × (a): the median over rounds of the ratio to (a) measured in the same round, same connections.",
        "",
        "| case | conns | requests/s (min–max) | × (a) | p50 | × (a) | p99 | × (a) | RSS, Envoy with only this listener |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, label in CASES.items():
        for c in CONNECTIONS:
            runs = results[(case, c)]
            lo, hi = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
            mem = f"{alone_rss[case]:.0f} MB" if case in alone_rss else ("–" if case == "g" else "as (c)")
            lines.append(
                f"| ({case}) {label} | {c} | {med(runs, 'rps'):,.0f} ({lo:,.0f}–{hi:,.0f}) "
                f"| {ratio(results, case, 'a', c, 'rps'):.2f}× | {fmt_us(med(runs, 'p50_us'))} "
                f"| {ratio(results, case, 'a', c, 'p50_us'):.2f}× | {fmt_us(med(runs, 'p99_us'))} "
                f"| {ratio(results, case, 'a', c, 'p99_us'):.2f}× | {mem} |")
    lines.append("")
    lines.append(f"- (e) cache miss: {miss_info['tokens']:,} never-seen tokens sent, {miss_info['calls']:,} issuer "
                 f"introspection calls ({miss_info['calls'] / max(miss_info['tokens'], 1):.2f} per token), "
                 f"{miss_info['errors']} non-2xx answers.")
    jwt = miss_info["jwt"]
    per_verification = jwt["verification_us"] / max(jwt["verifications"], 1)
    lines.append(f"- (j) local JWT: {jwt['tokens']:,} never-seen JWTs sent, {jwt['verifications']:,} verified in the "
                 f"filter, {jwt['calls']} introspection calls and {jwt['key_fetches']} fetches of the keys during "
                 f"the runs (the keys were fetched once before), {jwt['errors']} non-2xx answers. One verification "
                 f"(RS256 signature, header and claims) inside Envoy's V8: {per_verification:,.0f} µs on average "
                 f"(the filter's jwt.verification_us / jwt.verifications).")
    for info in burst_info.values():
        per_token = info["calls"]
        status_counts = ", ".join(f"{n}× {s}" for s, n in sorted(info["statuses"].items()))
        issuer = "the issuer as is" if not info["delay_ms"] else f"the issuer answering {info['delay_ms']} ms late"
        lines.append(f"- (f) {len(per_token)} new tokens × {args.burst} concurrent requests each, {issuer}: issuer "
                     f"calls per new token min {min(per_token)}, median {statistics.median(per_token):g}, max "
                     f"{max(per_token)} (per token: {' '.join(map(str, per_token))}); answers: {status_counts}; "
                     f"all {args.burst} answered in {statistics.median(info['seconds']) * 1000:.0f} ms (median).")
    plugins = "empty, (c), (e)/(f), (j), (r)" + (", (g)" if "g" in CASES else "")
    lines.append(f"- Envoy RSS, all {len(KINDS)} listeners (VMs of the wasm plugins {plugins}): "
                 f"{rss['start']:.0f} MB after start, {rss['end']:.0f} MB after the runs. The RSS column: an Envoy "
                 f"with only that listener, after {args.seconds} s of load at 16 connections.")
    lines.append(f"- .wasm: {env['filter']}: {sizes['filter']:,} bytes "
                 f"({sizes['filter'] / 1024:.0f} KiB); the empty filter {sizes['empty']:,} bytes "
                 f"({sizes['empty'] / 1024:.0f} KiB).")
    if "g" in CASES:
        for c in CONNECTIONS:
            per_round = [x["rps"] / y["rps"] for x, y in zip(results[("c", c)], results[("g", c)])]
            lines.append(f"- (c) this build against (g) the baseline build, {c} connection{'s' if c > 1 else ''}: "
                         f"requests/s {ratio(results, 'c', 'g', c, 'rps'):.2f}× (rounds "
                         f"{min(per_round):.2f}–{max(per_round):.2f}), p50 "
                         f"{paired(results, 'c', 'g', c, 'p50_us', lambda x, y: x - y):+.0f} µs, p99 "
                         f"{paired(results, 'c', 'g', c, 'p99_us', lambda x, y: x - y):+.0f} µs (paired per round); "
                         f"(g) × (a) {ratio(results, 'g', 'a', c, 'rps'):.2f}×.")
        lines.append(f"- (g) baseline .wasm: {env['baseline']}, {sizes['baseline']:,} bytes.")
    lines.append("")
    lines.append("Targets (reported, not asserted):")
    lines.append("")
    lines += ["- " + t for t in targets(results, burst_info, sizes, miss_info, alone_rss)]
    return "\n".join(lines) + "\n"


def targets(results, burst_info, sizes, miss_info, alone_rss):
    def verdict(ok):
        return "pass" if ok else "MISS"

    out = []
    for other, floor, what in (("b", 0.95, "empty filter"), ("d", 1.2, "jwt_authn")):
        parts = []
        ok = True
        for c in CONNECTIONS:
            r = ratio(results, "c", other, c, "rps")
            ok &= r >= floor
            parts.append(f"{c} conn {r:.2f}× {verdict(r >= floor)}")
        out.append(f"{verdict(ok)}: (c) ≥ {floor:.2f}× requests/s of ({other}) {what}: {'; '.join(parts)}")
    added = {c: paired(results, "c", "a", c, "p50_us", lambda x, y: x - y) for c in CONNECTIONS}
    out.append(f"{verdict(added[1] <= 30)}: p50 added by (c) over (a) ≤ 30 µs: {added[1]:+.0f} µs at 1 connection "
               f"(at 16 connections, where p50 includes queueing: {added[16]:+.0f} µs)")
    parts = []
    ok = True
    for info in burst_info.values():
        calls = info["calls"]
        ok &= all(n == 1 for n in calls)
        parts.append(f"issuer delay {info['delay_ms']} ms: {sum(calls) / len(calls):.3g} per token on average "
                     f"(min {min(calls)}, max {max(calls)})")
    out.append(f"{verdict(ok)}: (f) exactly one issuer call per new token: {'; '.join(parts)}")
    for other, floor, what in (("d", 0.5, "jwt_authn"), ("e", 5.0, "introspection cache miss")):
        parts = []
        ok = True
        for c in CONNECTIONS:
            r = ratio(results, "j", other, c, "rps")
            ok &= r >= floor
            parts.append(f"{c} conn {r:.2f}× {verdict(r >= floor)}")
        out.append(f"{verdict(ok)}: (j) ≥ {floor:g}× requests/s of ({other}) {what}: {'; '.join(parts)}")
    jwt = miss_info["jwt"]
    quiet = jwt["calls"] == 0 and jwt["key_fetches"] == 0
    out.append(f"{verdict(quiet)}: no issuer call during (j): {jwt['calls']} introspections, "
               f"{jwt['key_fetches']} fetches of the keys")
    flat = {c: ratio(results, "r", "c", c, "rps") for c in CONNECTIONS}
    out.append(f"{verdict(all(r >= 0.97 for r in flat.values()))}: (r) 1,000 rules over 100 hosts ≥ 0.97× requests/s "
               f"of (c) with the demo's 5: " + "; ".join(f"{c} conn {r:.2f}×" for c, r in flat.items()))
    if "a" in alone_rss and "c" in alone_rss:
        over = alone_rss["c"] - alone_rss["a"]
        out.append(f"{verdict(over <= 30)}: Envoy RSS with the filter ≤ 30 MB over no filter: {over:+.0f} MB "
                   f"(the empty filter: {alone_rss.get('b', 0) - alone_rss['a']:+.0f} MB)")
    out.append(f"{verdict(sizes['filter'] <= WASM_LIMIT_BYTES)}: .wasm ≤ {WASM_LIMIT_BYTES:,} bytes: "
               f"{sizes['filter']:,} bytes ({sizes['filter'] / 1024:.0f} KiB)")
    return out


def plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = list(CASES)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.38
    colors = {1: "#7aa6c2", 16: "#2b5d7d"}
    for ax, key, label in ((axes[0], "rps", "requests/s"), (axes[1], "p50_us", "p50 latency (µs)"),
                           (axes[2], "p99_us", "p99 latency (µs)")):
        for i, c in enumerate(CONNECTIONS):
            values = [med(results[(case, c)], key) for case in cases]
            ratios = [ratio(results, case, "a", c, key) for case in cases]
            xs = [x + (i - 0.5) * width for x in range(len(cases))]
            bars = ax.bar(xs, values, width, label=f"{c} connection{'s' if c > 1 else ''}", color=colors[c])
            for bar, r in zip(bars, ratios):
                ax.annotate(f"{r:.2f}×", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        if key != "rps":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"({c})\n{SHORT[c]}" for c in cases], fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.12)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the run -----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="length of one wrk run for (a)-(d) (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--miss-tokens", type=int, default=1000,
                        help="new tokens per (e) and (j) run; each round runs them at 1 and 16 connections "
                             "(default 1000)")
    parser.add_argument("--burst-tokens", type=int, default=20, help="new tokens for (f) (default 20)")
    parser.add_argument("--burst", type=int, default=64, help="concurrent requests per (f) token (default 64)")
    parser.add_argument("--slow-issuer-ms", type=int, default=50,
                        help="introspection delay of the issuer in (f)'s second pass (default 50)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load per case first")
    parser.add_argument("--out", default=HERE, help="where results.md and results.png go (default bench/)")
    parser.add_argument("--no-plot", action="store_true", help="skip results.png (needs matplotlib)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir (logs, configs, tokens)")
    parser.add_argument("--wasm", default=WASM, help="the filter's .wasm (default: this checkout's build, after wasm-opt)")
    parser.add_argument("--baseline-wasm", help="also measure this build's cache hit, as case (g), in the same rounds")
    args = parser.parse_args()
    began = time.monotonic()
    if args.baseline_wasm:
        args.baseline_wasm = os.path.abspath(args.baseline_wasm)
        CASES["g"], SHORT["g"], KINDS["g"] = "baseline build, cache hit", "baseline\ncache hit", "baseline"

    args.wasm = os.path.abspath(args.wasm)
    for path in (args.wasm, EMPTY_WASM):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run scripts/bench.sh, which builds it")
    sizes = {"filter": os.path.getsize(args.wasm), "empty": os.path.getsize(EMPTY_WASM)}
    env = {"envoy": envoy_version(), "cores": os.cpu_count(), "load": f"{os.getloadavg()[0]:.1f}",
           "filter": filter_origin(args.wasm)}
    if args.baseline_wasm:
        sizes["baseline"] = os.path.getsize(args.baseline_wasm)
        env["baseline"] = f"`{args.baseline_wasm}`"

    work_dir = tempfile.mkdtemp(prefix="bench-")  # logs, configs, JWKS, token files
    jwks, jwt = make_jwt(work_dir)
    issuer, api, envoy = Issuer(work_dir), Api(work_dir), None
    results = {(case, c): [] for case in CASES for c in CONNECTIONS}
    try:
        envoy = Envoy(work_dir, issuer.port, api.port, name="envoy-bench", log_args=["-l", "warning"],
                      env={"ZITADEL_API_KEY_JSON": issuer.api_key_json},
                      edit_config=config_editor(list(KINDS.values()), jwks, args.wasm, args.baseline_wasm))
        url = {case: f"http://127.0.0.1:{envoy.ports[kind]}{PATH}" for case, kind in KINDS.items()}
        token = issuer.token("reader-opaque")
        tokens = {"a": None, "b": None, "c": token, "d": jwt, "g": token, "r": token}
        hosts = {case: host_for(kind) for case, kind in KINDS.items()}
        timed = "abcdr" + ("g" if args.baseline_wasm else "")

        # Every token (e), (f) and (j) will use, minted before any timed run.
        print(f"==> minting {args.rounds * len(CONNECTIONS) * args.miss_tokens + 2 * args.burst_tokens + 1} tokens "
              "at the local issuer (client_credentials), and as many JWTs signed with its key", file=sys.stderr)
        miss_files = {}
        for r in range(args.rounds):
            for c in CONNECTIONS:
                for case, make in (("e", mint), ("j", mint_jwts)):
                    path = os.path.join(work_dir, f"fresh-tokens-{case}-{r}-{c}.txt")
                    with open(path, "w") as f:
                        f.write("\n".join(make(issuer, args.miss_tokens)) + "\n")
                    miss_files[(case, r, c)] = path
        burst_tokens = {"as is": mint(issuer, args.burst_tokens), "slow": mint(issuer, args.burst_tokens)}

        # Warm every listener: the first request per case, the VMs' code paths, the miss
        # listener's client assertion (signed once, then reused).
        for case in timed:
            assert get_status(envoy.ports[KINDS[case]], tokens[case] or "x", host=hosts[case]) == 200, case
        assert get_status(envoy.ports["miss"], mint(issuer, 1)[0]) == 200
        # The (j) listener fetches the issuer's keys (once per Envoy) for its first JWT.
        assert get_status(envoy.ports["local"], mint_jwts(issuer, 1)[0]) == 200
        fetches_before = issuer.key_fetches()
        # (c)'s cache and (e)'s are separate: (c)'s warmed token is a miss on the (e) listener.
        calls = issuer.introspections()
        assert get_status(envoy.ports["miss"], token) == 200
        if issuer.introspections() == calls:
            raise SystemExit("the (e) listener shares (c)'s cache; the benchmark expects separate VMs")
        if args.warmup:
            for case in timed:
                wrk(url[case], 16, args.warmup, token=tokens[case], host=hosts[case])
        rss = {"start": rss_mb(envoy.process.proc.pid)}

        hit_calls = 0
        miss_info = {"tokens": 0, "calls": 0, "errors": 0,
                     "jwt": {"tokens": 0, "calls": 0, "key_fetches": 0, "errors": 0}}
        time.sleep(1.5)  # the filter hands its counts to Envoy once a second
        verifications_before = (envoy.metric("jwt.verifications"), envoy.metric("jwt.verification_us"))
        print(f"==> {args.rounds} rounds: (a)-(d) {args.seconds} s each at {CONNECTIONS} connections, "
              f"(e) and (j) {args.miss_tokens} new tokens per run", file=sys.stderr)
        for r in range(args.rounds):
            order = timed[r % len(timed):] + timed[:r % len(timed)]  # rotate, so no case always runs first
            for c in CONNECTIONS:
                for case in order:
                    before = issuer.introspections()
                    results[(case, c)].append(wrk(url[case], c, args.seconds, token=tokens[case], host=hosts[case]))
                    if case in "cgr":
                        hit_calls += issuer.introspections() - before
                for case in FRESH:
                    before, fetches = issuer.introspections(), issuer.key_fetches()
                    with open(miss_files[(case, r, c)]) as f:
                        sent = sum(1 for line in f if line.strip())
                    run = wrk(url[case], c, 120, script=TOKENS_LUA, script_args=[miss_files[(case, r, c)]],
                              allow_errors=True)
                    results[(case, c)].append(run)
                    info = miss_info if case == "e" else miss_info["jwt"]
                    info["tokens"] += sent
                    info["calls"] += issuer.introspections() - before
                    info["errors"] += run["errors"]
                    if case == "j":
                        info["key_fetches"] += issuer.key_fetches() - fetches
            print(f"    round {r + 1}/{args.rounds} done ({time.monotonic() - began:.0f} s)", file=sys.stderr)

        # (f) twice: with the loopback issuer as it is (an introspection takes ~2 ms, so Envoy may
        # cache the first verdict before it has read all 64 requests), and with the issuer answering
        # --slow-issuer-ms late, as a remote issuer would, so that all 64 are surely in flight.
        bursts = {}
        for variant, delay_ms in (("as is", 0), ("slow", args.slow_issuer_ms)):
            print(f"==> (f) {args.burst_tokens} new tokens × {args.burst} concurrent requests, issuer delay "
                  f"{delay_ms} ms", file=sys.stderr)
            issuer.set_delay(delay_ms)
            info = bursts[variant] = {"delay_ms": delay_ms, "calls": [], "statuses": {}, "seconds": []}
            for t in burst_tokens[variant]:
                before = issuer.introspections()
                statuses, seconds = burst(envoy.ports["miss"], t, args.burst)
                time.sleep(0.05)  # let any late introspection reach the issuer's counter
                info["calls"].append(issuer.introspections() - before)
                info["seconds"].append(seconds)
                for status in statuses:
                    info["statuses"][status] = info["statuses"].get(status, 0) + 1
            issuer.set_delay(0)
        rss["end"] = rss_mb(envoy.process.proc.pid)
        time.sleep(1.5)  # the filter hands its counts to Envoy once a second
        miss_info["jwt"]["verifications"] = envoy.metric("jwt.verifications") - verifications_before[0]
        miss_info["jwt"]["verification_us"] = envoy.metric("jwt.verification_us") - verifications_before[1]
        miss_info["jwt"]["key_fetches_total"] = issuer.key_fetches() - fetches_before
        envoy.stop()
        envoy = None

        # Memory of each setup on its own: an Envoy with only that listener, after load.
        print("==> RSS of an Envoy per setup", file=sys.stderr)
        alone_rss = {}
        for case in "abcd":
            alone = Envoy(work_dir, issuer.port, api.port, name=f"envoy-rss-{case}", log_args=["-l", "warning"],
                          env={"ZITADEL_API_KEY_JSON": issuer.api_key_json},
                          edit_config=config_editor([KINDS[case]], jwks, args.wasm))
            try:
                wrk(f"http://127.0.0.1:{alone.ports[KINDS[case]]}{PATH}", 16, args.seconds, token=tokens[case])
                alone_rss[case] = rss_mb(alone.process.proc.pid)
            finally:
                alone.stop()
    finally:
        for part in (envoy, api, issuer):
            if part:
                part.stop()
        if sys.exc_info()[0] is None and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs, configs and tokens kept in {work_dir}", file=sys.stderr)

    if hit_calls:
        raise SystemExit(f"(c), (r) or (g) cache-hit runs made {hit_calls} introspection calls")
    report = build_report(args, results, miss_info, bursts, rss, alone_rss, sizes, env)
    print()
    print(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("# Benchmark results\n\nWritten by `make bench` (scripts/bench.sh → bench/bench.py); "
                "see the README's Performance section.\n\n" + report)
    if not args.no_plot:
        plot(results, os.path.join(args.out, "results.png"),
             f"Envoy {env['envoy']}, --concurrency 2, {env['cores']} cores, wrk on loopback; medians of "
             f"{args.rounds} round{'s' if args.rounds > 1 else ''}; ratio to (a) at the same connection count on the bars")
    print(f"wrote {os.path.join(args.out, 'results.md')}" + ("" if args.no_plot else " and results.png")
          + f"; the run took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
