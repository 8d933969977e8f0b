"""What each real framework upstream (upstreams.py) serves for a hostile spelling of a path,
asked straight at its port, without Envoy: the handler it served, or the status it answered
when no handler did. The table is what the frameworks did when the test was written, not what
anyone expected; it is the baseline for the tests that put these upstreams behind Envoy.

What it shows:
  - Express matches its routes case-insensitively (/ADMIN and /Api/Private-Scoped reach admin
    and scoped), against the raw path: it resolves no `..`, decodes no %61 (/%61dmin is public),
    takes `;` as a plain character (/admin;x is public, /api/private-scoped;v=1 is api) and
    keeps `//` (/api//private-scoped is api; //admin is public).
  - The WHATWG URL parser resolves `..`, `%2e%2e` and `\\..\\` (/public/../admin and
    /public\\..\\admin are admin, /admin/../public is public), keeps `;` and empty segments
    (/api/private//../public is /api/private/public), reads //admin as host "admin" with path
    `/` (public), and decodes no %61 or %2f.
  - Starlette and Flask percent-decode the path (%61 and %2f included: /%61dmin and /admin%2fx
    are admin) but resolve no `..` after decoding either (/public/%2e%2e/admin is public, seen as
    /public/../admin), take `;` as a plain character, and are case-sensitive. In Flask, werkzeug's
    server reads //admin as /admin (admin), and a `<path:rest>` matches neither an empty rest nor
    one that starts with `/`, so /admin/, /api/ and /api//private-scoped fall to the catch-all
    (public); with a catch-all route, merge_slashes never redirects, since a rule matched.
  - Starlette, Flask and Tomcat decode reserved characters too before they route (/users/%40me
    is their /users/@me); Express and the WHATWG app do not (public).
  - Tomcat drops path parameters and a `;`-only segment before it maps (/admin;x and
    /public/;/../admin are admin, /api/private-scoped;v=1 is scoped), merges `//`, resolves `..`
    and `%2e%2e` (and `..;`), is case-sensitive, and refuses %2f, `\\` and a `..` above the root
    with 400.
So /admin/../public reaches admin on Express, Starlette and Flask, and /public/../admin reaches
admin on WHATWG and Tomcat: no single reading of a path is safe for every upstream.
"""
import pytest

import upstreams
from compose import skip_unless_required

FRAMEWORKS = ("express", "whatwg", "starlette", "flask", "tomcat")

# The handler each framework served (or its status when none did), in FRAMEWORKS order.
READINGS = {
    #                                   express   whatwg    starlette flask     tomcat
    "/":                               ("public", "public", "public", "public", "public"),
    "/adminx":                         ("public", "public", "public", "public", "public"),
    "/admin":                          ("admin",  "admin",  "admin",  "admin",  "admin"),
    "/admin/":                         ("admin",  "admin",  "admin",  "public", "admin"),
    "/ADMIN":                          ("admin",  "public", "public", "public", "public"),
    "/%61dmin":                        ("public", "public", "admin",  "admin",  "admin"),
    "/admin%2fx":                      ("public", "public", "admin",  "admin",  400),
    "/admin;x":                        ("public", "public", "public", "public", "admin"),
    "/admin/../public":                ("admin",  "public", "admin",  "admin",  "public"),
    "/public/../admin":                ("public", "admin",  "public", "public", "admin"),
    "/public/%2e%2e/admin":            ("public", "admin",  "public", "public", "admin"),
    "/public/..;/admin":               ("public", "public", "public", "public", "admin"),
    "/public/;/../admin":              ("public", "public", "public", "public", "admin"),
    "/public/../../admin":             ("public", "admin",  "public", "public", 400),
    "/public\\..\\admin":              ("public", "admin",  "public", "public", 400),
    "//admin":                         ("public", "public", "public", "admin",  "admin"),
    "/api/private//../public":         ("api",    "api",    "api",    "api",    "api"),
    "/api/%2e%2e/admin":               ("api",    "admin",  "api",    "api",    "admin"),
    "/api/private-scoped;v=1":         ("api",    "api",    "api",    "api",    "scoped"),
    "/api//private-scoped":            ("api",    "api",    "api",    "public", "scoped"),
    "/Api/Private-Scoped":             ("scoped", "public", "public", "public", "public"),
    "/users/@me":                      ("me",     "me",     "me",     "me",     "me"),
    "/users/%40me":                    ("public", "public", "me",     "me",     "me"),
}


@pytest.fixture(params=FRAMEWORKS)
def upstream(request, framework_upstreams):
    started, missing = framework_upstreams
    if request.param in missing:
        skip_unless_required(f"the {request.param} upstream", missing[request.param])
    return started[request.param]


def reading(upstream, path):
    response = upstreams.raw_request(upstream.port, path)
    return response.header("x-handler") or response.status


def test_each_framework_reads_paths_as_recorded(upstream):
    column = FRAMEWORKS.index(upstream.name)
    observed = {path: reading(upstream, path) for path in READINGS}
    assert observed == {path: row[column] for path, row in READINGS.items()}


def test_handlers_answer_every_method_with_the_headers_the_tests_read(upstream):
    for method in ("GET", "POST", "HEAD"):
        response = upstreams.raw_request(upstream.port, "/admin/x", method=method,
                                         header_lines=["x-routed-vhost: orders", "Content-Length: 0"])
        assert (response.status, response.header("x-handler"), response.header("x-echo-vhost")) == \
            (200, "admin", "orders"), (method, response)
        assert response.body == ("" if method == "HEAD" else "handler admin\n")
    # The path as the framework saw it, header-safe: a space and the UTF-8 bytes of é as %XX,
    # whether the framework decoded them (Starlette, Flask, Tomcat) or not.
    response = upstreams.raw_request(upstream.port, "/public/a%20caf%C3%A9")
    assert (response.header("x-handler"), response.header("x-seen-path")) == ("public", "/public/a%20caf%C3%A9")
    # And the target as it arrived, before any of that.
    response = upstreams.raw_request(upstream.port, "/api/x;y//z?q=%2e")
    assert response.header("x-raw-target") == "/api/x;y//z?q=%2e", upstream.name
    assert response.header("x-echo-vhost") is None


def test_every_handler_has_a_requirement():
    assert set(upstreams.REQUIREMENTS) == {handler for row in READINGS.values() for handler in row
                                           if isinstance(handler, str)}
