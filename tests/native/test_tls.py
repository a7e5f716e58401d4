"""The native TLS engine (`TlsConfig`, `TlsSession`) against a real OpenSSL client.

The client is Python's `ssl` over a pair of `MemoryBIO`s, so everything runs in memory:
bytes the client writes go to `TlsSession.receive`, and what that returns goes back to
the client.  Certificates come from `kmipfast.pki` (DESIGN §4: CA-signed, self-signed
and foreign-CA clients).
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmipfast import _native, pki
from kmipfast.errors import TlsError, TtlvDecodeError

REQUEST_MESSAGE = 0x420078


def key_pem(key: pki.SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed(
    name: str, days: int = 30, offset_days: int = -1
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed clientAuth certificate valid from now + offset_days for `days`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=offset_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca, self.ca_key = pki.create_ca("kmipfast test CA")
        self.server, self.server_key = pki.issue_server_cert(self.ca, self.ca_key, ["localhost"])
        self.client, self.client_key = pki.issue_client_cert(self.ca, self.ca_key, "vcenter")
        self.foreign_ca, self.foreign_ca_key = pki.create_ca("someone else's CA")
        self.foreign, self.foreign_key = pki.issue_client_cert(
            self.foreign_ca, self.foreign_ca_key, "array"
        )
        self.selfsigned, self.selfsigned_key = self_signed("vc.example")

    def config(self, allowed: list[str] | None = None, **kw: object) -> _native.TlsConfig:
        return _native.TlsConfig(
            pki.cert_pem(self.server),
            key_pem(self.server_key),
            pki.cert_pem(self.ca),
            allowed or [],
            **kw,  # type: ignore[arg-type]
        )

    def client_ctx(
        self, cert: x509.Certificate | None, key: pki.SigningKey | None
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=pki.cert_pem(self.ca).decode())
        if cert is not None and key is not None:
            name = pki.fingerprint(cert)
            (self.tmp / f"{name}.crt").write_bytes(pki.cert_pem(cert))
            (self.tmp / f"{name}.key").write_bytes(key_pem(key))
            ctx.load_cert_chain(self.tmp / f"{name}.crt", self.tmp / f"{name}.key")
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class Client:
    """An OpenSSL client wired to a TlsSession through memory."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        session: _native.TlsSession,
        resume: ssl.SSLSession | None = None,
    ) -> None:
        self.to_client = ssl.MemoryBIO()
        self.to_server = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.to_client, self.to_server, server_hostname="localhost", session=resume
        )
        self.session = session
        self.items: list[object] = []

    def flush(self) -> None:
        """Client bytes to the server, the server's answer back."""
        data = self.to_server.read()
        if data:
            out, items = self.session.receive(data)
            self.items.extend(items)
            self.to_client.write(out)

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                continue
            self.flush()  # the client's last flight (TLS 1.3: Certificate ... Finished)
            return
        raise AssertionError("handshake did not finish")

    def request(self, message: bytes) -> None:
        self.obj.write(message)
        self.flush()

    def read(self) -> bytes:
        return self.obj.read(1 << 16)


def kmip_request() -> tuple[int, int, object]:
    """A minimal Discover Versions request as a tree."""
    header = (
        0x420077,
        1,
        [(0x420069, 1, [(0x42006A, 2, 1), (0x42006B, 2, 1)]), (0x42000D, 2, 1)],
    )
    item = (0x42000F, 1, [(0x42005C, 5, 0x1E), (0x420079, 1, [])])
    return (REQUEST_MESSAGE, 1, [header, item])


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_ca_signed_client_identity_and_round_trip(certs: Pki, version: ssl.TLSVersion) -> None:
    session = _native.TlsSession(certs.config())
    ctx = certs.client_ctx(certs.client, certs.client_key)
    ctx.minimum_version = ctx.maximum_version = version
    c = Client(ctx, session)
    c.handshake()
    assert session.handshake_done
    assert (
        session.protocol_version
        == {
            ssl.TLSVersion.TLSv1_2: "TLSv1.2",
            ssl.TLSVersion.TLSv1_3: "TLSv1.3",
        }[version]
    )
    assert session.peer_fingerprint == pki.fingerprint(certs.client)
    assert session.peer_subject == certs.client.subject.rfc4514_string()
    assert session.peer_issuer == certs.client.issuer.rfc4514_string()
    assert not session.resumed

    request = kmip_request()
    c.request(_native.encode(request))
    assert c.items == [request]
    c.to_client.write(session.send(request))
    assert _native.decode(c.read()) == request

    c.to_client.write(session.close())
    assert c.read() == b""  # close_notify (EOF without it raises SSLEOFError)
    c.obj.unwrap()  # the client's close_notify in answer
    c.flush()
    assert session.peer_closed


def test_self_signed_client_allowed_by_fingerprint(certs: Pki) -> None:
    fp = pki.fingerprint(certs.selfsigned)
    session = _native.TlsSession(certs.config([fp.upper()]))
    c = Client(certs.client_ctx(certs.selfsigned, certs.selfsigned_key), session)
    c.handshake()
    assert session.peer_fingerprint == fp
    assert session.peer_subject == certs.selfsigned.subject.rfc4514_string()
    assert session.peer_subject == "CN=vc.example,O=Acme\\, Inc."


