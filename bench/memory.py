#!/usr/bin/env python3
"""Memory run: ONE MILLION distinct tokens through the filter, Envoy's RSS
before, during and after, next to the cache's documented bound.

The filter keeps verdicts in a fixed table of `cache.slots` shared-data keys,
so memory should stay within about slots × (max_entry_bytes + 130 bytes)
however many distinct tokens pass (README, "The cache"). Here every request
carries a token never seen before, so every request is a cache miss that ends
in a cache write.

The real issuer can't mint a million tokens quickly, so a stub issuer
(bench/stub-issuer.mjs, Node) answers active:true for any token. wrk makes the
tokens from a counter (bench/wrk/distinct.lua). The route answers from Envoy
itself (direct_response) so no upstream limits the rate; the filter runs
before the router either way. The filter runs with its default cache settings.
Run it with scripts/memory.sh (or `make memory`); --tokens N for shorter runs.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "envoy"))

import yaml  # noqa: E402

import render  # noqa: E402
from bench import filter_origin  # noqa: E402
from stack import WASM, Envoy, Process, first_hcm, free_port  # noqa: E402

DISTINCT_LUA = os.path.join(HERE, "wrk", "distinct.lua")
PATH = "/api/private"
# The defaults of src/config.rs (cache.slots, cache.max_entry_bytes) and the README's
# per-slot overhead (key and Envoy's bookkeeping).
DEFAULT_SLOTS = 8192
DEFAULT_MAX_ENTRY_BYTES = 1024
SLOT_OVERHEAD_BYTES = 130
MB = 1_000_000


class StubIssuer:
    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process("stub-issuer", ["node", os.path.join(HERE, "stub-issuer.mjs"), str(self.port),
                                               self.url, render.PROJECT_ID], log_dir)
        self.process.wait_for_line("stub issuer ready")

    def introspections(self):
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as resp:
            return json.load(resp)["introspections"]

    def stop(self):
        self.process.stop()


def edit_config(wasm):
    return lambda text, envoy: direct_response(text, wasm)


def direct_response(text, wasm):
    """The route answers 200 from Envoy itself: no upstream in the way."""
    config = yaml.safe_load(text)
    hcm = first_hcm(config)
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.wasm":
            f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = wasm
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    route.pop("route")
    route["direct_response"] = {"status": 200, "body": {"inline_string": "OK\n"}}
    return json.dumps(config)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def fmt_mb(n):
    return f"{n / MB:.1f} MB"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="distinct tokens to send (default 1000000)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--max-seconds", type=int, default=1200, help="give up after this long (default 1200)")
    parser.add_argument("--out", default=os.path.join(HERE, "memory-results.md"),
                        help="markdown report (default bench/memory-results.md; '-' for none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir (logs, configs)")
    parser.add_argument("--wasm", default=WASM, help="the filter's .wasm (default: this checkout's build, after wasm-opt)")
    args = parser.parse_args()
    began = time.monotonic()
    args.wasm = os.path.abspath(args.wasm)
    if not os.path.exists(args.wasm):
        raise SystemExit(f"{args.wasm} is missing: run scripts/memory.sh, which builds it")

    work_dir = tempfile.mkdtemp(prefix="memory-")
    stub, envoy = StubIssuer(work_dir), None
    samples = []  # (seconds since the load began, introspections answered, RSS bytes)
    try:
        plugin = render.plugin_config(
            stub.url, f"127.0.0.1:{stub.port}",
            client_auth={"method": "client_secret_basic", "client_id": "300000000000000006@demo",
                         "client_secret_env": "INTROSPECTION_CLIENT_SECRET"})
        del plugin["cache"]  # the defaults, as documented
        envoy = Envoy(work_dir, stub.port, free_port(), name="envoy-memory", plugin=plugin,
                      log_args=["-l", "warning"], env={"INTROSPECTION_CLIENT_SECRET": secrets.token_urlsafe(24)},
                      edit_config=edit_config(args.wasm))
        pid = envoy.process.proc.pid
        assert envoy.get(PATH, token="warm-up-token-0001").status == 200
        assert envoy.get(PATH).status == 401
        time.sleep(1)
        before = rss_bytes(pid)
        calls_before = stub.introspections()

        prefix = "m" + secrets.token_hex(4) + "x"
        cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.max_seconds}s", "-s", DISTINCT_LUA,
               f"http://127.0.0.1:{envoy.port}{PATH}", "--", str(args.tokens), prefix]
        print(f"==> {args.tokens:,} distinct tokens through the filter (wrk -c{args.connections}); "
              f"Envoy RSS before: {fmt_mb(before)}", file=sys.stderr)
        out = {}

        def load():
            out["wrk"] = subprocess.run(cmd, capture_output=True, text=True, timeout=args.max_seconds + 60).stdout

        start = time.monotonic()
        runner = threading.Thread(target=load)
        runner.start()
        next_report = 30
        while runner.is_alive():
            runner.join(1.0)
            elapsed = time.monotonic() - start
            samples.append((elapsed, stub.introspections() - calls_before, rss_bytes(pid)))
            if elapsed >= next_report:
                print(f"    {elapsed:4.0f} s: {samples[-1][1]:>9,} tokens, RSS {fmt_mb(samples[-1][2])}",
                      file=sys.stderr)
                next_report += 30
        load_seconds = time.monotonic() - start
        after = rss_bytes(pid)
        time.sleep(5)
        after_idle = rss_bytes(pid)
        calls = stub.introspections() - calls_before
        stats = envoy.stats()
    finally:
        for part in (envoy, stub):
            if part:
                part.stop()
        if sys.exc_info()[0] is None and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs and configs kept in {work_dir}", file=sys.stderr)

    wrk_out = out.get("wrk", "")
    m = re.search(r"(\d+) requests in", wrk_out)
    answered = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk_out)
    non_2xx = int(m.group(1)) if m else 0
    bound = DEFAULT_SLOTS * (DEFAULT_MAX_ENTRY_BYTES + SLOT_OVERHEAD_BYTES)
    peak = max([s[2] for s in samples] + [after])
    growth = peak - before

    def rss_at(count):
        for _, done, rss in samples:
            if done >= count:
                return rss
        return None

    checkpoints = sorted({c for c in (10_000, 100_000, 250_000, 500_000, 750_000) if c < args.tokens} | {args.tokens})
    lines = [
        f"{args.tokens:,} distinct tokens through the filter (default cache: {DEFAULT_SLOTS} slots, "
        f"max_entry_bytes {DEFAULT_MAX_ENTRY_BYTES}), Envoy `--concurrency 2`, wrk -c{args.connections}, stub issuer "
        f"answering active:true; {os.cpu_count()} cores. Filter: {filter_origin(args.wasm)}.",
        "",
        f"- sent and answered: {answered:,} requests in {load_seconds:.0f} s ({answered / load_seconds:,.0f} "
        f"requests/s), {non_2xx} non-2xx; issuer calls: {calls:,} (every token a cache miss)",
        "- filter counters: " + ", ".join(f"{k.removeprefix('wasmcustom.oauth_introspection.')} {v:,}"
                                           for k, v in sorted(stats.items())
                                           if k.startswith("wasmcustom.oauth_introspection.") and v),
        "",
        "| when | Envoy RSS | vs. before |",
        "| --- | ---: | ---: |",
        f"| before (started, one request) | {fmt_mb(before)} | |",
    ]
    for c in checkpoints:
        rss = rss_at(c)
        if rss is not None:
            lines.append(f"| after {c:,} tokens | {fmt_mb(rss)} | {(rss - before) / MB:+.1f} MB |")
    lines += [
        f"| peak during the run (sampled each second) | {fmt_mb(peak)} | {growth / MB:+.1f} MB |",
        f"| after the run | {fmt_mb(after)} | {(after - before) / MB:+.1f} MB |",
        f"| 5 s later | {fmt_mb(after_idle)} | {(after_idle - before) / MB:+.1f} MB |",
        "",
        f"{'pass' if growth <= bound else 'MISS'}: growth ≤ the documented cache bound, slots × (max_entry_bytes + "
        f"{SLOT_OVERHEAD_BYTES} B) = {DEFAULT_SLOTS} × {DEFAULT_MAX_ENTRY_BYTES + SLOT_OVERHEAD_BYTES} B = "
        f"{fmt_mb(bound)}: peak growth {growth / MB:+.1f} MB.",
    ]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write("# Memory run\n\nWritten by `make memory` (scripts/memory.sh → bench/memory.py); see the README's "
                    "Performance section.\n\n" + report)
        print(f"wrote {args.out}")
    print(f"the run took {time.monotonic() - began:.0f} s")
    if answered < args.tokens:
        raise SystemExit(f"only {answered:,} of {args.tokens:,} requests were answered")
    if calls != args.tokens:
        raise SystemExit(f"{calls:,} issuer calls for {args.tokens:,} distinct tokens: expected one each")


if __name__ == "__main__":
    main()
