"""An MCP server behind Envoy and the filter, with no auth code of its own, and the official MCP
SDK's client with its client-credentials provider in front: the client gets the 401, reads the
`resource_metadata` of the challenge, fetches the RFC 9728 metadata the filter serves, discovers
the local issuer from it, gets a token (sending RFC 8707's `resource`, which the issuer ignores
as ZITADEL does), then lists and calls a tool through the filter. A client without a token, with
another project's token, or with credentials of another project is refused, and the MCP server
never sees its requests. The order of the requests the filter saw is printed (pytest -s)."""
import json
import os
import subprocess

import pytest

from stack import ROOT, Envoy, Process, free_port, http_request, wait_for

MCP_DIR = os.path.join(ROOT, "tests", "e2e", "mcp")
PORT_MARK = "__ENVOY_PORT__"


def plugin(issuer):
    project = issuer.ids["project_id"]
    return {
        "issuers": {"zitadel": {
            "issuer": issuer.url,
            "introspection": {"cluster": "issuer", "authority": f"127.0.0.1:{issuer.port}", "timeout_ms": 2000},
            "client_auth": {"method": "private_key_jwt", "key_env": "ZITADEL_API_KEY_JSON"},
        }},
        "apis": {"mcp": {
            "project_id": project, "issuers": ["zitadel"],
            "resource": f"http://127.0.0.1:{PORT_MARK}/mcp", "resource_name": "The filter's test MCP server",
            # What a client should ask for: ZITADEL puts the project into aud for this scope only.
            "scopes_supported": ["openid", f"urn:zitadel:iam:org:project:id:{project}:aud"],
        }},
        "rules": [{"path": "/mcp", "api": "mcp", "access": "authenticated"}],
        "unmatched": "deny",
    }


@pytest.fixture(scope="module")
def mcp_server(log_dir):
    port = free_port()
    server = Process("mcp-server", ["node", os.path.join(MCP_DIR, "server.mjs"), "--port", str(port)], log_dir)
    server.wait_for_line("mcp server ready")
    server.port = port
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mcp_envoy(log_dir, issuer, mcp_server):
    envoy = Envoy(log_dir, issuer.port, mcp_server.port, name="envoy-mcp", plugin=plugin(issuer),
                  env={"ZITADEL_API_KEY_JSON": issuer.api_key_json},
                  edit_config=lambda text, envoy: text.replace(PORT_MARK, str(envoy.port)))
    yield envoy
    envoy.stop()


def upstream_requests(mcp_server):
    return json.loads(http_request(mcp_server.port, "/_upstream/requests").body)


