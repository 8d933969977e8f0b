#!/usr/bin/env python3
"""Makes the certificates for an issuer served over HTTPS, at run time (never committed):

    python3 scripts/make_certs.py DIR [--name localhost]

writes into DIR (mode 0600 for keys):
  ca.pem                      a CA certificate (the one Envoy's issuer cluster trusts)
  server.pem, server-key.pem  a certificate for NAME (DNS SAN) signed by the CA
  wrong-name.pem, -key.pem    the same CA, for another name (wrong.invalid)
  expired.pem, -key.pem       the same CA and name, valid until yesterday
  other-ca.pem                another CA
  unknown-ca.pem, -key.pem    for NAME, signed by the other CA

The tests and `scripts/demo.sh --tls` import `make()`. Uses PyPI's `cryptography`.
"""
import argparse
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WRONG_NAME = "wrong.invalid"


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name, now):
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(name, ca_key, ca_cert, not_before, not_after):
    key = _key()
    try:
        san = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        san = x509.DNSName(name)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(directory, filename, data, secret=False):
    path = os.path.join(directory, filename)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644), "wb") as f:
        f.write(data)
    return path


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(directory, name="localhost"):
    """Writes the files listed in the module documentation; returns their paths by role."""
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = _ca("oauth-introspection-filter test CA", now)
    other_key, other = _ca("another CA", now)
    paths = {"ca": _write(directory, "ca.pem", _pem(ca)), "other_ca": _write(directory, "other-ca.pem", _pem(other))}
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
    leaves = {
        "server": (name, ca_key, ca, *valid),
        "wrong-name": (WRONG_NAME, ca_key, ca, *valid),
        "expired": (name, ca_key, ca, now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)),
        "unknown-ca": (name, other_key, other, *valid),
    }
    for role, (leaf_name, signer_key, signer, not_before, not_after) in leaves.items():
        key, cert = _leaf(leaf_name, signer_key, signer, not_before, not_after)
        paths[role] = _write(directory, f"{role}.pem", _pem(cert))
        paths[f"{role}_key"] = _write(directory, f"{role}-key.pem", _key_pem(key), secret=True)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--name", default="localhost", help="the issuer's host name (default localhost)")
    args = parser.parse_args()
    for role, path in make(args.dir, args.name).items():
        print(f"{role}: {path}")


if __name__ == "__main__":
    main()
