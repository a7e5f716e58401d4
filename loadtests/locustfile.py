"""Locust users speaking KMIP 1.1 over mTLS to any KMIP server.

    KMIP_HOST=127.0.0.1 KMIP_PORT=5696 KMIP_CERT=client.crt KMIP_KEY=client.key \
    KMIP_CA=ca.crt locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 10s

Two user types, both closed loop over one persistent TLS session each (set
``KMIP_NEW_SESSION=1`` for a new session per task, as vCenter does):

- ``VCenterUser``: Create (AES-256, as vCenter sends it), the AddAttribute batch of three
  x- attributes, Get, GetAttributes of one x- attribute;
- ``StorageArrayUser``: Register Secret Data, Get, Destroy.

Requests are TTLV built from the real vCenter captures with ``kmipfast._native`` (see
``kmipmsgs.py``); each response is checked for Result Status Success and reported to
Locust as a request event (type ``KMIP``, name the operation).  Environment:

    KMIP_HOST, KMIP_PORT         server address (127.0.0.1, 5696)
    KMIP_CERT, KMIP_KEY, KMIP_CA client certificate, its key, the CA of the server
    KMIP_SERVER_NAME             name checked in the server certificate (KMIP_HOST)
    KMIP_TLS13=1                 allow TLS 1.3 (default: TLS 1.2 only, like vCenter)
    KMIP_NEW_SESSION=1           a new TLS session per task
    KMIP_WAIT                    seconds between tasks (0)
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from locust import User, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kmipmsgs as msgs

HOST = os.environ.get("KMIP_HOST", "127.0.0.1")
PORT = int(os.environ.get("KMIP_PORT", "5696"))
SERVER_NAME = os.environ.get("KMIP_SERVER_NAME", HOST)
NEW_SESSION = os.environ.get("KMIP_NEW_SESSION", "") == "1"
MAX_KNOWN = 256  # uids each user remembers for Get/AddAttribute/Destroy

_context: ssl.SSLContext | None = None


def context() -> ssl.SSLContext:
    global _context
    if _context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.environ["KMIP_CA"])
        ctx.load_cert_chain(os.environ["KMIP_CERT"], os.environ["KMIP_KEY"])
        if os.environ.get("KMIP_TLS13", "") != "1":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        _context = ctx
    return _context


class KmipFailure(Exception):
    """A response whose Result Status is not Success (reason and message, no data)."""


class KmipUser(User):
    abstract = True
    wait_time = constant(float(os.environ.get("KMIP_WAIT", "0")))

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.sock: ssl.SSLSocket | None = None
        self.uids: deque[str] = deque(maxlen=MAX_KNOWN)

    # -- session ------------------------------------------------------------------
    def _connect(self) -> ssl.SSLSocket:
        start = time.perf_counter()
        try:
            raw = socket.create_connection((HOST, PORT), timeout=30)
            sock = context().wrap_socket(raw, server_hostname=SERVER_NAME)
        except Exception as e:
            self._event("TLS", "handshake", start, 0, e)
            raise
        self._event("TLS", "handshake", start, 0, None)
        return sock

    def _close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def on_start(self) -> None:
        if not NEW_SESSION:
            self.sock = self._connect()

    def on_stop(self) -> None:
        self._close()

    # -- one request --------------------------------------------------------------
    def _event(self, kind: str, name: str, start: float, length: int, exc: Any) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    def call(self, name: str, request: bytes, items: int = 1) -> bytes | None:
        """Send ``request``; report it; return the response if every item succeeded."""
        if self.sock is None:
            self.sock = self._connect()
        start = time.perf_counter()
        response = b""
        try:
            self.sock.sendall(request)
            while True:
                n = msgs.frame_length(response)
                if n is not None and len(response) >= n:
                    response = response[:n]
                    break
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by server")
                response += chunk
            if not msgs.succeeded(response, items):
                raise KmipFailure(msgs.failure_reason(response))
        except KmipFailure as e:
            self._event("KMIP", name, start, len(response), e)
            return None
        except Exception as e:
            self._event("KMIP", name, start, len(response), e)
            self._close()
            return None
        finally:
            if NEW_SESSION:
                self._close()
        self._event("KMIP", name, start, len(response), None)
        return response

    def created(self, response: bytes | None) -> None:
        uid = msgs.uid_of(response) if response is not None else None
        if uid is not None:
            self.uids.append(uid)


class VCenterUser(KmipUser):
    """What vCenter does per key: Create, tag it with x- attributes, read it back."""

    weight = 3

    @task(2)
    def create(self) -> None:
        self.created(self.call("Create", msgs.CREATE))

    @task(2)
    def add_attributes(self) -> None:
        if self.uids:
            self.call("AddAttribute x3", msgs.add_attributes(self.uids[-1]), items=3)
            self.uids.pop()  # x- attributes are added once per key

    @task(6)
    def get(self) -> None:
        if self.uids:
            self.call("Get", msgs.get(self.uids[len(self.uids) // 2]))

    @task(2)
    def get_attributes(self) -> None:
        if self.uids:
            self.call("GetAttributes", msgs.get_attributes(self.uids[0]))


class StorageArrayUser(KmipUser):
    """What an array does: store its secret, fetch it on boot, remove it on rekey."""

    weight = 1

    @task(2)
    def register(self) -> None:
        secret = bytearray(os.urandom(32))
        try:
            self.created(
                self.call(
                    "Register SecretData",
                    msgs.register_secret(bytes(secret), f"array-{uuid.uuid4()}"),
                )
            )
        finally:
            secret[:] = bytes(len(secret))

    @task(6)
    def get(self) -> None:
        if self.uids:
            self.call("Get SecretData", msgs.get(self.uids[-1]))

    @task(1)
    def destroy(self) -> None:
        if len(self.uids) > 1:
            self.call("Destroy", msgs.destroy(self.uids.popleft()))
