"""Hostile spellings of paths, sent through the real Envoy to real frameworks, judged by which of
the framework's own handlers served each one.

Five upstreams (upstreams.py: Express 5, a WHATWG-URL Node app, Starlette, Flask and Debian's
Tomcat 10) each have the same handlers, routed by their own routers: `admin` (/admin and below,
needs the role), `me` (/users/@me and below, a reserved character; needs the role), `scoped`
(/api/private-scoped and below, needs the role), `api` (/api and below, needs a valid token) and
a public catch-all. The filter's rules say the same, with every other
path public (`unmatched: public`): the weakest policy an attacker could hope to land in.

Each spelling of the corpus goes to every upstream (one Envoy virtual host each) without a token
and with a valid token that lacks the role, through two Envoys: one with the shipped path and
host options (normalize_path, merge_slashes, escaped slashes rejected, ports and trailing dots
stripped) and one with Envoy's defaults, where the filter's own reading is all there is. A
spelling passes when it is refused, or when what served it asked no more than the token holds:

  - the framework's handler (its `x-handler`), and
  - the rule an RFC 3986 reader (dot-segments resolved, parameters kept) and a path-parameter-
    dropping reader (Tomcat, Spring: parameters dropped, slashes merged, dot-segments resolved)
    would apply to the path as it reached the upstream (its `x-raw-target`).

Whether the filter let a request through is read from the response, not from the filter:
Envoy's router stamps `x-envoy-upstream-service-time` on what an upstream answered, never on a
local reply. The base spellings also go with a token that holds the role, and must be served.
"""
import concurrent.futures
import json
import os
import re
import subprocess

import pytest
import yaml

import upstreams
from compose import skip_unless_required
from stack import first_hcm, raw_get, render

ROLE = "read:messages"
RULES = [
    {"prefix": "/admin", "access": "roles", "roles": [ROLE]},
    {"prefix": "/users/@me", "access": "roles", "roles": [ROLE]},
    {"prefix": "/api/private-scoped", "access": "roles", "roles": [ROLE]},
    {"prefix": "/api", "access": "authenticated"},
]
RANK = {"none": 0, "authenticated": 1, "role": 2}
# What each token meets, by the requirement names of upstreams.REQUIREMENTS.
TOKENS = {"no token": "none", "plain-opaque": "authenticated", "reader-opaque": "role"}

BASES = ["/admin", "/admin/x", "/users/@me", "/users/@me/x", "/api", "/api/x", "/api/private-scoped", "/api/private-scoped/x", "/public/x", "/"]
DOTS = [".", "..", "%2e", "%2E%2e", ".%2e", "..;", ".;x", "..%3b"]
DETOURS = ["public/..", "admin/..", "api/..", "x/..", "public/;/.."]
# Spellings readers are known to disagree on (see test_upstreams_read_paths.py), and their kin.
KNOWN = [
    "/admin;x", "/admin/../public", "/public/../admin", "/api/private//../public", "/public/;/../admin",
    "/public/%2e%2e/admin", "//admin", "///admin", "//evil.example/admin", "/api/private-scoped;v=1",
    "/api//private-scoped", "/Api/Private-Scoped", "/ADMIN", "/%61dmin", "/admin%2fx", "/admin%2Fx",
    "/public/..;/admin", "/public/../../admin", "/public\\..\\admin", "/api/%2e%2e/admin", "/%2e%2e/admin",
    "/api/x/../../admin", "/public/x/../../admin", "/admin%3bx", "/admin%3Bx/y", "/admin%00", "/admin%20",
    "/admin%09", "/admin/%2e", "/public/%252e%252e/admin", "/public/..%252fadmin", "/public/..%c0%afadmin",
    "/admin?x=/public", "/public?/admin", "/public#/../admin", "/public%23/../admin", "/ADMIN;x", "/Admin/",
    "/api/Private-Scoped;v=1", "/API", "/aPi/x", "/admin/.;/x", "/;/admin", "/;x/admin", "/public;/../admin",
    "/users/%40me", "/users/%40Me/x", "/users/@me;x", "/users%2f@me", "/users/%2540me", "/Users/@ME",
]


def join(segments):
    return "/" + "/".join(segments)


