#!/usr/bin/env python3
"""Cost of the filter on a cache hit, next to the same Envoy without it.

One Envoy (--concurrency 2) gets two listeners in front of the same demo API:
one with the filter, one without. wrk (loopback only, bounded) alternates
between them, so both see the same machine state; the report gives ratios
measured in this one run. Run it with scripts/bench.sh.
"""
import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "e2e"))

import yaml  # noqa: E402

from stack import WASM, Api, Envoy, Issuer, free_port  # noqa: E402


def add_listener_without_filter(text, envoy):
    config = yaml.safe_load(text)
    listener = copy.deepcopy(config["static_resources"]["listeners"][0])
    envoy.plain_port = free_port()
    listener["name"] = "api_no_filter"
    listener["address"]["socket_address"]["port_value"] = envoy.plain_port
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "api_no_filter"
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    config["static_resources"]["listeners"].append(listener)
    return json.dumps(config)


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def wrk(url, token, connections, seconds):
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw non-2xx answers for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return {"rps": rps, "p50_us": pct["50"], "p99_us": pct["99"]}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per measurement")
    args = parser.parse_args()

    log_dir = tempfile.mkdtemp(prefix="bench-")
    issuer, api, envoy = Issuer(log_dir), Api(log_dir), None
    try:
        envoy = Envoy(log_dir, issuer.port, api.port, name="envoy-bench", log_args=["-l", "warning"],
                      env={"ZITADEL_API_KEY_JSON": issuer.api_key_json}, edit_config=add_listener_without_filter)
        token = issuer.token("reader-opaque")
        assert envoy.get("/api/private", token=token).status == 200  # warm the cache
        calls_before = issuer.introspections()
        targets = {
            "no filter": (f"http://127.0.0.1:{envoy.plain_port}/api/private", None),
            "filter, cache hit": (f"http://127.0.0.1:{envoy.port}/api/private", token),
        }
        results = {(name, c): [] for name in targets for c in (1, 16)}
        for _ in range(args.rounds):
            for connections in (1, 16):
                for name, (url, tok) in targets.items():
                    results[(name, connections)].append(wrk(url, tok, connections, args.seconds))
        calls = issuer.introspections() - calls_before
        rss = rss_mb(envoy.process.proc.pid)
    finally:
        for part in (envoy, api, issuer):
            if part:
                part.stop()

    def med(name, c, key):
        return statistics.median(r[key] for r in results[(name, c)])

    print(f"\nOne Envoy 1.40 (--concurrency 2), two listeners, same upstream; wrk -t1, {args.rounds} alternating "
          f"rounds of {args.seconds}s, medians. .wasm: {os.path.getsize(WASM) / 1024:.0f} KiB.\n")
    print("| target | connections | requests/s | p50 | p99 |")
    print("| --- | --- | --- | --- | --- |")
    for c in (1, 16):
        for name in targets:
            print(f"| {name} | {c} | {med(name, c, 'rps'):,.0f} | {med(name, c, 'p50_us'):.0f} µs "
                  f"| {med(name, c, 'p99_us'):.0f} µs |")
    base, hit = "no filter", "filter, cache hit"
    print()
    for c in (1, 16):
        print(f"{c:>2} connection(s): cache hit / no filter = {med(hit, c, 'rps') / med(base, c, 'rps'):.2f}x "
              f"requests/s; p50 added {med(hit, c, 'p50_us') - med(base, c, 'p50_us'):+.0f} µs")
    print(f"introspection calls during the timed runs: {calls} (all requests were cache hits)")
    print(f"Envoy RSS after the runs: {rss:.0f} MB")
    if calls != 0:
        raise SystemExit("cache-hit runs made introspection calls")


if __name__ == "__main__":
    main()
