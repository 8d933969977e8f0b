"""Runs last (file order): no token, assertion, client secret or key fragment in any log.

Envoy runs at debug level for every component except `http` and `router`,
where Envoy itself dumps all request headers at debug (envoyproxy/envoy#9652);
the README tells operators to keep those two at info.
"""
import re

from conftest import LOG_FILES, SECRETS

JWS = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{16,}")


def test_logs_hold_no_secrets(envoy, issuer, tokens):
    tokens("reader-opaque")
    tokens("reader-jwt")
    assert len(SECRETS) > 5  # the key's lines, the basic secret, and the tokens of this session
    assert LOG_FILES
    wasm_lines = 0
    for path in LOG_FILES:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        wasm_lines += text.count("wasm log oauth_introspection")
        leaked = [s[:6] + "…" for s in SECRETS if s in text]
        assert not leaked, f"{path} contains secrets starting with {leaked}"
        assert not JWS.search(text), f"{path} contains a JWT (token or client assertion)"
        assert "PRIVATE KEY" not in text, path
    assert wasm_lines > 0  # the filter did log at debug: the check saw its lines
