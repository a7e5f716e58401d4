"""``KmipProtocol``, the asyncio.Protocol shim, driven with a mock transport (no sockets).

The server around it is real: a runtime over a temporary data dir (software root),
the real :class:`Processor`, :class:`AllowList` and :class:`AuditLog`, and a client
certificate issued by :mod:`kmipfast.pki` and put in the store's allow-list.  The
mock transport hands that certificate's DER out as the TLS peer certificate, records
every call, and lets a test await "N responses written" with a deadline instead of
sleeping.  Framing is KMIP 1.4 §9.1 (TTLV: 8-byte tag/type/length header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kmipfast import _native, pki
from kmipfast.app import runtime
from kmipfast.audit import AuditLog
from kmipfast.auth import AllowList
from kmipfast.config import Config, load_config, write_default_config
from kmipfast.operations import DISPATCH
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import Operation, ResultReason, ResultStatus
from kmipfast.protocol.processor import Processor
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.server import MAX_QUEUED_MESSAGES, WRITE_HIGH_WATER, KmipProtocol, KmipServer
from kmipfast.store.base import ClientRecord

DEADLINE = 10.0  # seconds; generous, only ever reached when a test is about to fail


# ---------------------------------------------------------------------------
# Messages


def _request(
    operation: Operation, batch_id: bytes, payload: list[Item], version: tuple[int, int] = (1, 4)
) -> bytes:
    """One request message of one batch item tagged with ``batch_id``."""
    tree = ttlv.struct(
        Tag.RequestMessage,
        ttlv.struct(
            Tag.RequestHeader,
            ttlv.struct(
                Tag.ProtocolVersion,
                ttlv.integer(Tag.ProtocolVersionMajor, version[0]),
                ttlv.integer(Tag.ProtocolVersionMinor, version[1]),
            ),
            ttlv.integer(Tag.BatchCount, 1),
        ),
        ttlv.struct(
            Tag.BatchItem,
            ttlv.enum(Tag.Operation, operation),
            ttlv.byte_string(Tag.UniqueBatchItemID, batch_id),
            ttlv.struct(Tag.RequestPayload, *payload),
        ),
    )
    return _native.encode(tree)


def discover(batch_id: bytes, version: tuple[int, int] = (1, 4)) -> bytes:
    """One Discover Versions request tagged with ``batch_id`` so answers can be told apart."""
    return _request(Operation.DiscoverVersions, batch_id, [], version)


def create(batch_id: bytes) -> bytes:
    """One Create of an AES-256 key: it waits on the store (a durable write), unlike
    Discover Versions, which is answered without ever waiting."""

    def attribute(name: str, value: Item) -> Item:
        return ttlv.struct(Tag.Attribute, ttlv.text(Tag.AttributeName, name), value)

    template = ttlv.struct(
        Tag.TemplateAttribute,
        attribute("Cryptographic Algorithm", ttlv.enum(Tag.AttributeValue, 3)),  # AES
        attribute("Cryptographic Length", ttlv.integer(Tag.AttributeValue, 256)),
        attribute("Cryptographic Usage Mask", ttlv.integer(Tag.AttributeValue, 12)),
    )
    return _request(Operation.Create, batch_id, [ttlv.enum(Tag.ObjectType, 2), template])


@dataclass
class Answer:
    version: tuple[int, int]
    batch_id: bytes | None
    status: int
    reason: int | None


def answer(data: bytes) -> Answer:
    """The one batch item of a response written to the transport."""
    resp: Item = _native.decode(data)
    assert resp[0] == Tag.ResponseMessage
    hdr = ttlv.find(resp, Tag.ResponseHeader)
    pv = ttlv.find(hdr, Tag.ProtocolVersion)
    [item] = ttlv.find_all(resp, Tag.BatchItem)
    return Answer(
        version=(
            ttlv.value(pv, Tag.ProtocolVersionMajor),
            ttlv.value(pv, Tag.ProtocolVersionMinor),
        ),
        batch_id=ttlv.value(item, Tag.UniqueBatchItemID),
        status=ttlv.value(item, Tag.ResultStatus),
        reason=ttlv.value(item, Tag.ResultReason),
    )


# ---------------------------------------------------------------------------
# The mock transport


class FakeSslObject:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form, "the shim identifies clients by the DER certificate"
        return self.der


class MockTransport:
    """Records what the protocol does to its transport; ``written(n)`` waits for writes."""

    def __init__(self, der: bytes | None, peer: tuple[str, int] = ("192.0.2.7", 50123)) -> None:
        self.ssl_object = None if der is None else FakeSslObject(der)
        self.peer = peer
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.limits: list[tuple[int | None, int | None]] = []
        self.closing = False
        self._changed: asyncio.Future[None] | None = None

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "write after close/abort"
        self.writes.append(bytes(data))
        self.calls.append("write")
        self._notify()

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True
        self._notify()

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True
        self._notify()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits.append((high, low))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"ssl_object": self.ssl_object, "peername": self.peer}.get(name, default)

    @property
    def aborted(self) -> bool:
        return "abort" in self.calls

    async def until(self, condition: Callable[[], bool]) -> None:
        """Waits (event-driven, with a deadline) until ``condition()`` holds; it is
        re-checked after every write, close or abort."""
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self._changed = asyncio.get_running_loop().create_future()
                await self._changed

    async def written(self, n: int) -> list[bytes]:
        """Waits until ``n`` responses were written; fails early if the transport closes."""
        await self.until(lambda: len(self.writes) >= n or self.closing)
        assert len(self.writes) >= n, f"transport closed after {len(self.writes)} writes"
        return self.writes


# ---------------------------------------------------------------------------
# A real server object around the shim


@dataclass
class Env:
    config: Config
    server: KmipServer
    audit: AuditLog
    audit_path: Path
    der: bytes  # an allowed client certificate
    stranger_der: bytes  # same CA, not in the allow-list
    opened: list[KmipProtocol]

    def connect(
        self, der: bytes | None = None, *, allowed: bool = True
    ) -> tuple[KmipProtocol, MockTransport]:
        transport = MockTransport(self.der if allowed and der is None else der)
        proto = KmipProtocol(self.server)
        proto.connection_made(transport)  # type: ignore[arg-type]
        self.opened.append(proto)
        return proto, transport

    async def settled(self) -> None:
        """Every task the server started for its connections has finished."""
        async with asyncio.timeout(DEADLINE):
            while self.server.state.tasks:
                await asyncio.gather(*self.server.state.tasks)

    def audit_lines(self) -> list[dict[str, Any]]:
        self.audit.flush()
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


@contextlib.asynccontextmanager
async def open_env(tmp_path: Path, **choices: Any) -> AsyncIterator[Env]:
    data_dir = tmp_path / "data"
    write_default_config(data_dir, software_root=True, **choices)
    config = load_config(data_dir, environ={})
    ca_cert, ca_key = pki.create_ca("shim test CA")
    client, _ = pki.issue_client_cert(ca_cert, ca_key, "client-a")
    stranger, _ = pki.issue_client_cert(ca_cert, ca_key, "client-x")
    audit_path = tmp_path / "audit.log"
    audit = AuditLog(audit_path)
    opened: list[KmipProtocol] = []
    async with runtime(config, audit=False) as rt:
        await rt.services.keys.create_tenant("default")
        await rt.store.put_client(
            ClientRecord(
                name="client-a",
                tenant="default",
                fingerprint=pki.fingerprint(client),
                subject=client.subject.rfc4514_string(),
                issuer=client.issuer.rfc4514_string(),
                not_after=int(client.not_valid_after_utc.timestamp()),
                created=int(time.time()),
            )
        )
        allow = AllowList(rt.store, config.data_dir)
        assert await allow.reload_if_changed()
        processor = Processor(
            rt.services,
            DISPATCH,
            max_message_size=config.limits.max_message_size,
            max_batch_items=config.limits.max_batch_items,
            max_response_size=config.limits.max_response_size,
        )
        server = KmipServer(config, processor, allow, audit)
        env = Env(config, server, audit, audit_path, _der(client), _der(stranger), opened)
        try:
            yield env
            await env.settled()
        finally:
            for proto in opened:
                proto.connection_lost(None)  # cancels the idle timer
            audit.close()


def run(tmp_path: Path, body: Callable[[Env], Awaitable[None]], **choices: Any) -> None:
    async def main() -> None:
        async with open_env(tmp_path, **choices) as env:
            await body(env)

    asyncio.run(main())


# ---------------------------------------------------------------------------
# Framing (KMIP 1.4 §9.1.1)


def test_message_split_byte_by_byte_is_answered_once_9_1_1(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        assert not t.aborted and t.limits == [(WRITE_HIGH_WATER, None)]
        data = discover(b"only")
        for i in range(len(data)):
            proto.data_received(data[i : i + 1])
        [resp] = await t.written(1)
        await env.settled()
        assert len(t.writes) == 1
        got = answer(resp)
        assert (got.batch_id, got.status) == (b"only", ResultStatus.Success)
        assert not t.aborted

    run(tmp_path, body)


def test_header_split_across_chunks_is_answered_once_9_1_1(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        data = discover(b"x")
        for part in (data[:3], data[3:7], data[7:8], data[8:40], data[40:]):
            proto.data_received(part)
        await t.written(1)
        await env.settled()
        assert [answer(w).batch_id for w in t.writes] == [b"x"]

    run(tmp_path, body)


def test_two_pipelined_messages_in_one_chunk_are_answered_in_order_9_1_1(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        first, second, third = (
            discover(b"1", (1, 1)),
            discover(b"2", (1, 4)),
            discover(b"3", (1, 0)),
        )
        proto.data_received(first + second + third[:10])
        await t.written(2)
        await env.settled()
        assert [(a.batch_id, a.version) for a in map(answer, t.writes)] == [
            (b"1", (1, 1)),
            (b"2", (1, 4)),
        ]
        proto.data_received(third[10:])
        await t.written(3)
        assert answer(t.writes[2]).batch_id == b"3"
        assert not t.aborted

    run(tmp_path, body)


def test_many_pipelined_messages_pause_reading_then_resume_9_1_1(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        n = MAX_QUEUED_MESSAGES + 4
        # Creates wait on the store, so the queue behind the first one fills up.
        proto.data_received(b"".join(create(bytes([i])) for i in range(n)))
        # Too many queued messages: stop reading until the queue drains.
        assert t.calls[:1] == ["pause_reading"]
        await t.written(n)
        await env.settled()
        assert [answer(w).batch_id for w in t.writes] == [bytes([i]) for i in range(n)]
        assert all(answer(w).status == ResultStatus.Success for w in t.writes)
        assert t.calls.count("pause_reading") == 1
        assert t.calls.count("resume_reading") == 1


def test_malformed_body_gets_a_kmip_answer_not_a_closed_connection_9_1(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        bad = bytearray(discover(b"bad", (1, 1)))
        # Well framed, but the 3-byte Unique Batch Item ID is followed by non-zero padding.
        at = bytes(bad).index(b"bad") + 3
        bad[at] = 0xFF
        proto.data_received(bytes(bad) + discover(b"good"))
        await t.written(2)
        first, second = map(answer, t.writes)
        assert (first.status, first.reason, first.version) == (
            ResultStatus.OperationFailed,
            ResultReason.InvalidMessage,
            (1, 1),
        )
        assert (second.batch_id, second.status) == (b"good", ResultStatus.Success)
        assert not t.aborted

    run(tmp_path, body)


def test_header_over_max_message_size_aborts_before_the_body_9_1_1(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        limit = env.config.limits.max_message_size
        # Request Message, Structure, declared length one byte over the limit.
        header = bytes.fromhex("42007801") + (limit + 1).to_bytes(4, "big")
        proto.data_received(header)
        assert t.aborted, "the 8-byte header alone must be enough to refuse"
        await env.settled()
        assert t.writes == []

    run(tmp_path, body)


def test_header_over_max_message_size_after_a_good_message_aborts_9_1_1(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.data_received(discover(b"ok"))
        await t.written(1)
        header = bytes.fromhex("42007801") + (1 << 30).to_bytes(4, "big")
        proto.data_received(header + b"\x00" * 100)
        assert t.aborted
        await env.settled()
        assert len(t.writes) == 1

    run(tmp_path, body)


def test_long_stream_with_a_partial_message_keeps_framing_9_1_1(tmp_path: Path) -> None:
    # More than 64 KiB consumed with a partial message left over: the receive buffer
    # is compacted and the partial message must survive it.
    async def body(env: Env) -> None:
        proto, t = env.connect()
        messages = [discover(i.to_bytes(2, "big")) for i in range(1200)]
        stream = b"".join(messages)
        assert len(stream) > 65536 + len(messages[0])
        cut = len(stream) - 20
        for start in range(0, cut, 5000):
            proto.data_received(stream[start : min(start + 5000, cut)])
        proto.data_received(stream[cut:])
        await t.written(len(messages))
        await env.settled()
        assert [answer(w).batch_id for w in t.writes] == [i.to_bytes(2, "big") for i in range(1200)]
        assert not t.aborted

    run(tmp_path, body)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("4200780200000004", id="integer-not-structure"),
        pytest.param("4200780700000010", id="text-not-structure"),
        pytest.param("0000000100000010", id="tag-outside-kmip-ranges"),
    ],
)
def test_header_that_is_not_a_kmip_structure_aborts_9_1_1(tmp_path: Path, header: str) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.data_received(bytes.fromhex(header) + b"\x00" * 16)
        assert t.aborted
        await env.settled()
        assert t.writes == []

    run(tmp_path, body)


# ---------------------------------------------------------------------------
# Client identity (DESIGN §4: a client is its certificate)


def test_unknown_client_certificate_is_aborted_and_audited(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect(env.stranger_der)
        assert t.calls == ["abort"]
        assert t.limits == []
        assert env.server.state.connections == set()
        # Nothing it sends is processed.
        proto.data_received(discover(b"sneaky"))
        await env.settled()
        assert t.writes == []
        stranger = x509.load_der_x509_certificate(env.stranger_der)
        [line] = [e for e in env.audit_lines() if e["kind"] == "refused"]
        assert line["reason"] == "unknown"
        assert line["fingerprint"] == pki.fingerprint(stranger)
        assert line["peer"] == "192.0.2.7:50123"

    run(tmp_path, body)


def test_missing_client_certificate_is_aborted_and_audited(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect(None, allowed=False)
        assert t.calls == ["abort"]
        proto.data_received(discover(b"sneaky"))
        await env.settled()
        assert t.writes == []
        [line] = [e for e in env.audit_lines() if e["kind"] == "refused"]
        assert line["reason"] == "no client certificate"

    run(tmp_path, body)


def test_allowed_client_is_served_in_its_tenant(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, _t = env.connect()
        assert proto.session is not None
        assert (proto.session.client, proto.session.tenant) == ("client-a", "default")
        assert proto in env.server.state.connections
        proto.connection_lost(None)
        assert proto not in env.server.state.connections

    run(tmp_path, body)


def test_session_limit_refuses_the_next_connection(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        _first, t1 = env.connect()
        _second, t2 = env.connect()
        assert not t1.aborted
        assert t2.aborted

    run(tmp_path, body, limits_max_sessions=1)


def test_idle_session_is_closed_after_idle_timeout(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.data_received(discover(b"x"))
        await t.written(1)
        await t.until(t.is_closing)
        assert t.calls[-1] == "close" and not t.aborted

    run(tmp_path, body, limits_idle_timeout=1.0)


def test_idle_timeout_counts_from_the_last_request(tmp_path: Path) -> None:
    """The idle timer is set once per period and re-armed for what is left when it
    fires: a session asking every 0.4 s outlives a 1 s timeout, then closes ~1 s after
    its last request."""

    async def body(env: Env) -> None:
        loop = asyncio.get_running_loop()
        proto, t = env.connect()
        for i in range(5):
            proto.data_received(discover(bytes([i])))
            await t.written(i + 1)
            await asyncio.sleep(0.4)
            assert not t.is_closing()
        last = loop.time() - 0.4
        await t.until(t.is_closing)
        assert 0.9 <= loop.time() - last <= 1.6
        assert t.calls[-1] == "close" and not t.aborted

    run(tmp_path, body, limits_idle_timeout=1.0)


# ---------------------------------------------------------------------------
# Flow control


def test_pause_writing_pauses_reading_until_resume_writing(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.pause_writing()
        assert t.calls == ["pause_reading"]
        # Responses still go out (the transport buffers them), but reading stays
        # paused while the write buffer is over its high-water mark.
        proto.data_received(discover(b"a") + discover(b"b"))
        await t.written(2)
        await env.settled()
        assert "resume_reading" not in t.calls
        proto.resume_writing()
        assert t.calls[-1] == "resume_reading"
        assert t.calls.count("pause_reading") == 1
        # A second pause/resume cycle works the same way.
        proto.pause_writing()
        proto.resume_writing()
        assert t.calls[-2:] == ["pause_reading", "resume_reading"]

    run(tmp_path, body)


def test_queue_drained_while_write_paused_does_not_resume_reading(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.pause_writing()
        n = MAX_QUEUED_MESSAGES + 2
        proto.data_received(b"".join(discover(bytes([i])) for i in range(n)))
        await t.written(n)
        await env.settled()
        assert "resume_reading" not in t.calls
        proto.resume_writing()
        assert t.calls.count("resume_reading") == 1

    run(tmp_path, body)


def test_close_closes_the_transport_once(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        proto, t = env.connect()
        proto.close()
        proto.close()
        assert t.calls.count("close") == 1

    run(tmp_path, body)
