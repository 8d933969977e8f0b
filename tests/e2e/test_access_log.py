"""Who was let in and why, in Envoy's access log: the filter leaves each request's outcome in
filter state (wasm.oauth_introspection.*) and the shipped configs log it as JSON beside Envoy's
own fields (envoy/envoy.yaml.in). Read from the real Envoy's access log file, for an allow and
for each kind of denial the demo configuration can give; never a token."""
import json
import uuid

from stack import raw_get, wait_for

FIELDS = ("decision", "reason", "api", "issuer", "subject", "client_id")


def logged(envoy, request_id):
    """The access log entry of the request sent with `request_id`."""
    def find():
        return next((e for e in envoy.access_log_entries() if e.get("request_id") == request_id), None)
    return wait_for(find, 15, f"the access log entry of {request_id}")


def send(envoy, path, token=None, host="127.0.0.1"):
    request_id = str(uuid.uuid4())
    lines = [f"x-request-id: {request_id}"] + ([f"Authorization: Bearer {token}"] if token else [])
    resp = raw_get(envoy.port, path, lines, host=host)
    return resp, logged(envoy, request_id)


def outcome(entry):
    return {field: entry[field] for field in FIELDS if entry.get(field) not in (None, "-")}


def test_an_allow_names_the_api_the_issuer_and_who(envoy, issuer, tokens):
    resp, entry = send(envoy, "/api/private-scoped", tokens("reader-opaque"))
    assert resp.status == 200, resp
    user = issuer.ids["service_users"]["reader-opaque"]
    assert outcome(entry) == {"decision": "allow", "reason": "valid_token", "api": "default", "issuer": "default",
                              "subject": user["user_id"], "client_id": "reader-opaque"}
    assert (entry["status"], entry["path"], entry["method"]) == (200, "/api/private-scoped", "GET")


def test_each_denial_says_why(envoy, tokens):
    cases = [
        ("/api/private", None, "127.0.0.1", 401, {"api": "default", "reason": "missing_token"}),
        ("/api/private", "never-issued", "127.0.0.1", 401, {"api": "default", "reason": "invalid_token"}),
        ("/api/private-scoped", tokens("plain-opaque"), "127.0.0.1", 403,
         {"api": "default", "reason": "insufficient_role"}),
        ("/elsewhere", None, "127.0.0.1", 403, {"reason": "no_rule"}),
        ("/api/private", None, "user@127.0.0.1", 400, {"reason": "bad_host"}),
        ("/api/private;x", None, "127.0.0.1", 400, {"reason": "bad_path"}),
    ]
    for path, token, host, status, fields in cases:
        resp, entry = send(envoy, path, token, host)
        assert resp.status == status, (path, resp)
        assert outcome(entry) == {"decision": "deny", **fields}, (path, entry)
        assert entry["status"] == status


def test_a_public_route_is_logged_as_such(envoy):
    resp, entry = send(envoy, "/public")
    assert resp.status == 200
    assert outcome(entry) == {"decision": "allow", "reason": "public"}


def test_the_query_is_not_logged(envoy):
    # A query may carry secrets (RFC 6750 allows access_token=...; not one of this run's tokens,
    # so that the responses' scan for secrets does not flag the request line).
    marker = uuid.uuid4().hex
    resp, entry = send(envoy, f"/public?access_token={marker}")
    assert resp.status == 200
    assert entry["path"] == "/public" and marker not in json.dumps(entry)
