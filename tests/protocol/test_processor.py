"""The batch loop and the operations behind it, bytes in and bytes out (sans-IO).

Every test builds a Request Message as a tree, encodes it, hands the bytes to
:meth:`Processor.handle` over a real runtime (SQLite store in a temporary data dir,
software root keys) and decodes the answer.  Section numbers are those of KMIP 1.4
(§6 message contents, §7 message format, §3 attributes, §4 operations) unless a
test says otherwise; TC-nn are the OASIS KMIP test cases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmipfast import _native, pki
from kmipfast.app import Runtime, runtime
from kmipfast.config import load_config, write_default_config
from kmipfast.operations import DISPATCH
from kmipfast.protocol import ttlv
from kmipfast.protocol.attributes import RULES
from kmipfast.protocol.enums import (
    BatchErrorContinuationOption,
    CertificateType,
    CryptographicAlgorithm,
    KeyFormatType,
    LinkType,
    NameType,
    ObjectType,
    Operation,
    QueryFunction,
    ResultReason,
    ResultStatus,
    RevocationReasonCode,
    SecretDataType,
    State,
)
from kmipfast.protocol.processor import Processor, Session
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import Item

# ---------------------------------------------------------------------------
# Building requests


def text(tag: int, value: str) -> Item:
    return ttlv.text(tag, value)


def pv(major: int, minor: int) -> Item:
    return ttlv.struct(
        Tag.ProtocolVersion,
        ttlv.integer(Tag.ProtocolVersionMajor, major),
        ttlv.integer(Tag.ProtocolVersionMinor, minor),
    )


def header(count: int, version: tuple[int, int] = (1, 4), extra: tuple[Item, ...] = ()) -> Item:
    return ttlv.struct(Tag.RequestHeader, pv(*version), *extra, ttlv.integer(Tag.BatchCount, count))


def batch_item(
    op: int,
    *payload: Item | None,
    batch_id: bytes | None = None,
    extension: Item | None = None,
) -> Item:
    return ttlv.struct(
        Tag.BatchItem,
        ttlv.enum(Tag.Operation, op),
        None if batch_id is None else ttlv.byte_string(Tag.UniqueBatchItemID, batch_id),
        ttlv.struct(Tag.RequestPayload, *payload),
        extension,
    )


def message(
    *items: Item,
    version: tuple[int, int] = (1, 4),
    extra: tuple[Item, ...] = (),
    count: int | None = None,
) -> Item:
    n = len(items) if count is None else count
    return ttlv.struct(Tag.RequestMessage, header(n, version, extra), *items)


def uid(value: str) -> Item:
    return text(Tag.UniqueIdentifier, value)


def attribute(name: str, typ: int, value: Any, index: int | None = None) -> Item:
    return ttlv.struct(
        Tag.Attribute,
        text(Tag.AttributeName, name),
        None if index is None else ttlv.integer(Tag.AttributeIndex, index),
        (int(Tag.AttributeValue), int(typ), value),
    )


def name_value(name: str) -> list[Item]:
    return [text(Tag.NameValue, name), ttlv.enum(Tag.NameType, NameType.UninterpretedTextString)]


def name_attribute(name: str) -> Item:
    return attribute("Name", ItemType.Structure, name_value(name))


def template(*attributes: Item) -> Item:
    return ttlv.struct(Tag.TemplateAttribute, *attributes)


def aes_create(length: int = 256, *extra: Item) -> list[Item]:
    return [
        ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
        template(
            attribute("Cryptographic Algorithm", ItemType.Enumeration, CryptographicAlgorithm.AES),
            attribute("Cryptographic Length", ItemType.Integer, length),
            attribute("Cryptographic Usage Mask", ItemType.Integer, 12),
            *extra,
        ),
    ]


def revocation(code: int) -> Item:
    return ttlv.struct(Tag.RevocationReason, ttlv.enum(Tag.RevocationReasonCode, code))


# ---------------------------------------------------------------------------
# Reading responses


@dataclass
class Result:
    operation: int | None
    batch_id: bytes | None
    status: int
    reason: int | None
    message: str | None
    payload: Item | None

    @property
    def ok(self) -> bool:
        return self.status == ResultStatus.Success

    def __str__(self) -> str:
        try:
            reason = ResultReason(self.reason).name if self.reason is not None else "-"
        except ValueError:
            reason = hex(self.reason or 0)
        return f"status={self.status} reason={reason} message={self.message!r}"


def assert_well_formed(resp: Item) -> None:
    """A Response Message as §7.2 lays it out: header (version, time stamp, count) and
    one Batch Item per counted item, each with a Result Status."""
    assert resp[0] == Tag.ResponseMessage and resp[1] == ttlv.STRUCTURE
    hdr = ttlv.find(resp, Tag.ResponseHeader)
    assert hdr is not None and ttlv.children(resp)[0] is hdr
    version = ttlv.find(hdr, Tag.ProtocolVersion)
    assert ttlv.value(version, Tag.ProtocolVersionMajor) == 1
    assert ttlv.value(version, Tag.ProtocolVersionMinor) in range(5)
    assert isinstance(ttlv.value(hdr, Tag.TimeStamp), int)
    items = list(ttlv.find_all(resp, Tag.BatchItem))
    assert items, "a response has at least one Batch Item"
    assert ttlv.value(hdr, Tag.BatchCount) == len(items)
    for item in items:
        status = ttlv.find(item, Tag.ResultStatus)
        assert status is not None and status[1] == ttlv.ENUMERATION
        if status[2] != ResultStatus.Success:
            assert ttlv.value(item, Tag.ResultReason) is not None


def response_version(resp: Item) -> tuple[int, int]:
    version = ttlv.find(ttlv.find(resp, Tag.ResponseHeader), Tag.ProtocolVersion)
    return (
        ttlv.value(version, Tag.ProtocolVersionMajor),
        ttlv.value(version, Tag.ProtocolVersionMinor),
    )


def results(resp: Item) -> list[Result]:
    return [
        Result(
            operation=ttlv.value(i, Tag.Operation),
            batch_id=ttlv.value(i, Tag.UniqueBatchItemID),
            status=ttlv.value(i, Tag.ResultStatus),
            reason=ttlv.value(i, Tag.ResultReason),
            message=ttlv.value(i, Tag.ResultMessage),
            payload=ttlv.find(i, Tag.ResponsePayload),
        )
        for i in ttlv.find_all(resp, Tag.BatchItem)
    ]


def attrs_of(payload: Item | None) -> dict[str, list[tuple[int, Any]]]:
    """Attribute name -> [(index, value)] of a Get Attributes payload."""
    out: dict[str, list[tuple[int, Any]]] = {}
    for a in ttlv.find_all(payload, Tag.Attribute):
        name = ttlv.value(a, Tag.AttributeName)
        out.setdefault(name, []).append(
            (ttlv.value(a, Tag.AttributeIndex, 0), ttlv.value(a, Tag.AttributeValue))
        )
    return out


def values_of(payload: Item | None, name: str) -> list[Any]:
    return [v for _, v in attrs_of(payload).get(name, [])]


def uids_of(payload: Item | None) -> list[str]:
    return [u[2] for u in ttlv.find_all(payload, Tag.UniqueIdentifier)]


def key_material(payload: Item | None) -> Item | None:
    for tag in (Tag.SymmetricKey, Tag.SecretData):
        obj = ttlv.find(payload, tag)
        if obj is not None:
            block = ttlv.find(obj, Tag.KeyBlock)
            return ttlv.find(ttlv.find(block, Tag.KeyValue), Tag.KeyMaterial)
    return None


# ---------------------------------------------------------------------------
# A processor over a real runtime

DEFAULT = Session("client-a", "default", "fp-a")
TENANT_B = Session("client-b", "b", "fp-b")


class Kmip:
    def __init__(self, rt: Runtime, processor: Processor) -> None:
        self.rt = rt
        self.processor = processor

    async def raw(self, data: bytes, session: Session = DEFAULT) -> bytes:
        return await self.processor.handle(session, data)

    async def send(self, tree: Item, session: Session = DEFAULT) -> Item:
        resp = _native.decode(await self.raw(_native.encode(tree), session))
        assert_well_formed(resp)
        return resp

    async def call(
        self,
        op: int,
        *payload: Item | None,
        version: tuple[int, int] = (1, 4),
        session: Session = DEFAULT,
    ) -> Result:
        [result] = results(
            await self.send(message(batch_item(op, *payload), version=version), session)
        )
        return result

    async def ok(self, op: int, *payload: Item | None, **kw: Any) -> Item | None:
        result = await self.call(op, *payload, **kw)
        assert result.ok, f"{Operation(op).name} failed: {result}"
        return result.payload

    async def fail(self, reason: ResultReason, op: int, *payload: Item | None, **kw: Any) -> Result:
        result = await self.call(op, *payload, **kw)
        assert (result.status, result.reason) == (ResultStatus.OperationFailed, reason), (
            f"{Operation(op).name}: expected {reason.name}, got {result}"
        )
        return result

    async def create(self, *extra: Item, session: Session = DEFAULT) -> str:
        payload = await self.ok(Operation.Create, *aes_create(256, *extra), session=session)
        return ttlv.value(payload, Tag.UniqueIdentifier)

    async def attributes(self, key: str, *names: str, **kw: Any) -> Item | None:
        wanted = [text(Tag.AttributeName, n) for n in names]
        return await self.ok(Operation.GetAttributes, uid(key), *wanted, **kw)

    async def state(self, key: str) -> int:
        [state] = values_of(await self.attributes(key, "State"), "State")
        return state


Body = Callable[[Kmip], Awaitable[None]]


@contextlib.asynccontextmanager
async def open_kmip(data_dir: Path, **limits: int) -> Any:
    write_default_config(data_dir, software_root=True)
    cfg = load_config(data_dir, environ={})
    async with runtime(cfg, audit=False) as rt:
        await rt.services.keys.create_tenant("default")
        await rt.services.keys.create_tenant("b")
        processor = Processor(
            rt.services,
            DISPATCH,
            max_message_size=limits.get("max_message_size", 1 << 20),
            max_batch_items=limits.get("max_batch_items", 64),
            max_response_size=limits.get("max_response_size", 1 << 22),
        )
        yield Kmip(rt, processor)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """``serve(body, **limits)`` runs ``async body(kmip)`` against a fresh runtime."""
    count = 0

    def run(body: Body, **limits: int) -> None:
        nonlocal count
        count += 1

        async def main() -> None:
            async with open_kmip(tmp_path / f"data{count}", **limits) as kmip:
                await body(kmip)

        asyncio.run(main())

    yield run


# ---------------------------------------------------------------------------
# §7.1 / §6: batches


def test_unique_batch_item_ids_are_echoed_in_order_6_4(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        ids = [b"\x01", b"second", bytes(range(16))]
        resp = await k.send(
            message(
                batch_item(Operation.DiscoverVersions, batch_id=ids[0]),
                batch_item(
                    Operation.Query,
                    ttlv.enum(Tag.QueryFunction, QueryFunction.QueryOperations),
                    batch_id=ids[1],
                ),
                batch_item(Operation.Create, *aes_create(), batch_id=ids[2]),
            )
        )
        got = results(resp)
        assert [r.batch_id for r in got] == ids
        assert [r.operation for r in got] == [
            Operation.DiscoverVersions,
            Operation.Query,
            Operation.Create,
        ]
        assert all(r.ok for r in got)

    serve(body)


def test_several_items_without_unique_batch_item_id_is_invalid_message_6_4(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        resp = await k.send(
            message(batch_item(Operation.DiscoverVersions), batch_item(Operation.DiscoverVersions))
        )
        [r] = results(resp)
        assert (r.status, r.reason) == (ResultStatus.OperationFailed, ResultReason.InvalidMessage)

    serve(body)


def test_single_item_needs_no_unique_batch_item_id_6_4(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        r = await k.call(Operation.DiscoverVersions)
        assert r.ok and r.batch_id is None

    serve(body)


def test_id_placeholder_carries_create_to_later_items_6_6(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        resp = await k.send(
            message(
                batch_item(Operation.Create, *aes_create(), batch_id=b"1"),
                batch_item(
                    Operation.GetAttributes, text(Tag.AttributeName, "State"), batch_id=b"2"
                ),
                batch_item(Operation.Activate, batch_id=b"3"),
                batch_item(
                    Operation.GetAttributes, text(Tag.AttributeName, "State"), batch_id=b"4"
                ),
                batch_item(Operation.Get, batch_id=b"5"),
            )
        )
        create, before, activate, after, get = results(resp)
        assert all(r.ok for r in (create, before, activate, after, get)), [
            str(r) for r in results(resp)
        ]
        key = ttlv.value(create.payload, Tag.UniqueIdentifier)
        for r in (before, activate, after, get):
            assert uids_of(r.payload) == [key]
        assert values_of(before.payload, "State") == [State.PreActive]
        assert values_of(after.payload, "State") == [State.Active]
        material = key_material(get.payload)
        assert material is not None and len(material[2]) == 32

    serve(body)


def test_id_placeholder_is_not_set_by_a_failed_item_6_6(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        cont = ttlv.enum(Tag.BatchErrorContinuationOption, BatchErrorContinuationOption.Continue)
        resp = await k.send(
            message(
                batch_item(Operation.Create, *aes_create(), batch_id=b"1"),
                batch_item(Operation.Create, *aes_create(100), batch_id=b"2"),
                batch_item(Operation.GetAttributes, batch_id=b"3"),
                extra=(cont,),
            )
        )
        first, bad, attrs = results(resp)
        assert first.ok and not bad.ok and attrs.ok
        assert uids_of(attrs.payload) == uids_of(first.payload)

    serve(body)


def test_missing_uid_without_placeholder_is_a_failure_6_6(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        await k.fail(ResultReason.InvalidField, Operation.Get)

    serve(body)


def _failing_then_good(option: int | None) -> Item:
    extra = () if option is None else (ttlv.enum(Tag.BatchErrorContinuationOption, option),)
    return message(
        batch_item(Operation.Create, *aes_create(), batch_id=b"a"),
        batch_item(Operation.Get, uid("no-such-object"), batch_id=b"b"),
        batch_item(Operation.DiscoverVersions, batch_id=b"c"),
        extra=extra,
    )


@pytest.mark.parametrize("option", [None, BatchErrorContinuationOption.Stop])
def test_batch_error_continuation_stop_leaves_later_items_unanswered_6_14(
    serve: Callable[..., None], option: int | None
) -> None:
    async def body(k: Kmip) -> None:
        got = results(await k.send(_failing_then_good(option)))
        assert [r.batch_id for r in got] == [b"a", b"b"]
        assert got[0].ok
        assert (got[1].status, got[1].reason) == (
            ResultStatus.OperationFailed,
            ResultReason.ItemNotFound,
        )
        # Completed items are not undone.
        key = ttlv.value(got[0].payload, Tag.UniqueIdentifier)
        assert await k.state(key) == State.PreActive

    serve(body)


def test_batch_error_continuation_continue_answers_every_item_6_14(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        got = results(await k.send(_failing_then_good(BatchErrorContinuationOption.Continue)))
        assert [r.batch_id for r in got] == [b"a", b"b", b"c"]
        assert [r.ok for r in got] == [True, False, True]
        assert got[1].reason == ResultReason.ItemNotFound

    serve(body)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_batch_count_mismatch_is_invalid_message_7_1(
    serve: Callable[..., None], count: int
) -> None:
    async def body(k: Kmip) -> None:
        tree = message(
            batch_item(Operation.DiscoverVersions, batch_id=b"1"),
            batch_item(Operation.DiscoverVersions, batch_id=b"2"),
            count=count,
        )
        [r] = results(await k.send(tree))
        assert (r.status, r.reason) == (ResultStatus.OperationFailed, ResultReason.InvalidMessage)

    serve(body)


def test_batch_count_above_server_limit_is_invalid_message_7_1(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        items = [batch_item(Operation.DiscoverVersions, batch_id=bytes([i])) for i in range(3)]
        [r] = results(await k.send(message(*items)))
        assert r.reason == ResultReason.InvalidMessage

    serve(body, max_batch_items=2)


@pytest.mark.parametrize(
    "tree",
    [
        pytest.param(
            ttlv.struct(Tag.RequestMessage, batch_item(Operation.DiscoverVersions)),
            id="no-header",
        ),
        pytest.param(
            ttlv.struct(
                Tag.RequestMessage,
                ttlv.struct(Tag.RequestHeader, pv(1, 4)),
                batch_item(Operation.DiscoverVersions),
            ),
            id="no-batch-count",
        ),
        pytest.param(
            ttlv.struct(
                Tag.RequestMessage,
                ttlv.struct(Tag.RequestHeader, ttlv.integer(Tag.BatchCount, 1)),
                batch_item(Operation.DiscoverVersions),
            ),
            id="no-protocol-version",
        ),
        pytest.param(
            ttlv.struct(
                Tag.RequestMessage,
                header(1),
                ttlv.struct(Tag.BatchItem, ttlv.struct(Tag.RequestPayload)),
            ),
            id="no-operation",
        ),
        pytest.param(message(count=0), id="no-batch-item"),
        pytest.param(
            ttlv.struct(Tag.ResponseMessage, header(1), batch_item(Operation.DiscoverVersions)),
            id="not-a-request-message",
        ),
    ],
)
def test_malformed_message_structure_is_invalid_message_7_1(
    serve: Callable[..., None], tree: Item
) -> None:
    async def body(k: Kmip) -> None:
        [r] = results(await k.send(tree))
        assert (r.status, r.reason) == (ResultStatus.OperationFailed, ResultReason.InvalidMessage)

    serve(body)


def _corrupted(version: tuple[int, int]) -> bytes:
    """A request in ``version`` whose payload holds a Text String that is not UTF-8."""
    tree = message(batch_item(Operation.Get, uid("MARKER-MARKER")), version=version)
    data = _native.encode(tree)
    assert data.count(b"MARKER-MARKER") == 1
    return data.replace(b"MARKER-MARKER", b"\xff" * 13)


@pytest.mark.parametrize("version", [(1, 0), (1, 1), (1, 2), (1, 4)])
def test_malformed_ttlv_answers_invalid_message_in_the_request_version_9_1(
    serve: Callable[..., None], version: tuple[int, int]
) -> None:
    async def body(k: Kmip) -> None:
        resp = _native.decode(await k.raw(_corrupted(version)))
        assert_well_formed(resp)
        assert response_version(resp) == version
        [r] = results(resp)
        assert (r.status, r.reason) == (ResultStatus.OperationFailed, ResultReason.InvalidMessage)

    serve(body)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x42\x00\x78\x01\x00\x00\x00\x08" + b"\x00" * 4, id="truncated"),
        pytest.param(b"garbage that is no TTLV at all", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(
            _native.encode(message(batch_item(Operation.DiscoverVersions))) + b"\x00" * 8,
            id="trailing-bytes",
        ),
    ],
)
def test_unsniffable_garbage_answers_invalid_message_9_1(
    serve: Callable[..., None], data: bytes
) -> None:
    async def body(k: Kmip) -> None:
        resp = _native.decode(await k.raw(data))
        assert_well_formed(resp)
        [r] = results(resp)
        assert r.reason == ResultReason.InvalidMessage

    serve(body)


def test_message_over_max_message_size_is_invalid_message_7_1(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        big = ttlv.byte_string(Tag.OpaqueDataValue, b"\x00" * 8192)
        data = _native.encode(message(batch_item(Operation.DiscoverVersions, big)))
        resp = _native.decode(await k.raw(data))
        assert_well_formed(resp)
        [r] = results(resp)
        assert r.reason == ResultReason.InvalidMessage

    serve(body, max_message_size=4096)


# ---------------------------------------------------------------------------
# §6.3 Maximum Response Size


def _max_response(size: int) -> Item:
    return ttlv.integer(Tag.MaximumResponseSize, size)


def test_maximum_response_size_too_small_is_response_too_large_6_3(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        tree = message(batch_item(Operation.Get, uid(key)), extra=(_max_response(64),))
        [r] = results(await k.send(tree))
        assert (r.status, r.reason) == (ResultStatus.OperationFailed, ResultReason.ResponseTooLarge)
        assert r.payload is None
        assert r.operation == Operation.Get

        tree = message(batch_item(Operation.Get, uid(key)), extra=(_max_response(4096),))
        [r] = results(await k.send(tree))
        assert r.ok

    serve(body)


def test_server_response_limit_applies_without_a_client_maximum_6_3(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        payload = await k.ok(Operation.Register, *_opaque(b"\x5a" * 8000))
        key = ttlv.value(payload, Tag.UniqueIdentifier)
        r = await k.call(Operation.Get, uid(key))
        assert r.reason == ResultReason.ResponseTooLarge

    serve(body, max_response_size=4096)


def test_client_maximum_response_size_cannot_exceed_the_server_limit_6_3(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        payload = await k.ok(Operation.Register, *_opaque(b"\x5a" * 8000))
        key = ttlv.value(payload, Tag.UniqueIdentifier)
        tree = message(batch_item(Operation.Get, uid(key)), extra=(_max_response(1 << 20),))
        [r] = results(await k.send(tree))
        assert r.reason == ResultReason.ResponseTooLarge

    serve(body, max_response_size=4096)


# ---------------------------------------------------------------------------
# §6.16 Message Extension (TC-71, TC-72)


def _extension(critical: bool) -> Item:
    return ttlv.struct(
        Tag.MessageExtension,
        text(Tag.VendorIdentification, "Acme"),
        ttlv.boolean(Tag.CriticalityIndicator, critical),
        ttlv.struct(Tag.VendorExtension, (0x540001, ttlv.TEXT_STRING, "na")),
    )


def test_critical_unknown_message_extension_fails_the_item_tc_72(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        tree = message(
            batch_item(Operation.Create, *aes_create(128), extension=_extension(True)),
            version=(1, 2),
        )
        [r] = results(await k.send(tree))
        assert r.operation == Operation.Create
        assert (r.status, r.reason) == (
            ResultStatus.OperationFailed,
            ResultReason.FeatureNotSupported,
        )
        found = await k.ok(Operation.Locate)
        assert uids_of(found) == [], "the failed Create must not have made a key"

    serve(body)


def test_non_critical_unknown_message_extension_is_ignored_tc_71(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        tree = message(
            batch_item(Operation.Create, *aes_create(128), extension=_extension(False)),
            version=(1, 2),
        )
        [r] = results(await k.send(tree))
        assert r.ok
        assert ttlv.value(r.payload, Tag.ObjectType) == ObjectType.SymmetricKey
        key = ttlv.value(r.payload, Tag.UniqueIdentifier)
        await k.ok(Operation.Destroy, uid(key), version=(1, 2))

    serve(body)


# ---------------------------------------------------------------------------
# §6.1 Protocol Version


def test_protocol_version_2_0_fails_every_operation_but_discover_versions_6_1(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        resp = await k.send(
            message(
                batch_item(Operation.DiscoverVersions, batch_id=b"d"),
                batch_item(Operation.Create, *aes_create(), batch_id=b"c"),
                version=(2, 0),
                extra=(
                    ttlv.enum(
                        Tag.BatchErrorContinuationOption, BatchErrorContinuationOption.Continue
                    ),
                ),
            )
        )
        assert response_version(resp) == (1, 4)
        discover, create = results(resp)
        assert discover.ok
        versions = [
            (ttlv.value(v, Tag.ProtocolVersionMajor), ttlv.value(v, Tag.ProtocolVersionMinor))
            for v in ttlv.find_all(discover.payload, Tag.ProtocolVersion)
        ]
        assert versions == [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]
        assert (create.status, create.reason) == (
            ResultStatus.OperationFailed,
            ResultReason.InvalidMessage,
        )
        assert uids_of(await k.ok(Operation.Locate)) == []

    serve(body)


@pytest.mark.parametrize(
    ("requested", "answered"),
    [
        ((1, 0), (1, 0)),
        ((1, 1), (1, 1)),
        ((1, 2), (1, 2)),
        ((1, 3), (1, 3)),
        ((1, 4), (1, 4)),
        ((1, 9), (1, 4)),
    ],
)
def test_response_is_in_the_request_version_6_1(
    serve: Callable[..., None], requested: tuple[int, int], answered: tuple[int, int]
) -> None:
    async def body(k: Kmip) -> None:
        resp = await k.send(message(batch_item(Operation.DiscoverVersions), version=requested))
        assert response_version(resp) == answered
        assert results(resp)[0].ok

    serve(body)


def test_get_attributes_shows_only_attributes_of_the_request_version_3(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        old = attrs_of(await k.attributes(key, version=(1, 0)))
        new = attrs_of(await k.attributes(key, version=(1, 4)))
        # Fresh is 1.1 (§3.34), Original Creation Date 1.2, Random Number Generator 1.3.
        for name in ("Fresh", "Original Creation Date", "Random Number Generator"):
            assert name not in old and name in new
        assert "Cryptographic Algorithm" in old
        listed = await k.ok(Operation.GetAttributeList, uid(key), version=(1, 0))
        names = [n[2] for n in ttlv.find_all(listed, Tag.AttributeName)]
        assert "Fresh" not in names and "State" in names

    serve(body)


# ---------------------------------------------------------------------------
# Operation Not Supported


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(0x7777, id="unknown-number"),
        pytest.param(Operation.Encrypt, id="Encrypt"),
        pytest.param(Operation.CreateKeyPair, id="CreateKeyPair"),
        pytest.param(Operation.Archive, id="Archive"),
    ],
)
def test_operation_not_offered_is_operation_not_supported_11(
    serve: Callable[..., None], op: int
) -> None:
    async def body(k: Kmip) -> None:
        r = await k.call(op, uid("whatever"))
        assert r.operation == op
        assert (r.status, r.reason) == (
            ResultStatus.OperationFailed,
            ResultReason.OperationNotSupported,
        )

    serve(body)


# ---------------------------------------------------------------------------
# Tenants


def test_uid_of_another_tenant_is_item_not_found(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create(name_attribute("shared-name"))
        for op, payload in [
            (Operation.Get, [uid(key)]),
            (Operation.GetAttributes, [uid(key)]),
            (Operation.GetAttributeList, [uid(key)]),
            (Operation.Activate, [uid(key)]),
            (Operation.Revoke, [uid(key), revocation(RevocationReasonCode.KeyCompromise)]),
            (Operation.Destroy, [uid(key)]),
            (Operation.ReKey, [uid(key)]),
            (Operation.Check, [uid(key)]),
            (Operation.AddAttribute, [uid(key), attribute("x-a", ItemType.TextString, "v")]),
            (Operation.DeleteAttribute, [uid(key), text(Tag.AttributeName, "Name")]),
        ]:
            theirs = await k.fail(ResultReason.ItemNotFound, op, *payload, session=TENANT_B)
            missing = await k.fail(
                ResultReason.ItemNotFound,
                op,
                *[uid("no-such-uid") if p == uid(key) else p for p in payload],
                session=TENANT_B,
            )
            # No existence oracle: the same answer as for a uid that never existed.
            assert theirs.message is not None and missing.message is not None
            assert theirs.message.replace(key, "X") == missing.message.replace("no-such-uid", "X")
        assert uids_of(await k.ok(Operation.Locate, session=TENANT_B)) == []
        found = await k.ok(Operation.Locate, name_attribute("shared-name"), session=TENANT_B)
        assert uids_of(found) == []
        # Untouched for its owner.
        assert await k.state(key) == State.PreActive
        assert uids_of(await k.ok(Operation.Locate, name_attribute("shared-name"))) == [key]

    serve(body)


# ---------------------------------------------------------------------------
# §3.22 / §4.19-4.21: the state machine


def test_activate_twice_is_permission_denied_4_19(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Activate, uid(key))
        assert await k.state(key) == State.Active
        await k.fail(ResultReason.PermissionDenied, Operation.Activate, uid(key))
        assert await k.state(key) == State.Active

    serve(body)


def test_destroy_of_active_is_permission_denied_4_21(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Activate, uid(key))
        await k.fail(ResultReason.PermissionDenied, Operation.Destroy, uid(key))
        assert await k.state(key) == State.Active
        assert key_material(await k.ok(Operation.Get, uid(key))) is not None

    serve(body)


def test_revoke_compromise_then_destroy_is_destroyed_compromised_4_20_4_21(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Activate, uid(key))
        await k.ok(Operation.Revoke, uid(key), revocation(RevocationReasonCode.KeyCompromise))
        attrs = attrs_of(await k.attributes(key))
        assert values_of(await k.attributes(key, "State"), "State") == [State.Compromised]
        assert "Compromise Date" in attrs and "Compromise Occurrence Date" in attrs
        # A compromised key cannot be merely deactivated (§3.22).
        await k.fail(
            ResultReason.PermissionDenied,
            Operation.Revoke,
            uid(key),
            revocation(RevocationReasonCode.CessationOfOperation),
        )
        await k.ok(Operation.Destroy, uid(key))
        assert await k.state(key) == State.DestroyedCompromised
        await k.fail(ResultReason.ItemNotFound, Operation.Get, uid(key))
        # Attributes outlive the key material.
        assert "Destroy Date" in attrs_of(await k.attributes(key))

    serve(body)


def test_revoke_then_destroy_is_destroyed_and_get_fails_4_20_4_21(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Activate, uid(key))
        await k.ok(
            Operation.Revoke, uid(key), revocation(RevocationReasonCode.CessationOfOperation)
        )
        assert await k.state(key) == State.Deactivated
        assert "Deactivation Date" in attrs_of(await k.attributes(key))
        await k.ok(Operation.Destroy, uid(key))
        assert await k.state(key) == State.Destroyed
        await k.fail(ResultReason.ItemNotFound, Operation.Get, uid(key))
        await k.fail(ResultReason.PermissionDenied, Operation.Destroy, uid(key))
        await k.fail(ResultReason.PermissionDenied, Operation.Activate, uid(key))
        await k.fail(
            ResultReason.PermissionDenied,
            Operation.Revoke,
            uid(key),
            revocation(RevocationReasonCode.KeyCompromise),
        )

    serve(body)


def test_destroy_of_pre_active_is_destroyed_4_21(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Destroy, uid(key))
        assert await k.state(key) == State.Destroyed
        await k.fail(ResultReason.ItemNotFound, Operation.Get, uid(key))

    serve(body)


def test_create_with_a_past_activation_date_is_active_3_24(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        past = await k.create(attribute("Activation Date", ItemType.DateTime, 1_000_000_000))
        assert await k.state(past) == State.Active
        future = await k.create(attribute("Activation Date", ItemType.DateTime, 2**40))
        assert await k.state(future) == State.PreActive

    serve(body)


def test_revoke_without_reason_is_invalid_field_4_20(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.fail(ResultReason.InvalidField, Operation.Revoke, uid(key))

    serve(body)


# ---------------------------------------------------------------------------
# §3 / §4.12-4.16: attribute rules


def test_add_of_single_instance_attribute_already_set_is_permission_denied_4_14(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        contact = attribute("Contact Information", ItemType.TextString, "ops@example.com")
        await k.ok(Operation.AddAttribute, uid(key), contact)
        again = attribute("Contact Information", ItemType.TextString, "other@example.com")
        await k.fail(ResultReason.PermissionDenied, Operation.AddAttribute, uid(key), again)
        # Set at Create: the usage mask.
        mask = attribute("Cryptographic Usage Mask", ItemType.Integer, 4)
        await k.fail(ResultReason.PermissionDenied, Operation.AddAttribute, uid(key), mask)
        got = await k.attributes(key, "Contact Information", "Cryptographic Usage Mask")
        assert values_of(got, "Contact Information") == ["ops@example.com"]
        assert values_of(got, "Cryptographic Usage Mask") == [12]

    serve(body)


@pytest.mark.parametrize(
    ("name", "typ", "value"),
    [
        ("State", ItemType.Enumeration, State.Active),
        ("Unique Identifier", ItemType.TextString, "mine"),
        ("Initial Date", ItemType.DateTime, 1),
        ("Object Type", ItemType.Enumeration, ObjectType.SecretData),
        ("Cryptographic Algorithm", ItemType.Enumeration, CryptographicAlgorithm.DES3),
    ],
)
def test_modify_of_a_server_attribute_is_permission_denied_4_15(
    serve: Callable[..., None], name: str, typ: int, value: Any
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        before = await k.attributes(key, name)
        await k.fail(
            ResultReason.PermissionDenied,
            Operation.ModifyAttribute,
            uid(key),
            attribute(name, typ, value),
        )
        assert await k.attributes(key, name) == before

    serve(body)


def test_delete_of_a_missing_instance_is_item_not_found_4_16(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create(attribute("x-one", ItemType.TextString, "a"))
        await k.fail(
            ResultReason.ItemNotFound,
            Operation.DeleteAttribute,
            uid(key),
            text(Tag.AttributeName, "Contact Information"),
        )
        await k.fail(
            ResultReason.ItemNotFound,
            Operation.DeleteAttribute,
            uid(key),
            text(Tag.AttributeName, "x-one"),
            ttlv.integer(Tag.AttributeIndex, 1),
        )
        await k.fail(
            ResultReason.ItemNotFound,
            Operation.ModifyAttribute,
            uid(key),
            attribute("x-one", ItemType.TextString, "b", index=5),
        )

    serve(body)


def test_custom_x_attributes_are_multi_instance_with_indexes_3_1_4_14_4_16(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        for i, v in enumerate(["a", "b", "c"]):
            r = await k.ok(
                Operation.AddAttribute, uid(key), attribute("x-tag", ItemType.TextString, v)
            )
            assert attrs_of(r) == {"x-tag": [(i, v)]}
        got = attrs_of(await k.attributes(key, "x-tag"))
        assert got == {"x-tag": [(0, "a"), (1, "b"), (2, "c")]}

        modified = await k.ok(
            Operation.ModifyAttribute,
            uid(key),
            attribute("x-tag", ItemType.TextString, "B", index=1),
        )
        assert attrs_of(modified) == {"x-tag": [(1, "B")]}
        deleted = await k.ok(
            Operation.DeleteAttribute,
            uid(key),
            text(Tag.AttributeName, "x-tag"),
            ttlv.integer(Tag.AttributeIndex, 0),
        )
        assert attrs_of(deleted) == {"x-tag": [(0, "a")]}
        assert attrs_of(await k.attributes(key, "x-tag")) == {"x-tag": [(0, "B"), (1, "c")]}

        # Any type, per instance.
        await k.ok(Operation.AddAttribute, uid(key), attribute("x-tag", ItemType.Integer, 7))
        assert values_of(await k.attributes(key, "x-tag"), "x-tag") == ["B", "c", 7]

    serve(body)


def test_get_attributes_of_a_missing_x_attribute_succeeds_without_it_4_12(
    serve: Callable[..., None],
) -> None:
    # vCenter probes its x- attributes one by one (DESIGN: vCenter 7.0.3 capture).
    async def body(k: Kmip) -> None:
        key = await k.create(attribute("x-Identifier", ItemType.TextString, "vm-1"))
        r = await k.call(
            Operation.GetAttributes, uid(key), text(Tag.AttributeName, "x-Missing"), version=(1, 1)
        )
        assert r.ok
        assert uids_of(r.payload) == [key]
        assert list(ttlv.find_all(r.payload, Tag.Attribute)) == []
        both = await k.attributes(key, "x-Missing", "x-Identifier", version=(1, 1))
        assert attrs_of(both) == {"x-Identifier": [(0, "vm-1")]}

    serve(body)


def test_attribute_of_the_wrong_type_is_invalid_field_2_1_1(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.fail(
            ResultReason.InvalidField,
            Operation.AddAttribute,
            uid(key),
            attribute("Contact Information", ItemType.Integer, 5),
        )
        await k.fail(
            ResultReason.InvalidField,
            Operation.AddAttribute,
            uid(key),
            attribute("Not A KMIP Attribute", ItemType.TextString, "v"),
        )

    serve(body)


# ---------------------------------------------------------------------------
# §4.9 Locate


def _located_items(payload: Item | None) -> int | None:
    return ttlv.value(payload, Tag.LocatedItems)


def _object_type_attr(t: int) -> Item:
    return attribute("Object Type", ItemType.Enumeration, t)


def _state_attr(s: int) -> Item:
    return attribute("State", ItemType.Enumeration, s)


def test_locate_filters_4_9(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        k1 = await k.create(
            name_attribute("alpha"), attribute("x-team", ItemType.TextString, "red")
        )
        k2 = await k.create(
            name_attribute("beta"), attribute("x-team", ItemType.TextString, "blue")
        )
        k3 = await k.create(
            name_attribute("gamma"), attribute("x-team", ItemType.TextString, "red")
        )
        secret = ttlv.value(
            await k.ok(Operation.Register, *_secret(b"hunter2")), Tag.UniqueIdentifier
        )
        await k.ok(Operation.Activate, uid(k2))

        async def locate(*filters: Item) -> list[str]:
            return uids_of(await k.ok(Operation.Locate, *filters))

        # Newest first.
        assert await locate() == [secret, k3, k2, k1]
        assert await locate(name_attribute("beta")) == [k2]
        assert await locate(name_attribute("nobody")) == []
        assert await locate(_object_type_attr(ObjectType.SymmetricKey)) == [k3, k2, k1]
        assert await locate(_object_type_attr(ObjectType.SecretData)) == [secret]
        assert await locate(_state_attr(State.Active)) == [k2]
        assert await locate(_state_attr(State.PreActive)) == [secret, k3, k1]
        red = attribute("x-team", ItemType.TextString, "red")
        assert await locate(red) == [k3, k1]
        assert await locate(red, name_attribute("alpha")) == [k1]
        assert await locate(red, _state_attr(State.Active)) == []
        aes = attribute("Cryptographic Algorithm", ItemType.Enumeration, CryptographicAlgorithm.AES)
        assert await locate(aes, _object_type_attr(ObjectType.SymmetricKey)) == [k3, k2, k1]

    serve(body)


def test_locate_maximum_and_offset_items_4_9(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        keys = [await k.create() for _ in range(5)]
        newest_first = keys[::-1]
        max2 = ttlv.integer(Tag.MaximumItems, 2)
        assert uids_of(await k.ok(Operation.Locate, max2)) == newest_first[:2]
        off = ttlv.integer(Tag.OffsetItems, 3)
        assert uids_of(await k.ok(Operation.Locate, max2, off)) == newest_first[3:5]
        assert uids_of(await k.ok(Operation.Locate, off)) == newest_first[3:]
        big = ttlv.integer(Tag.OffsetItems, 10)
        assert uids_of(await k.ok(Operation.Locate, big)) == []
        zero = ttlv.integer(Tag.MaximumItems, 0)
        assert uids_of(await k.ok(Operation.Locate, zero)) == []

    serve(body)


@pytest.mark.parametrize(
    ("version", "has_count"), [((1, 0), False), ((1, 2), False), ((1, 3), True), ((1, 4), True)]
)
def test_locate_located_items_only_in_1_3_and_later_4_9(
    serve: Callable[..., None], version: tuple[int, int], has_count: bool
) -> None:
    async def body(k: Kmip) -> None:
        for _ in range(3):
            await k.create()
        found = await k.ok(Operation.Locate, ttlv.integer(Tag.MaximumItems, 1), version=version)
        assert len(uids_of(found)) == 1
        assert _located_items(found) == (3 if has_count else None)

    serve(body)


def test_locate_does_not_find_destroyed_objects_4_9(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        gone = await k.create(name_attribute("doomed"))
        kept = await k.create(name_attribute("kept"))
        await k.ok(Operation.Destroy, uid(gone))
        assert uids_of(await k.ok(Operation.Locate)) == [kept]
        assert uids_of(await k.ok(Operation.Locate, name_attribute("doomed"))) == []

    serve(body)


# ---------------------------------------------------------------------------
# §4.11 Get and §4.3 Register round trips


def test_get_raw_and_transparent_symmetric_key_give_the_same_key_4_11(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()

        async def material(fmt: int | None) -> Item:
            extra = None if fmt is None else ttlv.enum(Tag.KeyFormatType, fmt)
            payload = await k.ok(Operation.Get, uid(key), extra)
            block = ttlv.find(ttlv.find(payload, Tag.SymmetricKey), Tag.KeyBlock)
            assert ttlv.value(block, Tag.KeyFormatType) == (fmt or KeyFormatType.Raw)
            assert ttlv.value(block, Tag.CryptographicAlgorithm) == CryptographicAlgorithm.AES
            assert ttlv.value(block, Tag.CryptographicLength) == 256
            found = key_material(payload)
            assert found is not None
            return found

        raw = await material(KeyFormatType.Raw)
        default = await material(None)
        transparent = await material(KeyFormatType.TransparentSymmetricKey)
        assert raw[1] == ttlv.BYTE_STRING and len(raw[2]) == 32
        assert default == raw
        assert transparent[1] == ttlv.STRUCTURE
        assert ttlv.value(transparent, Tag.Key) == raw[2]
        await k.fail(
            ResultReason.KeyFormatTypeNotSupported,
            Operation.Get,
            uid(key),
            ttlv.enum(Tag.KeyFormatType, KeyFormatType.PKCS_8),
        )

    serve(body)


def _key_block(fmt: int, material: Item, *extra: Item) -> Item:
    return ttlv.struct(
        Tag.KeyBlock,
        ttlv.enum(Tag.KeyFormatType, fmt),
        ttlv.struct(Tag.KeyValue, material),
        *extra,
    )


def _secret(data: bytes) -> list[Item]:
    return [
        ttlv.enum(Tag.ObjectType, ObjectType.SecretData),
        template(attribute("Cryptographic Usage Mask", ItemType.Integer, 0)),
        ttlv.struct(
            Tag.SecretData,
            ttlv.enum(Tag.SecretDataType, SecretDataType.Password),
            _key_block(KeyFormatType.Opaque, ttlv.byte_string(Tag.KeyMaterial, data)),
        ),
    ]


def _opaque(data: bytes) -> list[Item]:
    return [
        ttlv.enum(Tag.ObjectType, ObjectType.OpaqueObject),
        template(),
        ttlv.struct(
            Tag.OpaqueObject,
            ttlv.enum(Tag.OpaqueDataType, 0x80000001),
            ttlv.byte_string(Tag.OpaqueDataValue, data),
        ),
    ]


def test_register_then_get_secret_data_4_3_4_11(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        payload = await k.ok(Operation.Register, *_secret(b"correct horse battery staple"))
        key = ttlv.value(payload, Tag.UniqueIdentifier)
        got = await k.ok(Operation.Get, uid(key))
        assert ttlv.value(got, Tag.ObjectType) == ObjectType.SecretData
        assert uids_of(got) == [key]
        secret = ttlv.find(got, Tag.SecretData)
        assert ttlv.value(secret, Tag.SecretDataType) == SecretDataType.Password
        block = ttlv.find(secret, Tag.KeyBlock)
        assert ttlv.value(block, Tag.KeyFormatType) == KeyFormatType.Opaque
        assert key_material(got) == ttlv.byte_string(
            Tag.KeyMaterial, b"correct horse battery staple"
        )

    serve(body)


def test_register_then_get_opaque_object_4_3_4_11(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        data = bytes(range(256)) * 3
        request = _opaque(data)
        key = ttlv.value(await k.ok(Operation.Register, *request), Tag.UniqueIdentifier)
        got = await k.ok(Operation.Get, uid(key))
        assert ttlv.value(got, Tag.ObjectType) == ObjectType.OpaqueObject
        assert ttlv.find(got, Tag.OpaqueObject) == request[2]

    serve(body)


def test_register_then_get_certificate_4_3_4_11(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        ca_cert, ca_key = pki.create_ca("test CA")
        cert, _ = pki.issue_client_cert(ca_cert, ca_key, "client-x")
        der = cert.public_bytes(Encoding.DER)
        obj = ttlv.struct(
            Tag.Certificate,
            ttlv.enum(Tag.CertificateType, CertificateType.X_509),
            ttlv.byte_string(Tag.CertificateValue, der),
        )
        key = ttlv.value(
            await k.ok(
                Operation.Register,
                ttlv.enum(Tag.ObjectType, ObjectType.Certificate),
                template(),
                obj,
            ),
            Tag.UniqueIdentifier,
        )
        got = await k.ok(Operation.Get, uid(key))
        assert ttlv.value(got, Tag.ObjectType) == ObjectType.Certificate
        assert ttlv.find(got, Tag.Certificate) == obj
        assert uids_of(await k.ok(Operation.Locate, _object_type_attr(ObjectType.Certificate))) == [
            key
        ]

    serve(body)


def test_register_then_get_symmetric_key_in_both_formats_4_3_4_11(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        material = bytes(range(16))
        obj = ttlv.struct(
            Tag.SymmetricKey,
            _key_block(
                KeyFormatType.Raw,
                ttlv.byte_string(Tag.KeyMaterial, material),
                ttlv.enum(Tag.CryptographicAlgorithm, CryptographicAlgorithm.AES),
                ttlv.integer(Tag.CryptographicLength, 128),
            ),
        )
        key = ttlv.value(
            await k.ok(
                Operation.Register,
                ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
                template(attribute("Cryptographic Usage Mask", ItemType.Integer, 12)),
                obj,
            ),
            Tag.UniqueIdentifier,
        )
        raw = await k.ok(Operation.Get, uid(key))
        assert key_material(raw) == ttlv.byte_string(Tag.KeyMaterial, material)
        tsk = await k.ok(
            Operation.Get,
            uid(key),
            ttlv.enum(Tag.KeyFormatType, KeyFormatType.TransparentSymmetricKey),
        )
        assert ttlv.value(key_material(tsk), Tag.Key) == material
        got = await k.attributes(key, "Cryptographic Length", "Cryptographic Algorithm")
        assert values_of(got, "Cryptographic Length") == [128]

    serve(body)


# ---------------------------------------------------------------------------
# §4.4 Re-key


def test_rekey_links_replacement_and_replaced_4_4(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        old = await k.create(
            name_attribute("rotating"), attribute("x-team", ItemType.TextString, "red")
        )
        await k.ok(Operation.Activate, uid(old))
        new = ttlv.value(await k.ok(Operation.ReKey, uid(old)), Tag.UniqueIdentifier)
        assert new != old

        def links(payload: Item | None) -> list[tuple[int, str]]:
            out = []
            for fields in values_of(payload, "Link"):
                link = ttlv.struct_of(Tag.Link, fields)
                out.append(
                    (ttlv.value(link, Tag.LinkType), ttlv.value(link, Tag.LinkedObjectIdentifier))
                )
            return out

        assert links(await k.attributes(old, "Link")) == [(LinkType.ReplacementObjectLink, new)]
        assert links(await k.attributes(new, "Link")) == [(LinkType.ReplacedObjectLink, old)]
        new_attrs = attrs_of(await k.attributes(new))
        assert [v for _, v in new_attrs["x-team"]] == ["red"]
        assert [v for _, v in new_attrs["Cryptographic Length"]] == [256]
        assert [v for _, v in new_attrs["State"]] == [State.Active]
        # The Name moves to the replacement.
        assert uids_of(await k.ok(Operation.Locate, name_attribute("rotating"))) == [new]
        old_key = key_material(await k.ok(Operation.Get, uid(old)))
        new_key = key_material(await k.ok(Operation.Get, uid(new)))
        assert old_key is not None and new_key is not None and old_key != new_key

    serve(body)


def test_rekey_via_id_placeholder_4_4_6_6(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        resp = await k.send(
            message(
                batch_item(Operation.Create, *aes_create(), batch_id=b"1"),
                batch_item(Operation.ReKey, batch_id=b"2"),
                batch_item(Operation.GetAttributes, text(Tag.AttributeName, "Link"), batch_id=b"3"),
            )
        )
        create, rekey, attrs = results(resp)
        assert create.ok and rekey.ok and attrs.ok
        old = ttlv.value(create.payload, Tag.UniqueIdentifier)
        new = ttlv.value(rekey.payload, Tag.UniqueIdentifier)
        # The placeholder now names the replacement.
        assert uids_of(attrs.payload) == [new]
        [link] = values_of(attrs.payload, "Link")
        assert ttlv.value((0, ttlv.STRUCTURE, link), Tag.LinkedObjectIdentifier) == old

    serve(body)


def test_rekey_of_compromised_key_is_permission_denied_4_4(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        key = await k.create()
        await k.ok(Operation.Revoke, uid(key), revocation(RevocationReasonCode.KeyCompromise))
        await k.fail(ResultReason.PermissionDenied, Operation.ReKey, uid(key))

    serve(body)


# ---------------------------------------------------------------------------
# Robustness: fields of the wrong item type


def test_unique_batch_item_id_of_the_wrong_type_gets_an_answer_6_4_7_2(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        item = ttlv.struct(
            Tag.BatchItem,
            ttlv.enum(Tag.Operation, Operation.DiscoverVersions),
            ttlv.integer(Tag.UniqueBatchItemID, 5),
            ttlv.struct(Tag.RequestPayload),
        )
        resp = await k.send(ttlv.struct(Tag.RequestMessage, header(1), item))
        [r] = results(resp)
        assert r.reason == ResultReason.InvalidMessage

    serve(body)


def test_maximum_response_size_of_the_wrong_type_gets_an_answer_6_3_7_2(
    serve: Callable[..., None],
) -> None:
    async def body(k: Kmip) -> None:
        tree = message(
            batch_item(Operation.DiscoverVersions),
            extra=(ttlv.text(Tag.MaximumResponseSize, "4096"),),
        )
        [r] = results(await k.send(tree))
        assert r.reason == ResultReason.InvalidMessage

    serve(body)


_WRONG_TYPES: list[Any] = [
    pytest.param(
        Operation.Locate,
        [ttlv.text(Tag.MaximumItems, "3")],
        id="Locate-MaximumItems-text",
    ),
    pytest.param(
        Operation.Locate,
        [ttlv.text(Tag.OffsetItems, "3")],
        id="Locate-OffsetItems-text",
    ),
    pytest.param(
        Operation.DeleteAttribute,
        [text(Tag.AttributeName, "x-a"), ttlv.text(Tag.AttributeIndex, "0")],
        id="DeleteAttribute-AttributeIndex-text",
    ),
    pytest.param(
        Operation.Get,
        [ttlv.text(Tag.KeyFormatType, "Raw")],
        id="Get-KeyFormatType-text",
    ),
    pytest.param(
        Operation.ReKey,
        [ttlv.text(Tag.Offset, "60")],
        id="ReKey-Offset-text",
    ),
    pytest.param(
        Operation.Check,
        [ttlv.text(Tag.CryptographicUsageMask, "12")],
        id="Check-UsageMask-text",
    ),
    pytest.param(
        Operation.GetAttributes,
        [ttlv.integer(Tag.AttributeName, 3)],
        id="GetAttributes-AttributeName-integer",
    ),
    pytest.param(
        Operation.Revoke,
        [ttlv.text(Tag.RevocationReason, "compromise")],
        id="Revoke-RevocationReason-text",
    ),
]


@pytest.mark.parametrize(("op", "fields"), _WRONG_TYPES)
def test_field_of_the_wrong_item_type_is_invalid_field_not_general_failure_11(
    serve: Callable[..., None], op: int, fields: list[Item]
) -> None:
    """§11 error handling: a field of the wrong type is the client's mistake (Invalid
    Field or Invalid Message), never a General Failure that hides it."""

    async def body(k: Kmip) -> None:
        key = await k.create(attribute("x-a", ItemType.TextString, "v"))
        r = await k.call(op, uid(key), *fields)
        assert r.reason != ResultReason.GeneralFailure, str(r)
        assert (r.status, r.reason) in {
            (ResultStatus.OperationFailed, ResultReason.InvalidField),
            (ResultStatus.OperationFailed, ResultReason.InvalidMessage),
        } or r.ok, str(r)

    serve(body)


# ---------------------------------------------------------------------------
# Robustness: well-formed trees with the wrong contents (hypothesis)

_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)

# Tags handlers read, so wrong contents reach real code paths; plus any tag at all.
_INTERESTING_TAGS = [
    Tag.UniqueIdentifier,
    Tag.ObjectType,
    Tag.TemplateAttribute,
    Tag.Attribute,
    Tag.AttributeName,
    Tag.AttributeIndex,
    Tag.AttributeValue,
    Tag.Name,
    Tag.NameValue,
    Tag.NameType,
    Tag.KeyFormatType,
    Tag.KeyCompressionType,
    Tag.KeyWrappingSpecification,
    Tag.MaximumItems,
    Tag.OffsetItems,
    Tag.StorageStatusMask,
    Tag.RevocationReason,
    Tag.RevocationReasonCode,
    Tag.CompromiseOccurrenceDate,
    Tag.Offset,
    Tag.QueryFunction,
    Tag.ProtocolVersion,
    Tag.ProtocolVersionMajor,
    Tag.ProtocolVersionMinor,
    Tag.CryptographicUsageMask,
    Tag.SymmetricKey,
    Tag.SecretData,
    Tag.SecretDataType,
    Tag.OpaqueObject,
    Tag.OpaqueDataType,
    Tag.OpaqueDataValue,
    Tag.Certificate,
    Tag.CertificateType,
    Tag.CertificateValue,
    Tag.Template,
    Tag.KeyBlock,
    Tag.KeyValue,
    Tag.KeyMaterial,
    Tag.Key,
    Tag.KeyWrappingData,
    Tag.CryptographicAlgorithm,
    Tag.CryptographicLength,
]
_TAGS = st.one_of(st.sampled_from(_INTERESTING_TAGS), st.sampled_from(list(Tag)))
_ATTRIBUTE_NAMES = st.one_of(
    st.sampled_from(sorted(RULES)),
    st.sampled_from(["x-a", "x-", "y-server", "X-Upper", ""]),
    st.text(max_size=12),
)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    ttlv.INTEGER: _INT32,
    ttlv.LONG_INTEGER: _INT64,
    ttlv.BIG_INTEGER: st.integers(-(2**130), 2**130),
    ttlv.ENUMERATION: st.one_of(st.integers(0, 40), _UINT32),
    ttlv.BOOLEAN: st.booleans(),
    ttlv.TEXT_STRING: st.text(max_size=20),
    ttlv.BYTE_STRING: st.binary(max_size=40),
    ttlv.DATE_TIME: st.integers(-(2**40), 2**40),
    ttlv.INTERVAL: _UINT32,
    ttlv.DATE_TIME_EXTENDED: st.integers(-(2**50), 2**50),
}


def _scalar() -> st.SearchStrategy[Item]:
    return st.sampled_from(sorted(_SCALARS)).flatmap(
        lambda typ: st.tuples(_TAGS.map(int), st.just(typ), _SCALARS[typ])
    )


def _attribute_like(children: st.SearchStrategy[list[Item]]) -> st.SearchStrategy[Item]:
    return st.tuples(_ATTRIBUTE_NAMES, st.lists(_scalar(), max_size=2), children).map(
        lambda t: (
            int(Tag.Attribute),
            ttlv.STRUCTURE,
            [text(Tag.AttributeName, t[0]), *t[1], *t[2]],
        )
    )


def _trees() -> st.SearchStrategy[Item]:
    def extend(children: st.SearchStrategy[Item]) -> st.SearchStrategy[Item]:
        kids = st.lists(children, max_size=4)
        return st.one_of(
            st.tuples(_TAGS.map(int), st.just(ttlv.STRUCTURE), kids),
            _attribute_like(kids),
        )

    return st.recursive(_scalar(), extend, max_leaves=12)


_OPERATIONS = st.one_of(
    st.sampled_from(sorted(DISPATCH)), st.sampled_from(list(Operation)), _UINT32
)


@st.composite
def _fuzz_items(draw: st.DrawFn) -> list[tuple[int, list[Item], bool]]:
    """(operation, payload children, whether to lead with a real uid) per batch item."""
    return draw(
        st.lists(
            st.tuples(_OPERATIONS, st.lists(_trees(), max_size=5), st.booleans()),
            min_size=1,
            max_size=4,
        )
    )


def test_wrong_payload_trees_always_get_a_well_formed_response_7_2(tmp_path: Path) -> None:
    """Whatever well-formed tree sits in a payload, ``handle`` answers a Response Message
    (§7.2) with one Result Status per batch item; nothing escapes it."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        k: Kmip = loop.run_until_complete(stack.enter_async_context(open_kmip(tmp_path / "data")))
        keys = [
            loop.run_until_complete(k.create()),
            ttlv.value(
                loop.run_until_complete(k.ok(Operation.Register, *_secret(b"s3cret"))),
                Tag.UniqueIdentifier,
            ),
        ]
        continue_option = ttlv.enum(
            Tag.BatchErrorContinuationOption, BatchErrorContinuationOption.Continue
        )

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            items=_fuzz_items(),
            which=st.integers(0, 1),
            version=st.sampled_from([(1, 0), (1, 1), (1, 4)]),
        )
        def check(
            items: list[tuple[int, list[Item], bool]], which: int, version: tuple[int, int]
        ) -> None:
            built = [
                batch_item(op, *([uid(keys[which])] if lead else []), *payload, batch_id=bytes([i]))
                for i, (op, payload, lead) in enumerate(items)
            ]
            tree = message(*built, version=version, extra=(continue_option,))
            try:
                data = _native.encode(tree)
            except _native.TtlvEncodeError:
                return  # not well-formed after all (a field too large); not this test's business
            resp = _native.decode(loop.run_until_complete(k.raw(data)))
            assert_well_formed(resp)
            assert response_version(resp) == version
            got = results(resp)
            assert [r.batch_id for r in got] == [bytes([i]) for i in range(len(items))]

        check()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