def corpus():
    """Every base path with `.`/`..` (in its spellings), detours, `;` parameters, empty segments,
    escaped letters and other letter cases in every position, and the KNOWN spellings."""
    paths = list(KNOWN)
    for base in BASES:
        segs = [s for s in base.split("/") if s]
        paths.append(base)
        for i in range(len(segs) + 1):
            paths += [join(segs[:i] + [dot] + segs[i:]) for dot in DOTS]
            paths += [join(segs[:i] + detour.split("/") + segs[i:]) for detour in DETOURS]
            paths.append(join(segs[:i] + [""] + segs[i:]))
            paths.append(join(segs[:i] + [";"] + segs[i:]))
        for i, seg in enumerate(segs):
            for suffix in (";x", ";jsessionid=0123", "%3Bx"):
                paths.append(join(segs[:i] + [seg + suffix] + segs[i + 1:]))
            for at in range(len(seg)):
                encoded = f"%{ord(seg[at]):02x}"
                paths.append(join(segs[:i] + [seg[:at] + encoded + seg[at + 1:]] + segs[i + 1:]))
            paths.append(join(segs[:i] + [seg.upper()] + segs[i + 1:]))
            paths.append(join(segs[:i] + [seg.capitalize()] + segs[i + 1:]))
        paths += [base + "//", base + "/.", base + "/..", base.upper()]
    return sorted(set(paths))


CORPUS = corpus()


def test_corpus_is_generous():
    assert len(CORPUS) >= 400, len(CORPUS)