def run_client(envoy, issuer, *args):
    out = subprocess.run(["node", os.path.join(MCP_DIR, "client.mjs"), "--url", f"http://127.0.0.1:{envoy.port}/mcp",
                          "--issuer", issuer.url, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.returncode


def flow(envoy, since):
    """The requests the filter saw since entry `since` of the access log: method, path, status, decision, reason."""
    wait_for(lambda: len(envoy.access_log_entries()) > since, 10, "the access log")
    return [(e["method"], e["path"], e["status"], e["decision"], e["reason"]) for e in envoy.access_log_entries()[since:]]


def test_an_mcp_client_finds_the_issuer_itself_and_calls_a_tool(mcp_envoy, mcp_server, issuer):
    user = issuer.ids["service_users"]["reader-opaque"]
    before, tokens_before, seen_before = len(mcp_envoy.access_log_entries()), issuer.stats()["token_requests"], \
        len(upstream_requests(mcp_server))
    result, code = run_client(mcp_envoy, issuer, "--client-id", user["client_id"], "--client-secret",
                              user["client_secret"])
    assert code == 0, result
    assert result["tools"] == ["whoami"]
    # The upstream got the identity the filter vouched for.
    assert result["whoami"]["subject"] == user["user_id"]
    assert result["whoami"]["client_id"] == user["client_id"]
    assert issuer.stats()["token_requests"] == tokens_before + 1
    wait_for(lambda: len(flow(mcp_envoy, before)) >= 6, 10, "every request in the access log")
    seen = flow(mcp_envoy, before)
    print("\nthe MCP client's requests, as the filter saw them:")
    for method, path, status, decision, reason in seen:
        print(f"  {method} {path} -> {status} {decision} {reason}")
    # 1: no token yet: 401, pointing at the metadata; 2: the metadata, answered by the filter.
    assert seen[0] == ("POST", "/mcp", 401, "deny", "missing_token"), seen
    assert seen[1] == ("GET", "/.well-known/oauth-protected-resource/mcp", 200, "answer", "resource_metadata"), seen
    # Then only admitted requests, each with the token.
    assert all(decision == "allow" and reason == "valid_token" for _, _, _, decision, reason in seen[2:]), seen
    assert {method for method, *_ in seen[2:]} >= {"POST"}
    # The MCP server saw exactly the admitted ones, each with a token.
    reached = upstream_requests(mcp_server)[seen_before:]
    assert len(reached) == len(seen) - 2, (reached, seen)
    assert all(request["authorization"] for request in reached), reached


def test_the_metadata_and_the_challenge_as_served(mcp_envoy, issuer, mcp_server):
    resource = f"http://127.0.0.1:{mcp_envoy.port}/mcp"
    metadata_url = f"http://127.0.0.1:{mcp_envoy.port}/.well-known/oauth-protected-resource/mcp"
    challenge = mcp_envoy.get("/mcp", method="POST", body="{}").header("www-authenticate")
    assert challenge == f'Bearer resource_metadata="{metadata_url}"'
    resp = mcp_envoy.get("/.well-known/oauth-protected-resource/mcp")
    assert resp.status == 200 and resp.header("content-type") == "application/json"
    assert resp.header("access-control-allow-origin") == "*"
    assert resp.json() == {
        "resource": resource,
        "authorization_servers": [issuer.url],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["openid", f"urn:zitadel:iam:org:project:id:{issuer.ids['project_id']}:aud"],
        "resource_name": "The filter's test MCP server",
    }
    # Built from the configuration, never from the request: another Host header changes nothing...
    spoofed = mcp_envoy.get("/.well-known/oauth-protected-resource/mcp", host=f"attacker.example:{mcp_envoy.port}")
    assert spoofed.status == 403  # ... for that host no metadata is served, and no rule matches
    challenge = mcp_envoy.get("/mcp", method="POST", body="{}", host="attacker.example").header("www-authenticate")
    assert challenge == f'Bearer resource_metadata="{metadata_url}"'
    preflight = mcp_envoy.get("/.well-known/oauth-protected-resource/mcp", method="OPTIONS",
                              headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status == 204 and preflight.header("access-control-allow-origin") == "*"
    assert mcp_envoy.get("/.well-known/oauth-protected-resource/mcp", method="POST", body="{}").status == 405
    # None of it reached the MCP server.
    assert all(request["path"] == "/mcp" for request in upstream_requests(mcp_server))


@pytest.mark.parametrize("how, error", [
    ("no-token", '"auth header missing"'),
    ("another-projects-token", "token is not meant for this API"),
    # The SDK gets a token (for its own project), is refused, and gives up.
    ("another-projects-credentials", "after successful authentication"),
])
def test_a_client_without_a_token_for_this_api_is_refused_before_the_server(mcp_envoy, mcp_server, issuer, how,
                                                                             error):
    seen_before = len(upstream_requests(mcp_server))
    if how == "no-token":
        result, code = run_client(mcp_envoy, issuer)
    elif how == "another-projects-token":
        result, code = run_client(mcp_envoy, issuer, "--token", issuer.token("other-project"))
    else:
        user = issuer.ids["service_users"]["other-project"]
        result, code = run_client(mcp_envoy, issuer, "--client-id", user["client_id"], "--client-secret",
                                  user["client_secret"])
    assert code == 1 and error in result["error"], result
    assert upstream_requests(mcp_server)[seen_before:] == []

