"""Tenancy, the allow-list, durability, secrecy at rest and hostile input, on a live server.

DESIGN §4 (identity and tenancy), §5 (store) and §1 (framing limits). Each test that
changes the allow-list or needs to kill the server uses a server of its own
(``kmip_server_factory``); key bytes are compared by digest and never printed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kmipfast import _native
from kmipfast.protocol.enums import Operation, ResultReason, ResultStatus, State
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from tests.server.harness import (
    ClientBundle,
    KmipServer,
    connect_when_admitted,
    self_signed_client,
)
from tests.server.kmipclient import (
    Conn,
    ConnectionClosed,
    attributes_of,
    batch_results,
    create_aes_payload,
    key_material,
    register_aes_payload,
    register_secret_payload,
    request_message,
    uid_payload,
)

pytestmark = pytest.mark.server

# Allow-list changes must reach a running server "within a second" (DESIGN §4); the
# deadline leaves room for a loaded 2-core CI machine.
ALLOW_LIST_DEADLINE = 2.0


def digest(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def refusal(server: KmipServer, bundle: ClientBundle) -> str | None:
    """Why ``bundle`` was refused (handshake failure, closed before any answer, or an
    answer without success), or None if the server served it."""
    try:
        conn = server.connect(bundle)
    except (OSError, ConnectionClosed) as exc:
        return f"handshake: {exc!r}"
    with conn:
        try:
            result = conn.call(Operation.DiscoverVersions)
        except (OSError, ConnectionClosed) as exc:
            return f"closed: {exc!r}"
    return None if result.success else f"answered {result.describe()}"


def with_server_ca(bundle: ClientBundle, server: KmipServer) -> ClientBundle:
    return ClientBundle(bundle.name, bundle.cert, bundle.key, server.ca_cert)


# ---------------------------------------------------------------------------
# Tenants


def test_other_tenants_uid_is_item_not_found(kmip_server: KmipServer) -> None:
    """DESIGN §4: another tenant's object answers Item Not Found — the same as a uid that
    never existed — for every operation naming it, never Permission Denied."""
    tenant = f"iso-{uuid.uuid4().hex[:8]}"
    kmip_server.run_cli("tenant", "create", tenant)
    assert tenant in kmip_server.run_cli("tenant", "list").stdout
    other = kmip_server.issue_client(f"client-{tenant}", tenant)

    with kmip_server.connect() as a:
        uid = value(a.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        before = digest(key_material(a.ok(Operation.Get, uid_payload(uid))))

    never = str(uuid.uuid4())
    attempts: list[tuple[Operation, list]] = [
        (Operation.Get, uid_payload(uid)),
        (Operation.GetAttributes, uid_payload(uid)),
        (Operation.GetAttributeList, uid_payload(uid)),
        (Operation.Activate, uid_payload(uid)),
        (Operation.Destroy, uid_payload(uid)),
    ]
    with connect_when_admitted(kmip_server, other) as b:
        for operation, payload in attempts:
            b.call(operation, payload).expect_failure(ResultReason.ItemNotFound)
            b.call(operation, uid_payload(never)).expect_failure(ResultReason.ItemNotFound)
        located = b.ok(Operation.Locate, [])
        assert uid not in [v for _t, _y, v in located[2]], "Locate shows another tenant's key"
        # Tenant B's own keys work.
        mine = value(b.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        assert len(key_material(b.ok(Operation.Get, uid_payload(mine))) or b"") == 32

    with kmip_server.connect() as a:
        assert digest(key_material(a.ok(Operation.Get, uid_payload(uid)))) == before
        a.call(Operation.Get, uid_payload(mine)).expect_failure(ResultReason.ItemNotFound)
        state = attributes_of(a.ok(Operation.GetAttributes, uid_payload(uid)))["State"]
        assert state == [State.PreActive], "tenant B changed tenant A's key"


def test_unknown_certificate_is_refused(kmip_server: KmipServer, tmp_path: Path) -> None:
    stranger = with_server_ca(self_signed_client(tmp_path, "stranger"), kmip_server)
    assert refusal(kmip_server, stranger) is not None
    # ...and the server is fine afterwards.
    with kmip_server.connect() as conn:
        conn.ok(Operation.DiscoverVersions)


def test_client_remove_closes_open_session_and_refuses_new_ones(
    kmip_server_factory: Callable[[], KmipServer],
) -> None:
    """DESIGN §4: removing a client reaches the running server within a second and also
    closes that client's open sessions; other clients are not disturbed."""
    server = kmip_server_factory()
    doomed = server.issue_client("doomed")
    session = connect_when_admitted(server, doomed)
    with session, server.connect() as bystander:
        session.ok(Operation.DiscoverVersions)
        server.run_cli("client", "remove", "doomed")
        removed_at = time.monotonic()
        closed = session.wait_closed(ALLOW_LIST_DEADLINE)
        elapsed = time.monotonic() - removed_at
        assert closed, f"open session still up {ALLOW_LIST_DEADLINE} s after `client remove`"
        assert elapsed < ALLOW_LIST_DEADLINE
        bystander.ok(Operation.DiscoverVersions)
    assert refusal(server, doomed) is not None, "a removed client connected again"
    assert "doomed" not in server.run_cli("client", "list").stdout