def framework_vhosts(names_ports, hardened):
    """edit_config: one virtual host per upstream (`<name>.test`), each its own cluster; with
    hardened=False, Envoy's defaults for paths and hosts (no normalization, nothing stripped)."""
    def edit(text, _envoy):
        config = yaml.safe_load(text)
        hcm = first_hcm(config)
        hcm["route_config"]["virtual_hosts"] = [
            {"name": name, "domains": [f"{name}.test"],
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"upstream_{name}"}}]}
            for name in names_ports]
        config["static_resources"]["clusters"] += [
            {"name": f"upstream_{name}", "type": "STATIC", "connect_timeout": "1s",
             "load_assignment": {"cluster_name": f"upstream_{name}", "endpoints": [{"lb_endpoints": [
                 {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
            for name, port in names_ports.items()]
        if not hardened:
            for option in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action",
                           "strip_any_host_port", "strip_trailing_host_dot"):
                hcm.pop(option)
        return yaml.safe_dump(config)
    return edit


@pytest.fixture(scope="module", params=["hardened", "envoy-defaults"])
def readers_envoy(request, envoy_factory, issuer, framework_upstreams):
    started, _ = framework_upstreams
    plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}", rules=RULES, unmatched="public")
    names_ports = {name: upstream.port for name, upstream in started.items()}
    envoy = envoy_factory(f"envoy-readers-{request.param}", plugin,
                          edit_config=framework_vhosts(names_ports, request.param == "hardened"))
    envoy.mode = request.param
    return envoy


# ---- the two model readers of the pass criterion ----

def unescape_unreserved(segment):
    return re.sub(r"%([0-9A-Fa-f]{2})",
                  lambda m: chr(int(m[1], 16)) if re.fullmatch(r"[A-Za-z0-9._~-]", chr(int(m[1], 16)))
                  else "%" + m[1].upper(), segment)


def resolve(segments):
    """RFC 3986 remove_dot_segments over a segment list (the leading empty one dropped)."""
    out = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def rfc3986_reading(path):
    return resolve([unescape_unreserved(s) for s in path.split("?")[0].split("/")[1:]])


def parameter_dropping_reading(path):
    segments = [unescape_unreserved(s.split(";")[0]) for s in path.split("?")[0].split("/")[1:]]
    merged = [s for s in segments[:-1] if s] + segments[-1:]
    return resolve(merged)


def rule_requirement(path):
    for rule in RULES:
        prefix = rule["prefix"]
        if path == prefix or path.startswith(prefix + "/"):
            return "role" if rule["access"] == "roles" else "authenticated"
    return "none"


def violations(path, token, response):
    """What is wrong with `response` to `path` sent with `token` (empty: nothing)."""
    if "x-envoy-upstream-service-time" not in response.headers:
        return []  # refused by the filter (or by Envoy itself): nothing served
    holds = RANK[TOKENS[token]]
    found = []
    handler = response.header("x-handler")
    if handler is not None and RANK[upstreams.REQUIREMENTS[handler]] > holds:
        found.append(f"handler {handler} served it")
    forwarded = response.header("x-raw-target")
    if forwarded is None:
        return found + ["served without x-raw-target: not one of the upstreams"]
    for reader in (rfc3986_reading, parameter_dropping_reading):
        wanted = rule_requirement(reader(forwarded))
        if RANK[wanted] > holds:
            found.append(f"{reader.__name__} applies a rule that needs {wanted} to {forwarded!r}")
    return found


def send(envoy, name, path, token, tokens):
    lines = [f"Authorization: Bearer {tokens(token)}"] if token != "no token" else []
    return raw_get(envoy.port, path, lines, host=f"{name}.test")


def test_no_spelling_reaches_a_handler_or_rule_the_token_does_not_meet(readers_envoy, framework_upstreams, tokens,
                                                                       log_dir):
    started, _ = framework_upstreams
    jobs = [(name, path, token) for name in started for path in CORPUS for token in ("no token", "plain-opaque")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda job: send(readers_envoy, *job, tokens), jobs))
    problems, served = [], {}
    for (name, path, token), response in zip(jobs, responses):
        problems += [f"{name} {path!r} {token}: {problem}" for problem in violations(path, token, response)]
        if "x-envoy-upstream-service-time" in response.headers:
            served[name] = served.get(name, 0) + 1
    summary = {"envoy": readers_envoy.mode, "spellings": len(CORPUS), "upstreams": sorted(started),
               "requests": len(jobs), "reached an upstream": served, "violations": len(problems)}
    with open(os.path.join(log_dir, f"path-readers-{readers_envoy.mode}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    assert not problems, f"{len(problems)} of {len(jobs)}:\n" + "\n".join(problems[:40])


def test_the_base_paths_are_served_with_a_token_that_meets_them(readers_envoy, framework_upstreams, tokens):
    started, _ = framework_upstreams
    for name in started:
        for path in BASES:
            for token, holds in TOKENS.items():
                wanted = rule_requirement(path)
                response = send(readers_envoy, name, path, token, tokens)
                if RANK[holds] >= RANK[wanted]:
                    assert response.status == 200 and response.header("x-handler"), (name, path, token, response)
                else:
                    assert response.status in (401, 403), (name, path, token, response)
                    assert "x-envoy-upstream-service-time" not in response.headers, (name, path, token)


# Escapes a legitimate client sends: each reading picks the same rule, so they are served.
SERVED_ESCAPED = {"/api/x%20y": "api", "/public/caf%C3%A9": "public", "/public/100%25": "public",
                  "/users/@me/a%2Cb": "me", "/api/%61bc%3Ad": "api"}


def test_escaped_paths_every_reading_agrees_on_are_served(readers_envoy, framework_upstreams, tokens):
    started, _ = framework_upstreams
    for name in started:
        for path, handler in SERVED_ESCAPED.items():
            response = send(readers_envoy, name, path, "reader-opaque", tokens)
            assert (response.status, response.header("x-handler")) == (200, handler), (name, path, response)


def test_every_upstream_is_here(framework_upstreams):
    _, missing = framework_upstreams
    for name, why in missing.items():
        skip_unless_required(f"the {name} upstream", why)


# ---- methods: Werkzeug upper-cases the method before it routes ----

METHOD_RULES = [{"prefix": "/admin", "methods": ["GET"], "access": "roles", "roles": [ROLE]}]


@pytest.fixture(scope="module")
def methods_envoy(envoy_factory, issuer, framework_upstreams):
    started, missing = framework_upstreams
    if "flask" in missing:
        skip_unless_required("the flask upstream", missing["flask"])
    plugin = render.plugin_config(issuer.url, f"127.0.0.1:{issuer.port}", rules=METHOD_RULES, unmatched="public")
    return envoy_factory("envoy-methods", plugin, edit_config=framework_vhosts({"flask": started["flask"].port}, False))


def curl_method(envoy, method, path, http2):
    """`method` sent exactly as written (curl -X), over HTTP/1.1 or HTTP/2: (status, x-handler)."""
    # --max-time: curl takes `head` for a method with a body to wait for.
    out = subprocess.run(["curl", "-s", "--max-time", "5", "-X", method, *(["--http2-prior-knowledge"] if http2 else []),
                          "-D", "-", "-o", "/dev/null", "-H", "Host: flask.test",
                          f"http://127.0.0.1:{envoy.port}{path}"], capture_output=True, text=True, timeout=20).stdout
    status = int(out.split()[1]) if out.startswith("HTTP/") else 0
    handler = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.lower().startswith("x-handler:")), None)
    return status, handler


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_a_lower_case_method_does_not_slip_past_a_methods_rule(methods_envoy, http2):
    # Flask serves `get` with its GET handler; the rule for GET must hold for it too.
    for method in ("get", "Get", "gEt", "head"):
        status, handler = curl_method(methods_envoy, method, "/admin", http2)
        assert handler != "admin" and status not in (200, 204), (method, status, handler)
    # Envoy's HTTP/1 codec refuses such a method; HTTP/2 passes it on, and before the filter read
    # the method upper-cased too, `get /admin` reached Flask's admin handler without a token.
    # The control: GET needs the role, and a method no rule names passes to the public handler.
    assert curl_method(methods_envoy, "GET", "/admin", http2)[0] == 401
    assert curl_method(methods_envoy, "post", "/x", http2) == ((200, "public") if http2 else (400, None))
