"""Certificates the tests play with: foreign CAs (vCenter's VMCA, an array vendor's CA),
their leaves, CSRs, and certificates that are wrong on purpose.  All real, all
pyca/cryptography; files are written where the test says."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.server.harness import ClientBundle

Key = CertificateIssuerPrivateKeyTypes


@dataclass
class Ca:
    cert: x509.Certificate
    key: Key
    path: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_key(path: Path, key: Key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_cert(path: Path, *certs: x509.Certificate) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def make_ca(directory: Path, cn: str) -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn.replace(' ', '_')}.crt"
    write_cert(path, cert)
    return Ca(cert, key, path)


def make_leaf(
    ca: Ca,
    directory: Path,
    cn: str,
    *,
    server: bool = False,
    days: int = 30,
    start_days: int = 0,
) -> tuple[Path, Path, x509.Certificate]:
    """A leaf of ``ca`` (client auth, or server auth for localhost/127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - dt.timedelta(minutes=5) + dt.timedelta(days=start_days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    crt, key_path = directory / f"{cn}.crt", directory / f"{cn}.key"
    write_cert(crt, cert)
    write_key(key_path, key)
    return crt, key_path, cert


def leaf_bundle(ca: Ca, directory: Path, cn: str, server_ca: str) -> ClientBundle:
    crt, key, _ = make_leaf(ca, directory, cn)
    return ClientBundle(cn, str(crt), str(key), server_ca)


def make_csr(directory: Path, cn: str, key: Key) -> Path:
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).sign(key, hashes.SHA256())
    path = directory / f"{cn}.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)
