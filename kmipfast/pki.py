"""The key server's small certificate authority (DESIGN §4).

A client is its TLS client certificate. The operator either brings their own
certificates or lets `kmipfast init` make a CA, a server certificate and, on
request, client certificates; vCenter and storage arrays may instead send a
CSR for the server to sign. Everything here uses pyca/cryptography only.

Choices, and why:
- ECDSA P-256 keys by default: connection-per-task clients make the handshake
  the dominant cost (DESIGN §8), and P-256 signatures are the cheapest. RSA-2048
  is available for clients (and servers) that only speak RSA.
- `not_before` is set a few minutes in the past so that a client whose clock
  is slightly behind still accepts a freshly issued certificate.
- A leaf never outlives its CA: its `not_after` is clamped to the CA's.
- `sign_csr` copies the CSR's subject and its Subject Alternative Name and
  nothing else: requested extensions such as basicConstraints are the classic
  way a CSR asks to become a CA.
- Private keys are written PKCS#8, unencrypted (the data dir is the trust
  boundary), mode 0600, atomically; error messages never contain key bytes.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import os
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALIDITY",
    "LEAF_VALIDITY",
    "CertInfo",
    "KeyType",
    "PkiError",
    "SigningKey",
    "cert_pem",
    "check_server_cert",
    "create_ca",
    "default_sans",
    "describe",
    "fingerprint",
    "issue_client_cert",
    "issue_server_cert",
    "load_cert",
    "load_certs",
    "load_key",
    "parse_san",
    "reissue_client_cert",
    "sans_of",
    "sign_csr",
    "write_certs",
    "write_file_atomic",
    "write_private_key",
]

CA_VALIDITY = datetime.timedelta(days=3652)  # 10 years
LEAF_VALIDITY = datetime.timedelta(days=730)  # 2 years
_CLOCK_SKEW = datetime.timedelta(minutes=5)

# Curves a signed client certificate may use; anything else is refused.
_ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048

KeyType = Literal["ec", "rsa"]
# Keys this module generates and signs with.
SigningKey = CertificateIssuerPrivateKeyTypes


class PkiError(Exception):
    """A certificate or key could not be made, read or accepted; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What an operator needs to recognise a certificate (never any key material)."""

    fingerprint: str
    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    is_self_signed: bool


# --- key generation and signing --------------------------------------------


def _new_key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PkiError(f"unknown key type {key_type!r} (expected 'ec' or 'rsa')")


def _sig_hash(
    issuer_key: SigningKey,
) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The digest to sign with: matched to the curve size; none for EdDSA."""
    if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        if issuer_key.curve.key_size > 384:
            return hashes.SHA512()
        if issuer_key.curve.key_size > 256:
            return hashes.SHA384()
    return hashes.SHA256()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _validity(
    ca_cert: x509.Certificate | None, lifetime: datetime.timedelta
) -> tuple[datetime.datetime, datetime.datetime]:
    now = _now()
    not_before = now - _CLOCK_SKEW
    not_after = now + lifetime
    if ca_cert is not None:
        if ca_cert.not_valid_after_utc <= now:
            subject = ca_cert.subject.rfc4514_string()
            expired = f"{ca_cert.not_valid_after_utc:%Y-%m-%d}"
            raise PkiError(f"CA certificate {subject} expired on {expired}")
        not_after = min(not_after, ca_cert.not_valid_after_utc)
        not_before = max(not_before, ca_cert.not_valid_before_utc)
    return not_before, not_after


def _check_ca_pair(ca_cert: x509.Certificate, ca_key: SigningKey) -> None:
    if ca_cert.public_key() != ca_key.public_key():
        raise PkiError("the CA key does not match the CA certificate")
    try:
        bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError(
            f"{ca_cert.subject.rfc4514_string()} is not a CA certificate (no basicConstraints)"
        ) from None
    if not bc.ca:
        raise PkiError(f"{ca_cert.subject.rfc4514_string()} is not a CA certificate (CA:false)")


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf_builder(
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    eku: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(ca_cert, LEAF_VALIDITY)
    # keyEncipherment only matters for RSA key exchange (TLS 1.2 RSA suites).
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )


