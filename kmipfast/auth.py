"""Client identity, the allow-list and roles (DESIGN §4).

A client is its TLS client certificate.  The allow-list (clients table of the store) holds
two kinds of rules, each mapping to one tenant and one role:

- a certificate rule: the certificate's SHA-256 fingerprint (self-signed certificates,
  certificates of foreign CAs, certificates kmipfast issued or signed);
- a CA + subject rule (``client allow-ca``): every certificate issued directly by that CA
  whose subject common name matches a shell-style pattern (vCenter's own root CA, trusted
  hosts, storage nodes that each present their own certificate).

TLS verifies the chain against the server CA, every CA of a CA rule and every allowed
client certificate as trust anchors (partial chains); then :meth:`AllowList.identify`
decides: by fingerprint first, else by the CA rules (issuer signature + CN match).  Both
TLS engines hand the same identity to the same decision, whose refusal reason is one of
:data:`REFUSAL_REASONS`.

Changes made by the CLI reach a running server through ``store.data_version()``,
polled every ``reload_interval`` seconds.  Allowed certificates' PEM files live in
``<data_dir>/clients/<fingerprint>.pem``; a refused certificate is kept in
``<data_dir>/refused/<fingerprint>.pem`` so the operator can allow it later.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from kmipfast import pki
from kmipfast.audit import os_user
from kmipfast.protocol.enums import Operation as Op
from kmipfast.store.base import ClientRecord, Store

log = logging.getLogger("kmipfast.auth")

# Role -> the operations it may request; None is every operation.  What vCenter sends is
# read from its capture (../shared/conformance/captures/vcenter-7.0.3-session.json);
# arrays also register, re-key and retire their keys.  The README lists these.
_READONLY = frozenset(
    {Op.Get, Op.GetAttributes, Op.GetAttributeList, Op.Locate, Op.Query, Op.DiscoverVersions}
)
ROLES: dict[str, frozenset[int] | None] = {
    "full": None,
    "readonly": _READONLY,
    "vcenter": _READONLY | {Op.Create, Op.AddAttribute, Op.ModifyAttribute, Op.Activate},
    "array": _READONLY
    | {
        Op.Create,
        Op.Register,
        Op.ReKey,
        Op.Activate,
        Op.Revoke,
        Op.Destroy,
        Op.Check,
        Op.AddAttribute,
        Op.ModifyAttribute,
        Op.DeleteAttribute,
    },
}
DEFAULT_ROLE = "full"

# Why a certificate was refused, as the operator reads it in the log and `client refused`.
UNKNOWN = "unknown"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
REMOVED = "removed"
WRONG_CA = "wrong CA"
SUBJECT_MISMATCH = "subject mismatch"
NO_CERTIFICATE = "no client certificate"
REFUSAL_REASONS = (UNKNOWN, EXPIRED, NOT_YET_VALID, REMOVED, WRONG_CA, SUBJECT_MISMATCH)

# The native engine's reason codes (TlsError.reason) in the words above.
NATIVE_REASONS = {
    "unknown_ca": WRONG_CA,
    "bad_signature": WRONG_CA,  # issuer named as an allowed CA, not signed by it
    "not_allowed": UNKNOWN,
    "removed": REMOVED,
    "expired": EXPIRED,
    "not_yet_valid": NOT_YET_VALID,
    "no_certificate": NO_CERTIFICATE,
}


def allowed_operations(role: str) -> frozenset[int] | None:
    """The operations of ``role`` (None: all); an unknown role allows nothing."""
    return ROLES.get(role, frozenset())


@dataclass(slots=True, frozen=True)
class Identity:
    fingerprint: str
    subject: str
    issuer: str
    not_after: dt.datetime


@dataclass(slots=True, frozen=True)
class Verdict:
    client: ClientRecord | None
    identity: Identity | None
    reason: str  # "ok" or why the client was refused (one of REFUSAL_REASONS mostly)
    detail: str = ""


def identity_of(der: bytes) -> Identity:
    cert = x509.load_der_x509_certificate(der)
    return Identity(
        fingerprint=pki.fingerprint(cert),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
    )


def client_pem_path(data_dir: Path, fingerprint: str) -> Path:
    return data_dir / "clients" / f"{fingerprint}.pem"


def refused_pem_path(data_dir: Path, fingerprint: str) -> Path:
    return data_dir / "refused" / f"{fingerprint}.pem"


def common_name(cert: x509.Certificate) -> str:
    """The subject's first common name ("" when it has none)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (names and signature; validity is TLS's job)."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


@dataclass(slots=True, frozen=True)
class CaRule:
    client: ClientRecord
    ca: x509.Certificate
    pem: bytes


