#!/usr/bin/env python3
"""The cache hit, measured so that a 5% change can be told from noise: one Envoy with four
listeners (no filter, the empty filter, this filter, and another build of it or this filter with
1,000 rules), a long interleaved run of short wrk rounds at one connection, and for each pair
the median of the per-round ratios with a bootstrap 95% interval. Pairs are measured seconds
apart, so the machine's drift cancels; the interval says how sure the ratio is.

  bench/hit.py [--rounds 30] [--seconds 1] [--connections 1] [--baseline-wasm PATH | --rules 1000]

Run by `make bench-hit` (scripts/bench.sh --hit); `make bench` reports the wider picture.
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from stack import Api, Envoy, Issuer  # noqa: E402


def bootstrap(ratios, rounds=2000, seed=7):
    """A 95% interval of the median of `ratios`, by resampling the rounds."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--wasm", default=bench.WASM)
    parser.add_argument("--baseline-wasm", help="the other build, as case (g)")
    parser.add_argument("--rules", type=int, default=0,
                        help="instead of a baseline: (r), this filter with this many rules over 100 hosts")
    args = parser.parse_args()
    work_dir = tempfile.mkdtemp(prefix="bench-hit-")
    kinds = {"a": "plain", "b": "empty", "c": "filter"}
    if args.baseline_wasm:
        kinds["g"] = "baseline"
    if args.rules:
        kinds["r"] = "many_rules"
    issuer, api, envoy = Issuer(work_dir), Api(work_dir), None
    try:
        edit = bench.config_editor(list(kinds.values()), "{}", os.path.abspath(args.wasm),
                                   args.baseline_wasm and os.path.abspath(args.baseline_wasm), args.rules)
        envoy = Envoy(work_dir, issuer.port, api.port, name="envoy-hit", log_args=["-l", "warning"],
                      env={"ZITADEL_API_KEY_JSON": issuer.api_key_json}, edit_config=edit)
        token = issuer.token("reader-opaque")
        for case, kind in kinds.items():
            status = bench.get_status(envoy.ports[kind], token, host=bench.host_for(kind))
            assert status == 200, (case, status)
        for case, kind in kinds.items():
            bench.wrk(bench.url_for(envoy, kind), args.connections, 1, token=token, host=bench.host_for(kind))
        results = {case: [] for case in kinds}
        calls = issuer.introspections()
        order = list(kinds)
        for r in range(args.rounds):
            for case in order[r % len(order):] + order[:r % len(order)]:
                kind = kinds[case]
                results[case].append(bench.wrk(bench.url_for(envoy, kind), args.connections, args.seconds,
                                               token=token, host=bench.host_for(kind)))
        if issuer.introspections() != calls:
            raise SystemExit("a cache-hit run made an introspection call")
    finally:
        for part in (envoy, api, issuer):
            if part:
                part.stop()

    print(f"{args.rounds} interleaved rounds of {args.seconds} s at {args.connections} connection(s), "
          f"Envoy {bench.envoy_version()}, load average {os.getloadavg()[0]:.1f} at the end")
    for case in kinds:
        rps = [run["rps"] for run in results[case]]
        print(f"  ({case}) {kinds[case]}: {statistics.median(rps):,.0f} requests/s median "
              f"(p50 {statistics.median(run['p50_us'] for run in results[case]):.0f} µs)")
    pairs = [("c", "b"), ("c", "a")] + [(x, "c") for x in ("g", "r") if x in kinds]
    report = {}
    for x, y in pairs:
        ratios = [p["rps"] / q["rps"] for p, q in zip(results[x], results[y])]
        low, high = bootstrap(ratios)
        added = statistics.median(p["p50_us"] - q["p50_us"] for p, q in zip(results[x], results[y]))
        report[f"{x}/{y}"] = {"ratio": statistics.median(ratios), "low": low, "high": high, "p50_added_us": added}
        print(f"  ({x}) / ({y}): {statistics.median(ratios):.3f}× requests/s, 95% interval {low:.3f}–{high:.3f}; "
              f"p50 {added:+.0f} µs")
    print(json.dumps(report))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