def _name(common_name: str) -> x509.Name:
    if not common_name or not common_name.strip():
        raise PkiError("a certificate name (CN) must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in common_name):
        raise PkiError("a certificate name (CN) must not contain control characters")
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as e:  # e.g. longer than 64 characters
        raise PkiError(f"invalid certificate name {common_name!r}: {e}") from None


# --- public API: issuing ------------------------------------------------------


def create_ca(common_name: str, key_type: KeyType = "ec") -> tuple[x509.Certificate, SigningKey]:
    """A self-signed CA (ECDSA P-256 by default), valid 10 years, that may sign leaves only."""
    key = _new_key(key_type)
    subject = _name(common_name)
    not_before, not_after = _validity(None, CA_VALIDITY)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, _sig_hash(key))
    )
    return cert, key


def parse_san(entry: str) -> x509.DNSName | x509.IPAddress:
    """`DNS:name`, `IP:addr`, or a bare name or address (an address if it parses as one).

    Brackets around an IPv6 address (`[::1]`) are accepted. DNS names must be
    ASCII (IDNA A-labels); `*.example.com` wildcards are allowed.
    """
    text = entry.strip()
    kind, sep, value = text.partition(":")
    if sep and kind.upper() in ("DNS", "IP"):
        value = value.strip()
        explicit: str | None = kind.upper()
    else:
        value, explicit = text, None
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if explicit != "DNS":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            if explicit == "IP":
                raise PkiError(f"SAN {entry!r}: {value!r} is not an IP address") from None
    if not value:
        raise PkiError(f"SAN {entry!r} is empty")
    if not value.isascii():
        raise PkiError(f"SAN {entry!r}: DNS names must be ASCII (use the IDNA xn-- form)")
    labels = value.rstrip(".").split(".")
    for i, label in enumerate(labels):
        ok = 0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        if not ok and not (i == 0 and label == "*" and len(labels) > 2):
            raise PkiError(f"SAN {entry!r} is not a valid DNS name")
    return x509.DNSName(value.rstrip(".").lower())


def default_sans() -> list[str]:
    """localhost, 127.0.0.1, ::1, this host's name and, if different, its FQDN."""
    sans = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    names = [socket.gethostname()]
    with contextlib.suppress(OSError):  # resolver trouble must not break init
        names.append(socket.getfqdn())
    for name in names:
        entry = f"DNS:{name.lower()}"
        if name and entry not in sans:
            try:
                parse_san(entry)
            except PkiError:
                continue  # an odd host name is skipped rather than failing init
            sans.append(entry)
    return sans


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    sans: Iterable[str],
    key_type: KeyType = "ec",
) -> tuple[x509.Certificate, SigningKey]:
    """A serverAuth certificate for `sans` (ECDSA P-256 by default), valid 2 years.

    The CN is the first DNS name (or the first address) for clients that still
    look at it; clients are expected to check the SANs.
    """
    _check_ca_pair(ca_cert, ca_key)
    general_names: list[x509.GeneralName] = []
    for entry in sans:
        name = parse_san(entry)
        if name not in general_names:
            general_names.append(name)
    if not general_names:
        raise PkiError("a server certificate needs at least one SAN (DNS name or IP address)")
    dns = [n.value for n in general_names if isinstance(n, x509.DNSName)]
    cn = dns[0] if dns else str(general_names[0].value)
    key = _new_key(key_type)
    cert = (
        _leaf_builder(ca_cert, _name(cn), key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH)
        .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        .sign(ca_key, _sig_hash(ca_key))
    )
    return cert, key


