"""`TlsSession.peer_certificate`: the client certificate's DER, accepted or refused, so a
refused certificate can be kept and allowed later, and a CA + subject rule can look at
the issuer's signature (rustls engine; the live tests cover the server around it)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from kmipfast import _native, pki
from kmipfast.errors import TlsError
from tests.native.test_tls import Client, Pki


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]


def test_refused_certificate_is_available(certs: Pki) -> None:
    session = _native.TlsSession(certs.config())
    assert session.peer_certificate is None
    with pytest.raises(TlsError) as info:
        Client(certs.client_ctx(certs.selfsigned, certs.selfsigned_key), session).handshake()
    assert info.value.reason == "not_allowed"
    assert session.peer_certificate == der(certs.selfsigned)


def test_accepted_certificate_is_available(certs: Pki) -> None:
    session = _native.TlsSession(certs.config())
    Client(certs.client_ctx(certs.client, certs.client_key), session).handshake()
    assert session.handshake_done
    assert session.peer_certificate == der(certs.client)
    assert pki.fingerprint(certs.client) == session.peer_fingerprint


def test_ca_rule_root_admits_its_leaves(certs: Pki) -> None:
    """A CA + subject rule makes its CA a root: its leaves pass the verifier, and Python's
    allow-list decides by CN from the DER."""
    config = certs.config()
    roots = pki.cert_pem(certs.ca) + b"\n" + pki.cert_pem(certs.foreign_ca)
    config.update(roots, [])
    session = _native.TlsSession(config)
    Client(certs.client_ctx(certs.foreign, certs.foreign_key), session).handshake()
    assert session.handshake_done
    assert session.peer_certificate == der(certs.foreign)