def refusal(
    certs: Pki, config: _native.TlsConfig, cert: x509.Certificate | None, key: pki.SigningKey | None
) -> TlsError:
    session = _native.TlsSession(config)
    c = Client(certs.client_ctx(cert, key), session)
    with pytest.raises(TlsError) as info:
        c.handshake()
    assert session.error == info.value.reason
    return info.value


def test_refusal_reasons(certs: Pki) -> None:
    config = certs.config()
    e = refusal(certs, config, certs.selfsigned, certs.selfsigned_key)
    assert e.reason == "not_allowed"
    assert e.fingerprint == pki.fingerprint(certs.selfsigned)
    assert e.subject == certs.selfsigned.subject.rfc4514_string()
    assert e.to_write  # the alert

    e = refusal(certs, config, certs.foreign, certs.foreign_key)
    assert e.reason == "unknown_ca"
    assert e.issuer == certs.foreign_ca.subject.rfc4514_string()

    expired, expired_key = self_signed("old", days=2, offset_days=-10)
    future, future_key = self_signed("new", days=2, offset_days=5)
    config.update(pki.cert_pem(certs.ca), [pki.fingerprint(expired), pki.fingerprint(future)])
    assert refusal(certs, config, expired, expired_key).reason == "expired"
    assert refusal(certs, config, future, future_key).reason == "not_yet_valid"

    assert refusal(certs, config, None, None).reason == "no_certificate"


def test_update_allows_new_client_without_restart(certs: Pki) -> None:
    config = certs.config()
    assert refusal(certs, config, certs.foreign, certs.foreign_key).reason == "unknown_ca"
    config.update(pki.cert_pem(certs.ca), [pki.fingerprint(certs.foreign)])
    session = _native.TlsSession(config)
    Client(certs.client_ctx(certs.foreign, certs.foreign_key), session).handshake()
    assert session.peer_fingerprint == pki.fingerprint(certs.foreign)


def test_resumption_rechecks_allow_list(certs: Pki) -> None:
    fp = pki.fingerprint(certs.selfsigned)
    config = certs.config([fp])
    ctx = certs.client_ctx(certs.selfsigned, certs.selfsigned_key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs/tickets usable at once
    first = Client(ctx, _native.TlsSession(config))
    first.handshake()
    saved = first.obj.session
    assert saved is not None

    again = _native.TlsSession(config)
    c = Client(ctx, again, resume=saved)
    c.handshake()
    assert again.resumed and c.obj.session_reused
    assert again.peer_fingerprint == fp

    config.update(pki.cert_pem(certs.ca), [])
    gone = _native.TlsSession(config)
    c = Client(ctx, gone, resume=saved)
    with pytest.raises(TlsError) as info:
        c.handshake()
    assert info.value.reason == "removed"
    assert info.value.fingerprint == fp


def test_invalid_ttlv_frame_is_reported_as_item(certs: Pki) -> None:
    session = _native.TlsSession(certs.config())
    c = Client(certs.client_ctx(certs.client, certs.client_key), session)
    c.handshake()
    # A Request Message Structure of 8 bytes holding a Boolean whose value is 2.
    bad = bytes.fromhex("42007801 00000010 42000806 00000008 0000000000000002".replace(" ", ""))
    c.request(bad)
    assert len(c.items) == 1
    assert isinstance(c.items[0], TtlvDecodeError)


def test_oversized_message_ends_session(certs: Pki) -> None:
    session = _native.TlsSession(certs.config(max_message_size=1024))
    c = Client(certs.client_ctx(certs.client, certs.client_key), session)
    c.handshake()
    with pytest.raises(TlsError) as info:
        c.request(bytes.fromhex("4200780100100000"))
    assert info.value.reason == "message_too_large"


def client_hello(ctx: ssl.SSLContext) -> bytes:
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_peek_client_hello_chooses_engine(certs: Pki) -> None:
    modern = client_hello(certs.client_ctx(None, None))
    assert _native.peek_client_hello(modern[:3]) is None
    assert _native.peek_client_hello(modern[: len(modern) - 1]) is None
    assert _native.peek_client_hello(modern) == "rustls"
    assert certs.config().peek_client_hello(modern) == "rustls"

    tls12_gcm = certs.client_ctx(None, None)
    tls12_gcm.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12_gcm.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _native.peek_client_hello(client_hello(tls12_gcm)) == "rustls"

    vcenter = certs.client_ctx(None, None)
    vcenter.maximum_version = ssl.TLSVersion.TLSv1_2
    vcenter.set_ciphers("AES128-SHA256")
    assert _native.peek_client_hello(client_hello(vcenter)) == "openssl"

    old = certs.client_ctx(None, None)
    old.minimum_version = ssl.TLSVersion.TLSv1_1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert _native.peek_client_hello(client_hello(old)) == "openssl"

    # Plain KMIP on the TLS port goes to rustls, which refuses it cleanly.
    assert _native.peek_client_hello(_native.encode(kmip_request())) == "rustls"
    session = _native.TlsSession(certs.config())
    with pytest.raises(TlsError) as info:
        session.receive(_native.encode(kmip_request()))
    assert info.value.reason == "not_tls"
