"""Request and Response Messages (KMIP 1.4 §7): tree <-> typed.

A request is checked for the structure every 1.x version shares; the payload of each
batch item stays a tree for its handler.  A response carries only the fields of the
request's protocol version (PyKMIP and vCenter reject what they don't expect).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import BatchErrorContinuationOption, ResultReason, ResultStatus
from kmipfast.protocol.errors import KmipError
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item

SUPPORTED_VERSIONS: tuple[tuple[int, int], ...] = ((1, 4), (1, 3), (1, 2), (1, 1), (1, 0))
NEWEST = SUPPORTED_VERSIONS[0]

T_REQUEST_MESSAGE = int(Tag.RequestMessage)
T_REQUEST_HEADER = int(Tag.RequestHeader)
T_PROTOCOL_VERSION = int(Tag.ProtocolVersion)
T_MAJOR = int(Tag.ProtocolVersionMajor)
T_MINOR = int(Tag.ProtocolVersionMinor)
T_BATCH_COUNT = int(Tag.BatchCount)
T_BATCH_ITEM = int(Tag.BatchItem)
T_OPERATION = int(Tag.Operation)
T_BATCH_ID = int(Tag.UniqueBatchItemID)
T_REQUEST_PAYLOAD = int(Tag.RequestPayload)
T_RESPONSE_PAYLOAD = int(Tag.ResponsePayload)
T_EXTENSION = int(Tag.MessageExtension)


@dataclass(slots=True)
class RequestHeader:
    version: tuple[int, int]
    batch_count: int
    max_response_size: int | None = None
    async_indicator: bool = False
    batch_order: bool = True
    error_option: int = BatchErrorContinuationOption.Stop


@dataclass(slots=True)
class RequestItem:
    operation: int
    batch_id: bytes | None
    payload: Item | None
    extension: Item | None


@dataclass(slots=True)
class ResponseItem:
    operation: int | None
    batch_id: bytes | None
    status: int = ResultStatus.Success
    reason: int | None = None
    message: str | None = None
    payload: Item | None = None
    extension: Item | None = None


@dataclass(slots=True)
class Request:
    header: RequestHeader
    items: list[RequestItem] = field(default_factory=list)


def _invalid(message: str) -> KmipError:
    return KmipError(ResultReason.InvalidMessage, message)


def read_version(tree: Item) -> tuple[int, int] | None:
    """The request's protocol version, if its header gets that far."""
    header = ttlv.find(tree, T_REQUEST_HEADER)
    pv = ttlv.find(header, T_PROTOCOL_VERSION)
    major, minor = ttlv.value(pv, T_MAJOR), ttlv.value(pv, T_MINOR)
    if isinstance(major, int) and isinstance(minor, int):
        return (major, minor)
    return None


def answer_version(requested: tuple[int, int] | None) -> tuple[int, int]:
    """The version a response is written in: the request's when we speak it, else the
    newest we speak that is older than it, else our oldest."""
    if requested is None:
        return NEWEST
    for v in SUPPORTED_VERSIONS:
        if v <= requested:
            return v
    return SUPPORTED_VERSIONS[-1]


def parse_request(tree: Item) -> Request:
    """Checks the message shape shared by KMIP 1.0–1.4 (§7.1, §6) and splits batch items."""
    if tree[0] != T_REQUEST_MESSAGE or tree[1] != ttlv.STRUCTURE:
        raise _invalid("the message is not a Request Message structure")
    header_item = ttlv.find(tree, T_REQUEST_HEADER)
    if header_item is None:
        raise _invalid("Request Header is missing")
    version = read_version(tree)
    if version is None:
        raise _invalid("Protocol Version is missing or malformed")
    count_item = ttlv.find(header_item, T_BATCH_COUNT)
    if count_item is None or count_item[1] != ttlv.INTEGER:
        raise _invalid("Batch Count is missing")
    count = count_item[2]
    header = RequestHeader(version=version, batch_count=count)
    for child in ttlv.children(header_item):
        setter = _HEADER_FIELDS.get(child[0])
        if setter is not None:
            setter(header, child)
    items: list[RequestItem] = []
    for child in ttlv.children(tree):
        if child[0] != T_BATCH_ITEM:
            continue
        op_item = ttlv.find(child, T_OPERATION)
        if op_item is None or op_item[1] != ttlv.ENUMERATION:
            raise _invalid("a Batch Item has no Operation enumeration")
        batch_id = ttlv.find(child, T_BATCH_ID)
        if batch_id is not None:
            _checked(batch_id, ttlv.BYTE_STRING)
        items.append(
            RequestItem(
                operation=op_item[2],
                batch_id=None if batch_id is None else batch_id[2],
                payload=ttlv.find(child, T_REQUEST_PAYLOAD),
                extension=ttlv.find(child, T_EXTENSION),
            )
        )
    if count != len(items):
        raise _invalid(f"Batch Count is {count} but the message has {len(items)} Batch Items")
    if not items:
        raise _invalid("the message has no Batch Item")
    if len(items) > 1 and any(i.batch_id is None for i in items):
        raise _invalid("Unique Batch Item ID is required when a batch has several items")
    return Request(header=header, items=items)


