"""The OpenSSL engine over memory BIOs, for clients the native engine cannot serve.

With ``tls_engine = "auto"`` the Protocol reads the ClientHello first; clients that
offer only what rustls does not speak (TLS 1.0/1.1, or only RSA-key-exchange CBC suites
such as the KMIP 1.x TLS 1.2 authentication suite's TLS_RSA_WITH_AES_128_CBC_SHA256) get
this engine: Python's ``ssl.SSLObject`` fed the same bytes, with the same contexts the
OpenSSL-only mode uses.  Its interface mirrors ``kmipfast._native.TlsSession``: bytes
in, bytes to write (and plaintext) out.
"""

from __future__ import annotations

import contextlib
import ssl


class OpenSslSession:
    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshake_done = False
        self.peer_closed = False

    def pending_output(self) -> bytes:
        """Bytes OpenSSL produced and that must reach the peer (e.g. an alert)."""
        return self._outgoing.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feeds TCP bytes; returns (bytes to write, decrypted application data).
        Raises ssl.SSLError when the handshake or a record fails."""
        self._incoming.write(data)
        if not self.handshake_done:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return self._outgoing.read(), b""
            self.handshake_done = True
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