class AllowList:
    """The allowed clients, as last loaded from the store."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self.by_fingerprint: dict[str, ClientRecord] = {}
        self.ca_rules: list[CaRule] = []
        # Fingerprints allowed by an earlier load and not by this one -> client name.
        self.removed: dict[str, str] = {}
        # Certificates admitted by a CA rule, so each is parsed and checked only once.
        self._by_rule: dict[str, ClientRecord] = {}
        self.version = -1

    async def reload_if_changed(self) -> bool:
        """Reloads when the store's data version moved; True if it did."""
        version = await self.store.data_version()
        if version == self.version:
            return False
        clients = await self.store.list_clients()
        by_fp = {c.fingerprint: c for c in clients if c.fingerprint}
        for fp, old in self.by_fingerprint.items():
            if fp not in by_fp:
                self.removed[fp] = old.name
        for fp in by_fp:
            self.removed.pop(fp, None)
        rules = []
        for c in clients:
            if c.fingerprint or not c.ca_pem:
                continue
            try:
                ca = x509.load_pem_x509_certificate(c.ca_pem.encode())
            except ValueError:
                log.warning("CA rule %s has an unreadable CA certificate; ignored", c.name)
                continue
            rules.append(CaRule(c, ca, c.ca_pem.encode()))
        self.by_fingerprint = by_fp
        self.ca_rules = rules
        self._by_rule = {}
        self.version = version
        return True

    def trusted_pems(self) -> list[bytes]:
        """PEM of every allowed certificate and CA of a CA rule, to be trust anchors."""
        out = []
        for fp in self.by_fingerprint:
            path = client_pem_path(self.data_dir, fp)
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:
                log.warning("allowed client %s has no certificate file at %s", fp, path)
        out.extend(rule.pem for rule in self.ca_rules)
        return out

    def ca_roots_pem(self, server_ca_pem: bytes) -> bytes:
        """The roots a client chain may end in: the server CA and the CAs of CA rules."""
        return b"\n".join([server_ca_pem, *(rule.pem for rule in self.ca_rules)])

    def identify_fingerprint(
        self,
        fingerprint: str | None,
        subject: str | None,
        issuer: str | None,
        not_after: int | None,
        certificate: Callable[[], bytes | None] | None = None,
    ) -> Verdict:
        """The decision for an identity the TLS engine already extracted; ``certificate``
        gives the DER when a CA rule has to look at it (not needed for fingerprint rules)."""
        if not fingerprint:
            return Verdict(None, None, NO_CERTIFICATE)
        expiry = dt.datetime.fromtimestamp(not_after or 0, dt.UTC)
        ident = Identity(fingerprint, subject or "", issuer or "", expiry)
        client = self.by_fingerprint.get(fingerprint) or self._by_rule.get(fingerprint)
        if client is None:
            der = certificate() if certificate is not None and self.ca_rules else None
            client, reason, detail = self._by_ca_rule(der, ident)
            if client is None:
                return Verdict(None, ident, reason, detail)
            self._by_rule[fingerprint] = client
        if not_after is not None and expiry < dt.datetime.now(dt.UTC):
            return Verdict(None, ident, EXPIRED, f"expired on {expiry:%Y-%m-%d}")
        return Verdict(client, ident, "ok")

    def _by_ca_rule(
        self, der: bytes | None, ident: Identity
    ) -> tuple[ClientRecord | None, str, str]:
        cert = None
        if der:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                cert = None
        if cert is not None:
            cn = common_name(cert)
            mismatch = None
            for rule in self.ca_rules:
                if not issued_by(cert, rule.ca):
                    continue
                pattern = rule.client.ca_rule or "*"
                if fnmatch.fnmatchcase(cn, pattern):
                    return rule.client, "ok", ""
                mismatch = mismatch or (rule, pattern)
            if mismatch is not None:
                rule, pattern = mismatch
                detail = f"CN {cn!r} does not match {pattern!r} of CA rule {rule.client.name}"
                return None, SUBJECT_MISMATCH, detail
        if ident.fingerprint in self.removed:
            return None, REMOVED, f"client {self.removed[ident.fingerprint]} was removed"
        # It passed TLS, so it chains to the server CA or is itself a trust anchor: what the
        # TLS engines call an unknown CA ("wrong CA") never gets here.
        return None, UNKNOWN, "certificate not in the allow-list"

    def identify(self, der: bytes | None) -> Verdict:
        if not der:
            return Verdict(None, None, NO_CERTIFICATE)
        try:
            cert = x509.load_der_x509_certificate(der)
            ident = identity_of(der)
        except ValueError:
            return Verdict(None, None, "unreadable client certificate")
        if cert.not_valid_before_utc > dt.datetime.now(dt.UTC):
            when = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}"
            return Verdict(None, ident, NOT_YET_VALID, f"valid from {when}")
        return self.identify_fingerprint(
            ident.fingerprint,
            ident.subject,
            ident.issuer,
            int(ident.not_after.timestamp()),
            lambda: der,
        )


# Refused certificates kept at most: anyone can present certificates, so their number
# must not be able to fill the disk.
MAX_KEPT_REFUSED = 1000


def keep_refused(data_dir: Path, der: bytes | None) -> Path | None:
    """Keeps a refused client's certificate (public data) so `client allow` can take it."""
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    path = refused_pem_path(data_dir, pki.fingerprint(cert))
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(os.listdir(path.parent)) >= MAX_KEPT_REFUSED:
            return None
        pki.write_certs(path, cert)
    except OSError as e:
        log.warning("cannot keep refused certificate at %s: %s", path, e)
        return None
    return path


def expiring(
    clients: list[ClientRecord], within_days: int, now: dt.datetime | None = None
) -> list[tuple[ClientRecord, dt.datetime]]:
    """Clients whose certificate ends within ``within_days`` (or has ended), soonest first."""
    now = now or dt.datetime.now(dt.UTC)
    limit = now + dt.timedelta(days=within_days)
    out = []
    for c in clients:
        if c.not_after is None:
            continue
        end = dt.datetime.fromtimestamp(c.not_after, dt.UTC)
        if end <= limit:
            out.append((c, end))
    return sorted(out, key=lambda pair: pair[1])


def require_admin(data_dir: Path) -> str:
    """The OS user running an administrative command, which needs write access to the
    data dir (the trust boundary); raises PermissionError (one line) otherwise."""
    if not os.access(data_dir, os.W_OK):
        raise PermissionError(
            f"administrative commands need write access to {data_dir} "
            "(run them as the data dir's owner)"
        )
    return os_user()
