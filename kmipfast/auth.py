"""Client identity and the allow-list (DESIGN §4).

A client is its TLS client certificate.  The allow-list (clients table of the store)
maps a certificate's SHA-256 fingerprint to one tenant.  TLS verifies the chain against
the server CA plus every allowed client certificate as a trust anchor (partial
chains), so self-signed certificates and certificates of foreign CAs can be allowed
one by one; then :meth:`AllowList.identify` decides by fingerprint.

Changes made by the CLI reach a running server through ``store.data_version()``,
polled every ``reload_interval`` seconds.  Allowed certificates' PEM files live in
``<data_dir>/clients/<fingerprint>.pem``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from kmipfast import pki
from kmipfast.store.base import ClientRecord, Store

log = logging.getLogger("kmipfast.auth")


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
    reason: str  # "ok" or why the client was refused


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


class AllowList:
    """The allowed clients, as last loaded from the store."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self.by_fingerprint: dict[str, ClientRecord] = {}
        self.version = -1

    async def reload_if_changed(self) -> bool:
        """Reloads when the store's data version moved; True if it did."""
        version = await self.store.data_version()
        if version == self.version:
            return False
        clients = await self.store.list_clients()
        self.by_fingerprint = {c.fingerprint: c for c in clients if c.fingerprint}
        self.version = version
        return True

    def trusted_pems(self) -> list[bytes]:
        """PEM of every allowed certificate, to be trust anchors for TLS."""
        out = []
        for fp in self.by_fingerprint:
            path = client_pem_path(self.data_dir, fp)
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:
                log.warning("allowed client %s has no certificate file at %s", fp, path)
        return out

    def identify_fingerprint(
        self,
        fingerprint: str | None,
        subject: str | None,
        issuer: str | None,
        not_after: int | None,
    ) -> Verdict:
        """The same decision for an identity the native TLS engine already extracted."""
        if not fingerprint:
            return Verdict(None, None, "no client certificate")
        expiry = dt.datetime.fromtimestamp(not_after or 0, dt.UTC)
        ident = Identity(fingerprint, subject or "", issuer or "", expiry)
        client = self.by_fingerprint.get(fingerprint)
        if client is None:
            return Verdict(None, ident, "unknown or removed certificate")
        if not_after is not None and expiry < dt.datetime.now(dt.UTC):
            return Verdict(None, ident, "expired certificate")
        return Verdict(client, ident, "ok")

    def identify(self, der: bytes | None) -> Verdict:
        if not der:
            return Verdict(None, None, "no client certificate")
        try:
            ident = identity_of(der)
        except ValueError:
            return Verdict(None, None, "unreadable client certificate")
        return self.identify_fingerprint(
            ident.fingerprint, ident.subject, ident.issuer, int(ident.not_after.timestamp())
        )
