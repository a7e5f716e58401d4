"""The OpenSSL engine over memory BIOs, for clients the native engine cannot serve.

With ``tls_engine = "auto"`` the Protocol reads the ClientHello first; clients that
offer only what rustls does not speak (TLS 1.0/1.1, or only RSA-key-exchange CBC suites
such as the KMIP 1.x TLS 1.2 authentication suite's TLS_RSA_WITH_AES_128_CBC_SHA256) get
this engine: Python's ``ssl.SSLObject`` fed the same bytes, with the same contexts the
OpenSSL-only mode uses.  Its interface mirrors ``kmipfast._native.TlsSession``: bytes
in, bytes to write (and plaintext) out.

OpenSSL refuses a certificate inside the handshake and shows nobody which one it was.
For TLS 1.2 and older the client's Certificate message travels in clear, so the session
keeps the handshake bytes it was fed (bounded) and :meth:`OpenSslSession.offered_certificate`
reads the certificate from them after a refusal: the operator then sees its fingerprint
and subject, and can allow it (DESIGN §4).  It is only shown, never trusted.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any, cast

# Handshake bytes kept for offered_certificate: a client certificate chain fits.
MAX_KEPT_HANDSHAKE = 64 * 1024
_CHANGE_CIPHER_SPEC, _HANDSHAKE, _CERTIFICATE = 20, 22, 11


def offered_certificate(records: bytes | bytearray) -> bytes | None:
    """The end-entity certificate (DER) of the first Certificate message in the clear
    handshake records at the start of ``records`` (TLS <= 1.2), or None."""
    hs = bytearray()
    at = 0
    while at + 5 <= len(records):
        kind = records[at]
        length = int.from_bytes(records[at + 3 : at + 5], "big")
        if kind == _CHANGE_CIPHER_SPEC or at + 5 + length > len(records):
            break  # what follows is encrypted, or cut off
        if kind == _HANDSHAKE:
            hs += records[at + 5 : at + 5 + length]
        at += 5 + length
    pos = 0
    while pos + 4 <= len(hs):
        kind = hs[pos]
        length = int.from_bytes(hs[pos + 1 : pos + 4], "big")
        body = hs[pos + 4 : pos + 4 + length]
        if len(body) < length:
            return None
        if kind == _CERTIFICATE and len(body) >= 6:
            first = int.from_bytes(body[3:6], "big")
            der = bytes(body[6 : 6 + first])
            return der if der and len(der) == first else None
        pos += 4 + length
    return None


class OpenSslSession:
    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # The server's SSLObject class reports refusals; this session reports its own,
        # with the certificate (see refusal()).
        cast(Any, self._obj).deferred = True
        self._seen: bytearray | None = bytearray()
        self.handshake_done = False
        self.peer_closed = False

    def refusal(self) -> tuple[str, str] | None:
        """(reason, detail) of a refused handshake, as the server's SSLObject class saw it."""
        found = getattr(self._obj, "refusal", None)
        return cast(tuple[str, str] | None, found)

    def offered_certificate(self) -> bytes | None:
        """The client certificate of a refused TLS <= 1.2 handshake (see the module doc)."""
        return offered_certificate(self._seen) if self._seen else None

    def pending_output(self) -> bytes:
        """Bytes OpenSSL produced and that must reach the peer (e.g. an alert)."""
        return self._outgoing.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feeds TCP bytes; returns (bytes to write, decrypted application data).
        Raises ssl.SSLError when the handshake or a record fails."""
        self._incoming.write(data)
        if not self.handshake_done:
            if self._seen is not None and len(self._seen) < MAX_KEPT_HANDSHAKE:
                self._seen += data
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return self._outgoing.read(), b""
            self.handshake_done = True
            self._seen = None
        chunks = []
        while True:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return self._outgoing.read(), b"".join(chunks)

    def send(self, data: bytes) -> bytes:
        self._obj.write(data)
        return self._outgoing.read()

    def close(self) -> bytes:
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._obj.unwrap()
        return self._outgoing.read()

    def peer_certificate(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)