def single_item(tree: Item) -> tuple[tuple[int, int], int, bytes | None, Item] | None:
    """``(version, operation, batch id, payload)`` of a request in the shape most
    clients send (a header of Protocol Version and Batch Count 1; one Batch Item of
    Operation, an optional Unique Batch Item ID and a Request Payload), read without
    building a :class:`Request`.  None for any other shape: :func:`parse_request`
    then checks it and says what is wrong."""
    if tree[0] != T_REQUEST_MESSAGE or tree[1] != ttlv.STRUCTURE or len(tree[2]) != 2:
        return None
    header, item = tree[2]
    if header[0] != T_REQUEST_HEADER or item[0] != T_BATCH_ITEM or item[1] != ttlv.STRUCTURE:
        return None
    if header[1] != ttlv.STRUCTURE or len(header[2]) != 2 or header[2][1] != _ONE_ITEM:
        return None
    pv = header[2][0]
    if pv[0] != T_PROTOCOL_VERSION or pv[1] != ttlv.STRUCTURE or len(pv[2]) != 2:
        return None
    major, minor = pv[2]
    if major[0] != T_MAJOR or major[1] != ttlv.INTEGER:
        return None
    if minor[0] != T_MINOR or minor[1] != ttlv.INTEGER:
        return None
    fields = item[2]
    batch_id = None
    if len(fields) == 3:
        op, found, payload = fields
        if found[0] != T_BATCH_ID or found[1] != ttlv.BYTE_STRING:
            return None
        batch_id = found[2]
    elif len(fields) == 2:
        op, payload = fields
    else:
        return None
    if op[0] != T_OPERATION or op[1] != ttlv.ENUMERATION:
        return None
    if payload[0] != T_REQUEST_PAYLOAD or payload[1] != ttlv.STRUCTURE:
        return None
    return (major[2], minor[2]), op[2], batch_id, payload


_ONE_ITEM = (T_BATCH_COUNT, ttlv.INTEGER, 1)


def _checked(item: Item, typ: int) -> None:
    if item[1] != typ:
        raise _invalid(f"{ttlv.tag_name(item[0])} has the wrong item type")


def _set_max_response(h: RequestHeader, item: Item) -> None:
    _checked(item, ttlv.INTEGER)
    if item[2] <= 0:
        raise _invalid("Maximum Response Size must be positive")
    h.max_response_size = item[2]


def _set_async(h: RequestHeader, item: Item) -> None:
    _checked(item, ttlv.BOOLEAN)
    h.async_indicator = bool(item[2])


def _set_order(h: RequestHeader, item: Item) -> None:
    _checked(item, ttlv.BOOLEAN)
    h.batch_order = bool(item[2])


def _set_error_option(h: RequestHeader, item: Item) -> None:
    _checked(item, ttlv.ENUMERATION)
    h.error_option = item[2]


# Header fields we act on; Authentication, Attestation, Client Correlation Value and
# the like are accepted and ignored (identity is the TLS client certificate).
_HEADER_FIELDS = {
    int(Tag.MaximumResponseSize): _set_max_response,
    int(Tag.AsynchronousIndicator): _set_async,
    int(Tag.BatchOrderOption): _set_order,
    int(Tag.BatchErrorContinuationOption): _set_error_option,
}


def build_response(version: tuple[int, int], now: int, items: list[ResponseItem]) -> Item:
    """A Response Message in ``version`` (§7.2)."""
    key = (version, now, len(items))
    header = _HEADERS.get(key)
    if header is None:
        if len(_HEADERS) >= 64:
            _HEADERS.clear()
        header = _HEADERS[key] = ttlv.struct(
            Tag.ResponseHeader,
            ttlv.struct(
                Tag.ProtocolVersion,
                ttlv.integer(T_MAJOR, version[0]),
                ttlv.integer(T_MINOR, version[1]),
            ),
            ttlv.date_time(Tag.TimeStamp, now),
            ttlv.integer(T_BATCH_COUNT, len(items)),
        )
    return ttlv.struct_of(Tag.ResponseMessage, [header, *(_batch_item(i) for i in items)])


# Response headers of the current second, shared by the responses that use them (trees
# are never changed once built).
_HEADERS: dict[tuple[tuple[int, int], int, int], Item] = {}


def _batch_item(item: ResponseItem) -> Item:
    return ttlv.struct(
        T_BATCH_ITEM,
        None if item.operation is None else ttlv.enum(T_OPERATION, item.operation),
        None if item.batch_id is None else ttlv.byte_string(T_BATCH_ID, item.batch_id),
        ttlv.enum(Tag.ResultStatus, item.status),
        None if item.reason is None else ttlv.enum(Tag.ResultReason, item.reason),
        None if item.message is None else ttlv.text(Tag.ResultMessage, item.message),
        item.payload,
        item.extension,
    )


def failure(item: RequestItem | None, reason: int, message: str) -> ResponseItem:
    return ResponseItem(
        operation=None if item is None else item.operation,
        batch_id=None if item is None else item.batch_id,
        status=ResultStatus.OperationFailed,
        reason=reason,
        message=message,
    )
