"""A throwaway TLS identity for the stand-in org: a self-signed certificate made at start.

Why the stand-in speaks https at all: some clients cannot be pointed at plain http.
simple-salesforce, for one, builds ``https://<instance>/services/data/...`` from the
instance's host whatever scheme it was given, so only an https org can host it. The
certificate is made fresh for each org (no key ships with the package), names
``127.0.0.1`` and ``localhost`` in its subjectAltName, and is its own trust anchor: a
client trusts it with ``verify=org.ca_file``.

``cryptography`` is imported only here, and only when an org with ``tls=True`` starts, so the
stand-in works without it otherwise. The private key is written next to the certificate in
the org's own temporary directory (mode 0700, removed on stop), since :mod:`ssl` loads keys
from files only.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsIdentity", "make_identity", "server_context"]

_LIFETIME = datetime.timedelta(days=2)
_BACKDATE = datetime.timedelta(hours=1)
"""Valid from an hour ago, so a client whose clock is a little behind accepts it."""


@dataclass(frozen=True)
class TlsIdentity:
    """Where a certificate and its key were written."""

    cert_file: Path
    """The PEM certificate: what the server presents and what clients trust."""
    key_file: Path


def make_identity(directory: Path) -> TlsIdentity:
    """Write a new self-signed certificate (P-256 key) for 127.0.0.1 and localhost.

    It carries what strict verifiers ask of a trust anchor (OpenSSL's X509_STRICT, which
    Python 3.13 turns on by default): basicConstraints CA marked critical, keyUsage with
    keyCertSign, and subject and authority key identifiers; and what a server certificate
    needs (digitalSignature, serverAuth and the subjectAltName hostnames are matched on).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zeep-sfrefresh stand-in org"),
            x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    identity = TlsIdentity(directory / "standin-org.pem", directory / "standin-org.key")
    identity.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    identity.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    identity.key_file.chmod(0o600)
    return identity


def server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """A server-side context presenting ``identity`` (TLS 1.2 and later, as Salesforce)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(identity.cert_file, identity.key_file)
    return context