def issue_client_cert(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    name: str,
    key_type: KeyType = "ec",
) -> tuple[x509.Certificate, SigningKey]:
    """A clientAuth certificate with CN=name, valid 2 years.

    ECDSA P-256 by default; `key_type="rsa"` gives RSA-2048 for clients (some
    storage arrays, vCenter) that only handle RSA.
    """
    _check_ca_pair(ca_cert, ca_key)
    key = _new_key(key_type)
    cert = _leaf_builder(
        ca_cert, _name(name), key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH
    ).sign(ca_key, _sig_hash(ca_key))
    return cert, key


def _check_client_key(public_key: CertificatePublicKeyTypes) -> None:
    """Refuse keys too weak (or too odd) to identify a client; one line saying why."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise PkiError(
                f"CSR refused: RSA key of {public_key.key_size} bits is too weak "
                f"(minimum {_MIN_RSA_BITS})"
            )
        e = public_key.public_numbers().e
        if e < 65537 or e % 2 == 0:
            raise PkiError(f"CSR refused: RSA public exponent {e} is unsafe (use 65537)")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _ALLOWED_CURVES:
            raise PkiError(
                f"CSR refused: EC curve {public_key.curve.name} is not allowed "
                "(use P-256, P-384 or P-521)"
            )
        return
    if isinstance(public_key, dsa.DSAPublicKey):
        raise PkiError("CSR refused: DSA keys are not accepted (use ECDSA P-256 or RSA >= 2048)")
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return
    raise PkiError(f"CSR refused: unsupported key type {type(public_key).__name__}")


def sign_csr(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    csr_pem: bytes,
    name: str | None = None,
) -> x509.Certificate:
    """Issue a clientAuth certificate (2 years) for a CSR after checking its signature and key.

    The CSR's subject is kept; `name` becomes the CN only when the CSR has none.
    Only the CSR's Subject Alternative Name is carried over; other requested
    extensions are ignored. PEM or DER input is accepted.
    """
    _check_ca_pair(ca_cert, ca_key)
    try:
        if csr_pem.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(csr_pem)
        else:
            csr = x509.load_der_x509_csr(csr_pem)
    except ValueError as e:
        reason = str(e).splitlines()[0] if str(e) else "parse error"
        raise PkiError(f"not a valid certificate signing request: {reason}") from None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise PkiError(f"CSR refused: its public key cannot be read ({e})") from None
    _check_client_key(public_key)
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature):
        valid = False
    if not valid:
        raise PkiError(
            "CSR refused: its signature does not verify (not signed by the key it contains)"
        )

    subject = csr.subject
    if not subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if not name:
            raise PkiError("CSR has no common name (CN): give a name for the client")
        subject = x509.Name([*subject.rdns, *_name(name).rdns])

    builder = _leaf_builder(ca_cert, subject, public_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        # An empty subject makes the SAN the identity, which RFC 5280 requires to be critical.
        builder = builder.add_extension(san.value, critical=len(subject) == 0)
    return builder.sign(ca_key, _sig_hash(ca_key))


def reissue_client_cert(
    ca_cert: x509.Certificate, ca_key: SigningKey, old: x509.Certificate
) -> x509.Certificate:
    """A fresh clientAuth certificate (2 years) for the same subject and public key as
    ``old``, which this CA must have issued: the client keeps its key, installs the new
    certificate.  Only the Subject Alternative Name is carried over."""
    _check_ca_pair(ca_cert, ca_key)
    if old.issuer != ca_cert.subject:
        raise PkiError(f"{old.subject.rfc4514_string()} was not issued by this server's CA")
    try:
        old.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise PkiError(
            f"{old.subject.rfc4514_string()} was not issued by this server's CA"
        ) from None
    public_key = old.public_key()
    _check_client_key(public_key)
    builder = _leaf_builder(ca_cert, old.subject, public_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(san.value, critical=san.critical)
    return builder.sign(ca_key, _sig_hash(ca_key))


def check_server_cert(
    chain: list[x509.Certificate], key: PrivateKeyTypes, extra: Iterable[x509.Certificate] = ()
) -> list[x509.Certificate]:
    """An operator's server certificate, checked before it replaces ours: the key matches
    the leaf, every certificate is currently valid, each one is issued by the next, the
    leaf may serve TLS and its key is strong enough.  Returns the chain (leaf first, then
    ``extra``), without duplicates."""
    full: list[x509.Certificate] = []
    for cert in [*chain, *extra]:
        if cert not in full:
            full.append(cert)
    if not full:
        raise PkiError("no certificate given")
    leaf = full[0]
    if leaf.public_key() != key.public_key():
        raise PkiError("the private key does not match the certificate")
    now = _now()
    for cert in full:
        name = cert.subject.rfc4514_string()
        if cert.not_valid_after_utc <= now:
            raise PkiError(f"certificate {name} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        if cert.not_valid_before_utc > now:
            raise PkiError(
                f"certificate {name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
            )
    for child, parent in itertools.pairwise(full):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise PkiError(
                f"chain broken: {child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()}"
            ) from None
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if (
            ExtendedKeyUsageOID.SERVER_AUTH not in eku
            and x509.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
        ):
            raise PkiError("the certificate's extended key usage does not allow serverAuth")
    try:
        _check_client_key(leaf.public_key())
    except PkiError as e:
        raise PkiError(str(e).replace("CSR refused", "certificate refused")) from None
    return full


def sans_of(cert: x509.Certificate) -> list[str]:
    """`DNS:name` and `IP:addr` entries of the Subject Alternative Name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    out += [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    return out


# --- inspection -----------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lowercase hex without colons (the allow-list key)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def describe(cert: x509.Certificate) -> CertInfo:
    """Fingerprint, names, validity and serial, as shown to operators and in refusal logs."""
    return CertInfo(
        fingerprint=fingerprint(cert),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        is_self_signed=_is_self_signed(cert),
    )


# --- files -------------------------------------------------------------------------


def write_file_atomic(path: Path | str, data: bytes | bytearray, mode: int = 0o600) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part.

    The temporary file is created with `mode` from the start (no window in
    which a secret is readable by others), fsynced, renamed over `path`, and
    the directory is fsynced so the rename survives a crash.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)  # mkstemp uses 0600; set the wanted mode before writing
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private_key(path: Path | str, key: PrivateKeyTypes) -> None:
    """PKCS#8 PEM, unencrypted, mode 0600, written atomically."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomic(path, pem, 0o600)


def cert_pem(certs: x509.Certificate | Iterable[x509.Certificate]) -> bytes:
    """PEM of one certificate or a chain (leaf first)."""
    if isinstance(certs, x509.Certificate):
        certs = [certs]
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_certs(path: Path | str, certs: x509.Certificate | Iterable[x509.Certificate]) -> None:
    """One certificate or a chain as PEM, mode 0644, written atomically."""
    write_file_atomic(path, cert_pem(certs), 0o644)


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} file {path} does not exist") from None
    except OSError as e:
        raise PkiError(f"cannot read {what} file {path}: {e.strerror}") from None


def load_certs(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain, leaf first, or a CA bundle)."""
    data = _read(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise PkiError(f"{path} holds no PEM certificate")
    return certs


def load_cert(path: Path | str) -> x509.Certificate:
    """The first certificate in a PEM file."""
    return load_certs(path)[0]


def load_key(path: Path | str) -> SigningKey:
    """An unencrypted PEM private key (PKCS#8, or traditional RSA/EC) usable for signing."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PkiError(
            f"private key {path} is encrypted; kmipfast expects an unencrypted key "
            "protected by file mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # Never echo the file content: it may be a key.
        raise PkiError(f"{path} holds no readable PEM private key") from None
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            dsa.DSAPrivateKey,
        ),
    ):
        raise PkiError(f"private key {path} has an unsupported type {type(key).__name__}")
    return key
