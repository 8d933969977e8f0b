"""JWTs the tests make themselves, with `cryptography`: signed with the local issuer's own key
(to get claims no grant hands out: expired, not yet valid, no jti...), with another key under
the issuer's kid, or with the classic algorithm tricks (none, HS256 keyed with the public key,
an RS256 signature relabelled PS256). Every token made here is registered as a secret, so the
log scan (test_zz_no_secrets_in_logs) checks that none reaches a log."""
import base64
import hashlib
import hmac
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from stack import SECRETS



def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value):
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _b64_int(number):
    return b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def private_key(jwk):
    """An RSA private key from a private JWK (the issuer's signing key file)."""
    public = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"]))
    numbers = rsa.RSAPrivateNumbers(_int(jwk["p"]), _int(jwk["q"]), _int(jwk["d"]), _int(jwk["dp"]),
                                    _int(jwk["dq"]), _int(jwk["qi"]), public)
    return numbers.private_key()


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid):
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _token(signing_input, signature):
    token = f"{signing_input}.{b64url(signature)}"
    SECRETS.add(token)
    return token


def _input(header, claims):
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def sign(key, header, claims):
    """An RS256 JWT over `header` and `claims`."""
    signing_input = _input(header, claims)
    return _token(signing_input, key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))


def hs256(secret, header, claims):
    signing_input = _input(header, claims)
    return _token(signing_input, hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def unsigned(header, claims):
    """`header.payload.` with an empty signature (alg none, RFC 7519 section 6)."""
    token = _input(header, claims) + "."
    SECRETS.add(token)
    return token


def relabel(token, **header_changes):
    """The same payload and signature under a changed header."""
    encoded_header, payload, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(encoded_header + "=" * (-len(encoded_header) % 4)))
    header.update(header_changes)
    token = f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"
    SECRETS.add(token)
    return token


def header_of(token):
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def access_claims(issuer_url, project_id, roles=("read:messages",), lifetime=3600, **changes):
    """A ZITADEL JWT access token's claims (client credentials, roles asserted in both of
    ZITADEL's role claims); `changes` replace members, and a change to None removes the member."""
    now = int(time.time())
    granted = {role: {"300000000000000000": "org.example"} for role in roles}
    claims = {
        "iss": issuer_url, "sub": "300000000000000099", "aud": [project_id], "exp": now + lifetime,
        "iat": now, "nbf": now, "jti": f"V2_{time.time_ns()}-at", "client_id": "made-by-the-test",
        "scope": "openid", "urn:zitadel:iam:org:project:roles": granted,
        f"urn:zitadel:iam:org:project:{project_id}:roles": granted,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims
