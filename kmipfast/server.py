"""Transport: TLS contexts, the per-connection ``asyncio.Protocol``, limits, shutdown.

Theory of operation: uvloop terminates TLS (OpenSSL) and calls ``connection_made``
once the handshake is done; the client certificate is checked against the allow-list
there.  ``data_received`` appends to a receive buffer read through an offset (O(n)
framing), and for each complete message — its 8-byte header checked against
``max_message_size`` before the body is buffered — hands the bytes to the
:class:`~kmipfast.protocol.processor.Processor`, which knows nothing of sockets.
Messages of one connection are answered in order by one task per burst.  Reading
pauses while the transport's write buffer is above its high-water mark or too many
messages wait.  Framing that is broken closes the connection; everything else gets a
KMIP answer.

The allow-list can change while running: a new ``SSLContext`` (trusting the current
certificates) is swapped into each new connection from the SNI callback, which
OpenSSL calls for every ClientHello, with or without a server name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import gc
import logging
import signal
import ssl
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kmipfast import _native, auth, metrics, pki
from kmipfast.audit import AuditLog
from kmipfast.auth import AllowList, Verdict
from kmipfast.config import Config
from kmipfast.errors import TlsError, TtlvError
from kmipfast.protocol.processor import Processor, Session
from kmipfast.store.base import StoreError
from kmipfast.tls_openssl import OpenSslSession

log = logging.getLogger("kmipfast.server")

MAX_QUEUED_MESSAGES = 16
MAX_CLIENT_HELLO = 16384  # a ClientHello larger than this is not a KMIP client's
WRITE_HIGH_WATER = 256 * 1024

# TLS 1.2 suites: forward-secret ECDHE first, then the RSA key-exchange suites real
# vCenter 7 negotiated (AES128-SHA256), kept for clients that ask for nothing else.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-RSA-AES128-SHA256",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA256",
        "AES256-SHA256",
        "AES128-SHA",
        "AES256-SHA",
    ]
)


LEGACY_REFUSAL = (
    "TLS version too old for the rustls engine (the client offers only TLS 1.0/1.1 or "
    "lacks TLS 1.2 extensions); serve it with tls_engine auto and tls_min_version 1.0"
)

# Called with (reason, detail) for every handshake OpenSSL refuses; set by KmipServer.
_handshake_refused: Callable[[str, str], None] | None = None

# OpenSSL's words -> the operator's (DESIGN §4: a refused client is never a mystery).
_REFUSAL_REASONS = (
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", auth.NO_CERTIFICATE),
    ("certificate has expired", auth.EXPIRED),
    ("certificate is not yet valid", auth.NOT_YET_VALID),
    ("unable to get local issuer certificate", auth.WRONG_CA),
    ("self-signed certificate", auth.UNKNOWN),
    ("certificate signature failure", auth.WRONG_CA),
    ("unsupported certificate purpose", "certificate not for client authentication"),
    ("WRONG_VERSION_NUMBER", "not TLS (plain KMIP sent to the TLS port?)"),
    ("UNSUPPORTED_PROTOCOL", "TLS version too old"),
    ("NO_SHARED_CIPHER", "no shared cipher suite"),
)


GC_FREEZE_INTERVAL = 30.0


async def _freeze_old_objects() -> None:
    """Keeps Python's full garbage collections short.  A cache of 100,000 objects holds
    about 2 million GC-tracked containers; one full collection over them stalls every
    session for a second or more (p99).  Every 30 s the young generations are collected
    and everything that survived is moved out of the collector's sight (``gc.freeze``):
    it is still freed by reference counting when dropped (cached rows hold no cycles);
    only a reference cycle that became garbage after surviving would be kept."""
    while True:
        await asyncio.sleep(GC_FREEZE_INTERVAL)
        gc.collect(1)
        gc.freeze()


class _AuditedSSLObject(ssl.SSLObject):
    """Reports refused handshakes: uvloop logs them only in debug mode.  An
    :class:`OpenSslSession` sets ``deferred`` and reports ``refusal`` itself, with the
    certificate it saw."""

    deferred = False
    refusal: tuple[str, str] | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as e:
            detail = getattr(e, "verify_message", None) or e.reason or str(e)
            text = f"{e.reason} {detail}"
            reason = next((r for key, r in _REFUSAL_REASONS if key in text), "TLS error")
            self.refusal = (reason, str(detail))
            hook = _handshake_refused
            if hook is not None and not self.deferred:
                hook(reason, str(detail))
            raise


_OPENSSL_MIN_VERSION = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def build_ssl_context(config: Config, trusted: list[bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslobject_class = _AuditedSSLObject
    ctx.minimum_version = _OPENSSL_MIN_VERSION[config.server.tls_min_version]
    ctx.load_cert_chain(config.server_cert_path, config.server_key_path)
    rsa_cert = config.server_cert_path.with_name("server-rsa.crt")
    rsa_key = config.server_key_path.with_name("server-rsa.key")
    if rsa_cert.exists() and rsa_key.exists():
        # A second, RSA certificate so RSA-key-exchange-only clients can connect.
        ctx.load_cert_chain(rsa_cert, rsa_key)
    legacy = config.server.tls_min_version in ("1.0", "1.1")
    # TLS 1.0/1.1 sign the handshake with MD5+SHA-1, which OpenSSL 3 allows only at
    # security level 0; that level is set only when the operator asked for legacy TLS.
    ctx.set_ciphers(TLS12_CIPHERS + (":@SECLEVEL=0" if legacy else ""))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(config.ca_cert_path))
    if trusted:
        ctx.load_verify_locations(cadata=b"\n".join(trusted).decode())
    # Allowed client certificates are trust anchors themselves (self-signed, or
    # issued by a CA we don't otherwise trust); the fingerprint check decides.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def build_tls_config(config: Config, allowed: list[str]) -> _native.TlsConfig:
    """The native engine's configuration: the same certificates as the OpenSSL one."""
    rsa_cert = config.server_cert_path.with_name("server-rsa.crt")
    rsa_key = config.server_key_path.with_name("server-rsa.key")
    has_rsa = rsa_cert.exists() and rsa_key.exists()
    return _native.TlsConfig(
        config.server_cert_path.read_bytes(),
        config.server_key_path.read_bytes(),
        config.ca_cert_path.read_bytes(),
        allowed,
        config.limits.max_message_size,
        extra_cert_chain_pem=rsa_cert.read_bytes() if has_rsa else None,
        extra_key_pem=rsa_key.read_bytes() if has_rsa else None,
        min_version="1.3" if config.server.tls_min_version == "1.3" else "1.2",
    )


@dataclass
class ServerState:
    """Connections and tasks that graceful shutdown drains."""

    connections: set[KmipProtocol] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    accepting: bool = True


class KmipProtocol(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_busy",
        "_handshake_timer",
        "_hello",
        "_idle",
        "_last_active",
        "_paused",
        "_pending",
        "_pos",
        "_write_paused",
        "ossl",
        "server",
        "session",
        "tls",
        "transport",
    )

    def __init__(self, server: KmipServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self._buf = bytearray()
        self._pos = 0
        # Framed requests: bytes (OpenSSL path), or trees / decode errors (native engine).
        self._pending: collections.deque[Any] = collections.deque()
        self._busy = False
        self._paused = False
        self._write_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self._last_active = 0.0  # loop time of the last request or answer
        self._handshake_timer: asyncio.TimerHandle | None = None
        # The native (rustls) engine's session; None when uvloop's OpenSSL does TLS.
        self.tls: _native.TlsSession | None = None
        # With tls_engine "auto": the ClientHello bytes until an engine is chosen, and
        # the OpenSSL-over-memory-BIO session when OpenSSL was.
        self._hello: bytearray | None = None
        self.ossl: OpenSslSession | None = None

    # -- connection ---------------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's SSL transport is not an asyncio.Transport subclass, but it is one.
        transport = typing.cast(asyncio.Transport, base)
        self.transport = transport
        srv = self.server
        peer = _peer(transport)
        if not srv.state.accepting or len(srv.state.connections) >= srv.config.limits.max_sessions:
            srv.refused("session limit reached or shutting down", peer=peer)
            transport.abort()
            return
        if srv.tls_config is not None:
            if srv.config.server.tls_engine == "auto":
                self._hello = bytearray()
            else:
                self.tls = _native.TlsSession(srv.tls_config)
            self._handshake_timer = asyncio.get_running_loop().call_later(
                srv.config.limits.handshake_timeout, self._handshake_timed_out
            )
            return
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        self._handshake_finished(srv.allow.identify(der), None)

    def _admit(self, verdict: Verdict, peer: str) -> None:
        assert verdict.client is not None and verdict.identity is not None
        assert self.transport is not None
        role = verdict.client.role
        self.session = Session(
            client=verdict.client.name,
            tenant=verdict.client.tenant,
            fingerprint=verdict.identity.fingerprint,
            peer=peer,
            role=role,
            allowed=auth.allowed_operations(role),
        )
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server.state.connections.add(self)
        self._arm_idle()

    def _handshake_finished(self, verdict: Verdict, close: Callable[[], bytes] | None) -> bool:
        """After the handshake, whichever engine did it: admit the client, or refuse it
        and close (with the engine's close_notify when it is ours to send)."""
        assert self.transport is not None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        peer = _peer(self.transport)
        metrics.handshake(metrics.engine_of(self), verdict.client is not None)
        if verdict.client is None:
            ident = verdict.identity
            self.server.refused(
                verdict.reason,
                peer=peer,
                fingerprint=ident.fingerprint if ident else None,
                subject=ident.subject if ident else None,
                issuer=ident.issuer if ident else None,
                detail=verdict.detail or None,
                certificate=self._peer_der(),
            )
            if close is None:
                self.transport.abort()
            else:
                self.transport.write(close())
                self.transport.close()
            return False
        self._admit(verdict, peer)
        return True

    def _peer_der(self) -> bytes | None:
        """The client certificate (DER) as the engine saw it, accepted or refused."""
        if self.tls is not None:
            return self.tls.peer_certificate
        if self.ossl is not None:
            return self.ossl.peer_certificate()
        sslobj = self.transport.get_extra_info("ssl_object") if self.transport else None
        return sslobj.getpeercert(binary_form=True) if sslobj is not None else None

    def _handshake_timed_out(self) -> None:
        if self.session is None and self.transport is not None:
            self.server.refused("TLS handshake timed out", peer=_peer(self.transport))
            self.transport.abort()

    # -- the native engine ------------------------------------------------------------
    def _tls_received(self, data: bytes) -> None:
        tls, transport = self.tls, self.transport
        assert tls is not None and transport is not None
        try:
            out, items = tls.receive(data)
        except TlsError as e:
            if e.to_write:
                transport.write(e.to_write)
            if self.session is None:
                reason = auth.NATIVE_REASONS.get(e.reason, f"TLS handshake refused: {e.reason}")
                if e.reason == "protocol" and "incompatible" in (e.message or ""):
                    # e.g. a TLS 1.0/1.1 client: rustls speaks only 1.2 and 1.3.
                    reason = LEGACY_REFUSAL
                self.server.refused(
                    reason,
                    peer=_peer(transport),
                    fingerprint=e.fingerprint,
                    subject=e.subject,
                    issuer=e.issuer,
                    detail=e.message,
                    certificate=tls.peer_certificate,
                )
            else:
                log.info("closing %s: TLS %s", self.session.peer, e.reason)
            self._pending.clear()
            transport.close()
            return
        if out:
            transport.write(out)
        if self.session is None:
            if not tls.handshake_done:
                return
            verdict = self.server.allow.identify_fingerprint(
                tls.peer_fingerprint,
                tls.peer_subject,
                tls.peer_issuer,
                tls.peer_not_after,
                lambda: tls.peer_certificate,
            )
            if not self._handshake_finished(verdict, tls.close):
                return
        self._pending.extend(items)
        if tls.peer_closed and not self._pending and not self._busy:
            transport.write(tls.close())
            transport.close()
            return
        self._after_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.state.connections.discard(self)
        for timer in (self._idle, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._idle = self._handshake_timer = None
        self._pending.clear()
        # No reference cycle with the transport outlives the connection (see
        # _freeze_old_objects: frozen objects are freed by reference counting only).
        self.transport = None

    def _arm_idle(self) -> None:
        """Notes activity.  The idle timer is set once per idle period and, when it
        fires, re-armed for what is left: not cancelled and re-created per request."""
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(self.server.config.limits.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self.transport is None:
            return
        if self._busy or self._pending:
            self._arm_idle()
            return
        loop = asyncio.get_running_loop()
        left = self._last_active + self.server.config.limits.idle_timeout - loop.time()
        if left > 0:
            self._idle = loop.call_later(left, self._on_idle)
            return
        self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- framing ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            return self._tls_received(data)
        if self.ossl is not None:
            return self._ossl_received(data)
        if self._hello is not None:
            return self._choose_engine(data)
        if self.session is None:
            return
        self._plain_received(data)

    def _choose_engine(self, data: bytes) -> None:
        """tls_engine "auto": rustls whenever it can serve the ClientHello, else OpenSSL."""
        hello, srv = self._hello, self.server
        assert hello is not None and srv.tls_config is not None and self.transport is not None
        hello += data
        choice = srv.tls_config.peek_client_hello(bytes(hello))
        if choice is None:
            if len(hello) > MAX_CLIENT_HELLO:
                srv.refused("ClientHello too large", peer=_peer(self.transport))
                self.transport.abort()
            return
        self._hello = None
        log.debug("%s: TLS engine %s", _peer(self.transport), choice)
        srv.engine_choices[choice] = srv.engine_choices.get(choice, 0) + 1
        if choice == "openssl":
            assert srv._context is not None
            self.ossl = OpenSslSession(srv._context)
            return self._ossl_received(bytes(hello))
        self.tls = _native.TlsSession(srv.tls_config)
        return self._tls_received(bytes(hello))

    def _ossl_received(self, data: bytes) -> None:
        ossl, transport = self.ossl, self.transport
        assert ossl is not None and transport is not None
        try:
            out, plain = ossl.receive(data)
        except ssl.SSLError:
            refusal = ossl.refusal()
            if refusal is not None and self.session is None:
                der = ossl.offered_certificate()
                ident = None
                with contextlib.suppress(ValueError):
                    ident = auth.identity_of(der) if der else None
                self.server.refused(
                    refusal[0],
                    peer=_peer(transport),
                    fingerprint=ident.fingerprint if ident else None,
                    subject=ident.subject if ident else None,
                    issuer=ident.issuer if ident else None,
                    detail=refusal[1],
                    certificate=der,
                )
            transport.write(ossl.pending_output())
            self._pending.clear()
            transport.close()
            return
        if out:
            transport.write(out)
        if self.session is None:
            if not ossl.handshake_done:
                return
            verdict = self.server.allow.identify(ossl.peer_certificate())
            if not self._handshake_finished(verdict, ossl.close):
                return
        if plain:
            self._plain_received(plain)
        if ossl.peer_closed and not self._pending and not self._busy:
            transport.write(ossl.close())
            transport.close()

    def _plain_received(self, data: bytes) -> None:
        assert self.session is not None
        self._buf += data
        limit = self.server.config.limits.max_message_size
        while True:
            avail = len(self._buf) - self._pos
            if avail < 8:
                break
            try:
                total = _native.frame_length(
                    memoryview(self._buf)[self._pos : self._pos + 8], limit
                )
            except TtlvError as e:
                # Framing is broken: nothing after it can be trusted.
                log.warning("closing %s: %s", self.session.peer, e)
                self._abort()
                return
            assert total is not None
            if avail < total:
                break
            self._pending.append(bytes(self._buf[self._pos : self._pos + total]))
            self._pos += total
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._after_frames()

    def _after_frames(self) -> None:
        if self._pending:
            self._arm_idle()
            if not self._busy:
                self._answer_now()
                if not self._pending:
                    self._close_if_peer_closed()
                    return
                self._busy = True
                task = asyncio.ensure_future(self._drain())
                self.server.state.tasks.add(task)
                task.add_done_callback(self.server.state.tasks.discard)
            if len(self._pending) >= MAX_QUEUED_MESSAGES:
                self._pause()

    def _answer_now(self) -> None:
        """Answers the queued requests that need no waiting (a Get of a key held
        here), in order, up to the first one that does: no Task, no await."""
        engine, transport, processor = self.tls, self.transport, self.server.processor
        if engine is None or transport is None or self.session is None:
            return
        pending = self._pending
        while pending:
            message = pending[0]
            if type(message) is not tuple:
                return
            try:
                response = processor.answer_now(self.session, message)
            except Exception:
                log.exception("answering %s without waiting failed", self.session.peer)
                return  # the ordinary path answers it (and reports its own errors)
            if response is None:
                return
            pending.popleft()
            try:
                transport.write(engine.send_encoded(response))
            except TlsError as e:
                log.info("closing %s: TLS failure while answering: %s", self.session.peer, e)
                self._abort()
                return

    def _abort(self) -> None:
        self._pending.clear()
        if self.transport is not None:
            self.transport.abort()

    async def _drain(self) -> None:
        processor = self.server.processor
        assert self.session is not None
        try:
            while self._pending:
                message = self._pending.popleft()
                if isinstance(message, bytes):
                    response = await processor.handle(self.session, message)
                elif isinstance(message, TtlvError):
                    response = processor.malformed(message)
                else:
                    response = await processor.handle_tree(self.session, message)
                transport = self.transport
                if transport is None or transport.is_closing():
                    return
                if self.tls is not None:
                    transport.write(self.tls.send_encoded(response))
                elif self.ossl is not None:
                    transport.write(self.ossl.send(response))
                else:
                    transport.write(response)
                if self._paused and len(self._pending) < MAX_QUEUED_MESSAGES // 2:
                    self._resume()
        except (TlsError, ssl.SSLError) as e:
            log.info("closing %s: TLS failure while answering: %s", self.session.peer, e)
            self._abort()
        except Exception:
            log.exception("connection %s failed", self.session.peer)
            self._abort()
        finally:
            self._busy = False
            self._close_if_peer_closed()

    def _close_if_peer_closed(self) -> None:
        """Everything asked is answered: if the peer has said close_notify, say it back."""
        transport = self.transport
        engine = self.tls or self.ossl
        if engine and engine.peer_closed and transport and not transport.is_closing():
            transport.write(engine.close())
            transport.close()

    # -- flow control ---------------------------------------------------------------
    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self._write_paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        if len(self._pending) < MAX_QUEUED_MESSAGES:
            self._resume()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class KmipServer:
    """Binds the listener, keeps the allow-list and TLS context current, shuts down."""

    def __init__(
        self,
        config: Config,
        processor: Processor,
        allow: AllowList,
        audit: AuditLog,
        *,
        on_ready: Callable[[str, int], None] | None = None,
        on_data_change: Callable[[], Awaitable[None]] | None = None,
        report: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.processor = processor
        self.allow = allow
        self.audit = audit
        self.on_ready = on_ready
        # Called when the store's data version moved (tenants, clients changed by the
        # CLI or another node), then ``report`` tells the store which version this
        # process has acted on: `root shred` waits for that.
        self.on_data_change = on_data_change
        self.report = report
        self._reported = 0.0
        self.state = ServerState()
        self.tls_config: _native.TlsConfig | None = None
        self.engine_choices: dict[str, int] = {}  # tls_engine "auto": connections per engine
        self._context: ssl.SSLContext | None = None
        # (mtime, size) of the server certificate files the TLS engines were built from:
        # `server cert install` replaces them and the watcher picks them up.
        self._cert_files: tuple[tuple[int, int], ...] = ()
        self._next_expiry_check = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._stop = asyncio.Event()

    def refused(self, reason: str, certificate: bytes | None = None, **fields: Any) -> None:
        """Logs and audits a refused client with why, who and (kept for `client allow`)
        its certificate."""
        fp = fields.get("fingerprint")
        if fp and fp in self.allow.removed and reason in (auth.UNKNOWN, auth.WRONG_CA):
            reason = auth.REMOVED
        metrics.refusal(reason)
        kept = auth.keep_refused(self.config.data_dir, certificate)
        if kept is not None:
            fields["certificate"] = str(kept)
        shown = ", ".join(f"{k} {v}" for k, v in fields.items() if v is not None)
        log.warning("refused client: %s (%s)", reason, shown)
        self.audit.refusal(reason, **{k: v for k, v in fields.items() if v is not None})

    def _swap_context(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._context
        if current is not None and current is not ctx:
            sslobj.context = current

    async def _refresh_allow_list(self, force: bool = False) -> None:
        changed = await self.allow.reload_if_changed()
        if changed and self.on_data_change is not None:
            await self.on_data_change()
        if self.report is not None and (changed or time.monotonic() - self._reported > 5.0):
            self._reported = time.monotonic()
            await self.report(self.allow.version)
        cert_files = self._cert_stamp()
        new_cert = bool(self._cert_files) and cert_files != self._cert_files
        if not (changed or force or new_cert):
            return
        self._context = build_ssl_context(self.config, self.allow.trusted_pems())
        allowed = self.allow.by_fingerprint
        if self.tls_config is not None:
            if new_cert:
                # A new certificate means a new config (and new resumption state); open
                # sessions keep the one they started with.
                self.tls_config = build_tls_config(self.config, list(allowed))
            roots = self.allow.ca_roots_pem(self.config.ca_cert_path.read_bytes())
            self.tls_config.update(roots, list(allowed))
        if new_cert:
            log.info("server certificate %s reloaded", self.config.server_cert_path)
            self.audit.admin("server certificate reloaded", path=str(self.config.server_cert_path))
        self._cert_files = cert_files
        for conn in list(self.state.connections):
            sess = conn.session
            if sess is None or sess.fingerprint in allowed:
                continue
            # Admitted by a CA rule: still admitted, by the same rule (a pattern can narrow)?
            now = self.allow.identify_fingerprint(
                sess.fingerprint, None, None, None, conn._peer_der
            ).client
            if now is None or now.name != sess.client:
                log.info("closing session of removed client %s (%s)", sess.client, sess.peer)
                self.audit.refusal("removed while connected", peer=sess.peer, client=sess.client)
                conn.close()

    async def _watch_allow_list(self) -> None:
        interval = self.config.clients.reload_interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            try:
                await self._refresh_allow_list()
            except StoreError as e:  # the database is away (restart, failover): no traceback
                log.warning("allow-list reload failed (%s); keeping the previous one", e)
            except Exception:
                log.exception("allow-list reload failed; keeping the previous one")
            if time.monotonic() >= self._next_expiry_check:
                self._next_expiry_check = time.monotonic() + 86400.0
                self.warn_expiring()

    def _cert_stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.config.server_cert_path, self.config.server_key_path):
            try:
                st = path.stat()
            except OSError:
                out.append((0, 0))
                continue
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def warn_expiring(self) -> None:
        """At start and daily: clients and the server certificate that expire soon."""
        days = self.config.clients.expiry_warning_days
        clients = [*self.allow.by_fingerprint.values()]
        clients += [rule.client for rule in self.allow.ca_rules]
        for client, end in auth.expiring(clients, days):
            verb = "expired" if end < datetime.datetime.now(datetime.UTC) else "expires"
            log.warning(
                "client %s (tenant %s): certificate %s %s%s",
                client.name,
                client.tenant,
                verb,
                f"{end:%Y-%m-%d}",
                f"; if kmipfast issued it: kmipfast client renew {client.name} --out FILE"
                if client.fingerprint
                else "",
            )
        try:
            end = pki.load_cert(self.config.server_cert_path).not_valid_after_utc
        except pki.PkiError as e:
            log.warning("server certificate: %s", e)
            return
        if end - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(days=days):
            log.warning(
                "server certificate %s expires %s; install a new one: "
                "kmipfast server cert install CERT KEY",
                self.config.server_cert_path,
                f"{end:%Y-%m-%d}",
            )

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            # A refused or broken handshake: one line for the operator, no traceback.
            transport = context.get("transport")
            peer = _peer(transport) if transport is not None else "?"
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.refused(f"TLS handshake failed: {reason}", peer=peer)
            return
        loop.default_exception_handler(context)

    def _on_handshake_refused(self, reason: str, detail: str) -> None:
        self.refused(reason, detail=detail)

    async def serve(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Serves until stop() or SIGTERM/SIGINT.  ``reuse_port``: one of several
        ``--workers`` on the same port (SO_REUSEPORT)."""
        global _handshake_refused
        _handshake_refused = self._on_handshake_refused
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._exception_handler)
        if self.config.server.tls_engine in ("rustls", "auto"):
            self.tls_config = build_tls_config(self.config, list(self.allow.by_fingerprint))
        await self._refresh_allow_list(force=True)
        base = self._context
        assert base is not None
        # Connections use `base` until the allow-list changes; only then does the SNI
        # callback swap the newer context in (swapping costs a little per handshake).
        base.sni_callback = self._swap_context
        self._server = await loop.create_server(
            lambda: KmipProtocol(self),
            host,
            port,
            # The native engine terminates TLS itself, on plain TCP.
            ssl=base if self.tls_config is None else None,
            ssl_handshake_timeout=(
                self.config.limits.handshake_timeout if self.tls_config is None else None
            ),
            backlog=4096,
            reuse_address=True,
            reuse_port=reuse_port or None,
        )
        sock = self._server.sockets[0].getsockname()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        if self.on_ready is not None:
            self.on_ready(sock[0], sock[1])
        watcher = asyncio.ensure_future(self._watch_allow_list())
        freezer = asyncio.ensure_future(_freeze_old_objects())
        await self._stop.wait()
        watcher.cancel()
        freezer.cancel()
        await asyncio.gather(watcher, freezer, return_exceptions=True)
        await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish, then close sessions."""
        log.info("shutting down: %d sessions open", len(self.state.connections))
        self.state.accepting = False
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self.state.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.state.tasks), timeout=max(0.0, deadline - time.monotonic()))
        for conn in list(self.state.connections):
            conn.close()