def test_client_allow_admits_self_signed_certificate_without_restart(
    kmip_server_factory: Callable[[], KmipServer], tmp_path: Path
) -> None:
    """DESIGN §4: a vCenter presenting its own self-signed certificate is admitted once
    `client allow` has run, without restarting the server."""
    server = kmip_server_factory()
    vcenter = with_server_ca(self_signed_client(tmp_path, "vcenter"), server)
    assert refusal(server, vcenter) is not None, "admitted before being allowed"
    pid = server.proc.pid if server.proc else None
    server.run_cli("client", "allow", vcenter.cert, "--tenant", "default", "--name", "vcenter")
    with connect_when_admitted(server, vcenter, ALLOW_LIST_DEADLINE) as conn:
        uid = value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        assert len(key_material(conn.ok(Operation.Get, uid_payload(uid))) or b"") == 32
    assert server.proc is not None and server.proc.pid == pid, "the server restarted"
    assert "vcenter" in server.run_cli("client", "list").stdout


# ---------------------------------------------------------------------------
# Durability and secrecy at rest


def test_acknowledged_creates_survive_kill_9(kmip_server_factory: Callable[[], KmipServer]) -> None:
    """DESIGN §5: a Create is acknowledged only once durable — SIGKILL right after the
    last acknowledgement loses nothing."""
    server = kmip_server_factory()
    n = 40
    made: dict[str, str] = {}
    with server.connect() as conn:
        for i in range(n):
            if i % 2:
                uid = value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
                made[uid] = ""
            else:
                material = os.urandom(32)
                payload = register_aes_payload(material)
                uid = value(conn.ok(Operation.Register, payload), Tag.UniqueIdentifier)
                made[uid] = digest(material)
        server.kill9()
    server.start()
    with server.connect() as conn:
        for uid, expected in made.items():
            got = key_material(conn.ok(Operation.Get, uid_payload(uid)))
            assert got is not None and len(got) == 32, uid
            if expected:
                assert digest(got) == expected, f"{uid}: other bytes after restart"


def _encodings(secret: bytes) -> dict[str, bytes]:
    return {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
    }


def _scan(paths: list[Path], secrets: dict[str, bytes]) -> list[str]:
    found = []
    for path in paths:
        data = path.read_bytes()
        for label, secret in secrets.items():
            for form, needle in _encodings(secret).items():
                if needle in data:
                    found.append(f"{path}: {label} ({form})")
    return found


def test_no_plaintext_key_bytes_in_data_dir(kmip_server_factory: Callable[[], KmipServer]) -> None:
    """DESIGN §3: object keys are stored only wrapped. Every file of the data dir (store,
    WAL, audit log, token, config) and the server's stderr are searched for the raw,
    hex and base64 forms of every registered key — while running and after shutdown."""
    server = kmip_server_factory()
    secrets: dict[str, bytes] = {}
    with server.connect() as conn:
        for _ in range(12):
            material = os.urandom(32)
            uid = value(
                conn.ok(Operation.Register, register_aes_payload(material)), Tag.UniqueIdentifier
            )
            secrets[f"symmetric key {uid}"] = material
            assert digest(key_material(conn.ok(Operation.Get, uid_payload(uid)))) == digest(
                material
            )
        for _ in range(4):
            material = os.urandom(24)
            uid = value(
                conn.ok(Operation.Register, register_secret_payload(material)),
                Tag.UniqueIdentifier,
            )
            secrets[f"secret data {uid}"] = material
            assert digest(key_material(conn.ok(Operation.Get, uid_payload(uid)))) == digest(
                material
            )

    def files() -> list[Path]:
        found = [p for p in server.data_dir.rglob("*") if p.is_file()]
        stderr = server.data_dir.parent / f"{server.data_dir.name}-serve.stderr"
        assert len(found) > 3, "the data dir looks empty"
        return [*found, stderr]

    leaks = _scan(files(), secrets)
    assert not leaks, "plaintext key bytes while running:\n" + "\n".join(leaks)
    server.stop()
    leaks = _scan(files(), secrets)
    assert not leaks, "plaintext key bytes after shutdown:\n" + "\n".join(leaks)


# ---------------------------------------------------------------------------
# Hostile input, while a well-behaved client keeps working


@dataclass
class SteadyClient:
    """Gets one key over and over on its own session, counting results."""

    server: KmipServer
    uid: str
    expected: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with self.server.connect() as conn:
                while not self.stop.is_set():
                    got = key_material(conn.ok(Operation.Get, uid_payload(self.uid)))
                    if digest(got) != self.expected:
                        self.failures.append("Get returned other bytes")
                        return
                    self.ok += 1
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def steady(kmip_server_factory: Callable[[], KmipServer]) -> Iterator[SteadyClient]:
    server = kmip_server_factory()
    material = os.urandom(32)
    with server.connect() as conn:
        uid = value(
            conn.ok(Operation.Register, register_aes_payload(material)), Tag.UniqueIdentifier
        )
    client = SteadyClient(server, uid, digest(material))
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    yield client
    client.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the steady client hung"


CLOSE_DEADLINE = 10.0


def _answers_until_closed(conn: Conn, deadline: float) -> tuple[list[bytes], bool]:
    """Messages the server sends before closing, and whether it closed within ``deadline``."""
    answers: list[bytes] = []
    conn.settimeout(deadline)
    try:
        while True:
            answers.append(conn.recv_message())
    except ConnectionClosed:
        return answers, True
    except TimeoutError:
        return answers, False


def _invalid_message(raw: bytes) -> bool:
    results = batch_results(_native.decode(raw))
    return bool(results) and all(
        r.status == ResultStatus.OperationFailed and r.reason == ResultReason.InvalidMessage
        for r in results
    )


def _header(tag: int, item_type: int, length: int) -> bytes:
    return struct.pack(">I", tag)[1:] + bytes([item_type]) + struct.pack(">I", length)


def _nested(depth: int) -> bytes:
    """A Request Message whose first child nests ``depth`` empty-ish structures."""
    inner = _header(Tag.RequestPayload, ItemType.Structure, 0)
    for _ in range(depth):
        inner = _header(Tag.RequestPayload, ItemType.Structure, len(inner)) + inner
    return _header(Tag.RequestMessage, ItemType.Structure, len(inner)) + inner


def _request_with_version(major: int, minor: int, operation: Operation = Operation.Get) -> bytes:
    # Get, not Discover Versions: a server may answer Discover Versions in any version.
    payload = uid_payload(str(uuid.uuid4())) if operation == Operation.Get else []
    return _native.encode(request_message([(operation, payload)], version=(major, minor)))


def _bad_ttlv_in_valid_frame() -> bytes:
    # A Request Message whose child claims to be an Integer of length 5 (Integers are 4).
    child = _header(Tag.RequestHeader, ItemType.Integer, 5) + b"\x00" * 8
    return _header(Tag.RequestMessage, ItemType.Structure, len(child)) + child


def _response_as_request() -> bytes:
    # Well-formed TTLV with the wrong root: a Response Message sent to the server.
    good = _request_with_version(1, 4, Operation.DiscoverVersions)
    return struct.pack(">I", Tag.ResponseMessage)[1:] + good[3:]


# (name, bytes to send, expectation): "closed" = the connection is closed (an Invalid
# Message answer before closing is allowed); "invalid" = an Invalid Message response.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("garbage header", b"GET / HTTP/1.1\r\nHost: kmip\r\n\r\n", "closed"),
    (
        "tag outside the KMIP ranges",
        _header(0x123456, ItemType.Structure, 16) + b"\0" * 16,
        "closed",
    ),
    (
        "root not a Structure",
        _header(Tag.RequestMessage, ItemType.Integer, 4) + b"\0" * 8,
        "closed",
    ),
    (
        "declared length over max_message_size",
        _header(Tag.RequestMessage, 1, 16 << 20) + b"\0" * 64,
        "closed",
    ),
    ("declared length 2 GiB", _header(Tag.RequestMessage, 1, 1 << 31) + b"\0" * 64, "closed"),
    (
        "declared length 4 GiB - 1",
        _header(Tag.RequestMessage, 1, 0xFFFFFFFF) + b"\0" * 64,
        "closed",
    ),
    ("bad TTLV inside valid framing", _bad_ttlv_in_valid_frame(), "invalid"),
    ("nesting deeper than 64", _nested(200), "invalid"),
    ("Response Message as request", _response_as_request(), "invalid"),
    ("protocol version 9.31", _request_with_version(9, 31), "failed"),
    ("protocol version 0.0", _request_with_version(0, 0), "failed"),
]


@pytest.mark.parametrize(("name", "data", "expect"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_refused_while_others_keep_working(
    steady: SteadyClient, name: str, data: bytes, expect: str
) -> None:
    server = steady.server
    ok_before = steady.ok
    with server.connect() as conn:
        conn.send(data)
        if expect == "closed":
            answers, closed = _answers_until_closed(conn, CLOSE_DEADLINE)
            assert closed, f"{name}: connection still open after {CLOSE_DEADLINE} s"
            assert all(_invalid_message(a) for a in answers), f"{name}: unexpected answer"
        else:
            conn.settimeout(CLOSE_DEADLINE)
            raw = conn.recv_message()
            if expect == "invalid":
                assert _invalid_message(raw), f"{name}: not an Invalid Message response"
            else:
                results = batch_results(_native.decode(raw))
                assert results and all(
                    r.status == ResultStatus.OperationFailed
                    and r.reason
                    in (ResultReason.InvalidMessage, ResultReason.OperationNotSupported)
                    for r in results
                ), f"{name}: " + "; ".join(r.describe() for r in results)
    # The well-behaved session kept getting its key meanwhile, and a new one works.
    deadline = time.monotonic() + CLOSE_DEADLINE
    while steady.ok <= ok_before and not steady.failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not steady.failures, steady.failures
    assert steady.ok > ok_before, "the steady client made no progress"
    with server.connect() as conn:
        conn.ok(Operation.DiscoverVersions)
    assert server.running


def test_plaintext_tcp_is_closed(kmip_server: KmipServer) -> None:
    """KMIP without TLS gets no answer: the handshake fails and the connection closes."""
    with socket.create_connection((kmip_server.host, kmip_server.port), timeout=10) as raw:
        raw.sendall(_request_with_version(1, 4, Operation.DiscoverVersions))
        raw.settimeout(CLOSE_DEADLINE)
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        assert not received.startswith(struct.pack(">I", Tag.ResponseMessage)[1:]), (
            "the server answered KMIP over plain TCP"
        )
