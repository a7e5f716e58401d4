"""The batch loop: request bytes in, response bytes out (sans-IO).

Theory of operation: a message is decoded once by the native codec, its header is
checked, and each batch item is dispatched through the operation table with a fresh
:class:`Context` (client, tenant, protocol version, ID Placeholder travel there, never
on a shared object).  Failures become failed batch items in one place,
:func:`outcome_of`; the Batch Error Continuation Option, the ID Placeholder and the
Maximum Response Size are applied here, so handlers never see them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmipfast import _native, metrics
from kmipfast.errors import InvalidUnwrap, TtlvError
from kmipfast.protocol import messages, ttlv
from kmipfast.protocol.enums import (
    BatchErrorContinuationOption,
    Operation,
    ResultReason,
    ResultStatus,
)
from kmipfast.protocol.errors import KmipError
from kmipfast.protocol.messages import RequestItem, ResponseItem
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.store.base import StoreConflict, StoreError

if TYPE_CHECKING:
    from kmipfast.services import Services

log = logging.getLogger("kmipfast.protocol")

T_UNIQUE_IDENTIFIER = int(Tag.UniqueIdentifier)
T_CRITICALITY = int(Tag.CriticalityIndicator)


@dataclass(slots=True)
class Session:
    """Who is on the other end of a connection, decided once at the handshake."""

    client: str
    tenant: str
    fingerprint: str
    peer: str = ""
    # The client's role and the operations it allows (None: all), see kmipfast.auth.ROLES.
    role: str = "full"
    allowed: frozenset[int] | None = None
    # client, tenant and peer as audit line fields, made on the first audit line
    audit_who: str = ""


@dataclass(slots=True)
class Context:
    """Per batch item state handed to a handler."""

    session: Session
    services: Services
    version: tuple[int, int]
    now: int
    operation: int
    placeholder: str | None = None
    # Set by a handler to the uid it acted on, for the audit line and the placeholder.
    uid: str | None = None

    @property
    def tenant(self) -> str:
        return self.session.tenant

    def uid_from(self, payload: Item | None) -> str:
        """The Unique Identifier of the request, or the ID Placeholder (§6.6 of 1.4)."""
        uid = ttlv.typed(payload, T_UNIQUE_IDENTIFIER, ttlv.TEXT_STRING)
        if uid is not None:
            return str(uid)
        if self.placeholder is not None:
            return self.placeholder
        raise KmipError(
            ResultReason.InvalidField,
            "Unique Identifier is missing and no ID Placeholder is set",
        )


Handler = Callable[[Context, Item | None], Awaitable[Item]]
# An answer given without waiting, or None to take the Handler: (uid acted on, payload).
QuickHandler = Callable[[Session, "Services", Item], tuple[str, Item] | None]


def outcome_of(exc: BaseException, item: RequestItem | None) -> ResponseItem:
    """The single mapping from an exception to a failed batch item."""
    if isinstance(exc, KmipError):
        return messages.failure(item, exc.reason, exc.message)
    if isinstance(exc, StoreError) and not isinstance(exc, StoreConflict):
        # The database is away (restart, failover): an operational state, not a bug.
        log.warning("store unavailable: %s", exc)
        return messages.failure(item, ResultReason.GeneralFailure, "key store unavailable")
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: unexpected error", incident, exc_info=exc)
    return messages.failure(
        item, ResultReason.GeneralFailure, f"internal error, incident {incident}"
    )


def _opened(result: ResponseItem) -> ResponseItem:
    """``result``, or a Cryptographic Failure if its payload holds a sealed key that does
    not open (a blob moved to another row or tenant, or a master key wiped by a shred)."""
    if result.payload is None:
        return result
    try:
        _native.encode(result.payload)
    except InvalidUnwrap as e:
        return messages.failure(
            RequestItem(result.operation or 0, result.batch_id, None, None),
            ResultReason.CryptographicFailure,
            f"the key material cannot be opened ({e}): it was not sealed for this object "
            "and tenant, it was altered, or the tenant's master key is gone",
        )
    return result


def _failed(results: list[ResponseItem], reason: int, message: str) -> list[ResponseItem]:
    """The batch with every successful item turned into a failure (payload dropped)."""
    return [
        messages.failure(RequestItem(r.operation or 0, r.batch_id, None, None), reason, message)
        if r.status == ResultStatus.Success
        else r
        for r in results
    ]


def sniff_version(data: bytes) -> tuple[int, int] | None:
    """Protocol version of a message that failed to decode, read at the fixed offsets
    every real client uses, so the error answer is in a version it can parse."""
    if len(data) < 56 or data[24:28] != b"\x42\x00\x6a\x02" or data[40:44] != b"\x42\x00\x6b\x02":
        return None
    return (int.from_bytes(data[32:36], "big"), int.from_bytes(data[48:52], "big"))


class Processor:
    """Turns one request message into one response message."""

    def __init__(
        self,
        services: Services,
        dispatch: Mapping[int, Handler],
        *,
        max_message_size: int,
        max_batch_items: int,
        max_response_size: int,
        quick: Mapping[int, QuickHandler] | None = None,
    ) -> None:
        self.services = services
        self.dispatch = dispatch
        self.quick = quick or {}
        self.max_message_size = max_message_size
        self.max_batch_items = max_batch_items
        self.max_response_size = max_response_size

    async def handle(self, session: Session, data: bytes) -> bytes:
        try:
            tree = _native.decode(data, max_message_size=self.max_message_size)
        except TtlvError as e:
            return self.malformed(e, data)
        return await self.handle_tree(session, tree)

    def answer_now(self, session: Session, tree: Item) -> bytes | None:
        """The response to a one-item request that a quick handler answers without
        waiting (a Get of a key held here), with the same checks, audit record and
        metrics as :meth:`handle_tree`; None when the request must take that path,
        which gives every answer, errors included.  The server tries this only when
        nothing else of the session is queued, so answers stay in order."""
        shape = messages.single_item(tree)
        if shape is None:
            return None
        requested, operation, batch_id, payload = shape
        quick = self.quick.get(operation)
        if quick is None or requested[0] != 1:
            return None
        allowed = session.allowed
        if allowed is not None and operation not in allowed:
            return None
        started = metrics.clock()
        answer = quick(session, self.services, payload)
        if answer is None:
            return None
        uid, out = answer
        result = ResponseItem(operation=operation, batch_id=batch_id, payload=out)
        try:
            encoded = self._encode(messages.answer_version(requested), int(time.time()), [result])
        except InvalidUnwrap:
            return None  # the ordinary path answers Cryptographic Failure
        if len(encoded) > self.max_response_size:
            return None
        metrics.request(operation, None, started)
        self.services.audit.answered(session, operation, uid, result)
        return encoded

    def malformed(self, error: TtlvError, data: bytes | None = None) -> bytes:
        """The answer to a framed message that is not valid TTLV: Invalid Message, in the
        request's version when it can be read at the usual offsets."""
        version = messages.answer_version(None if data is None else sniff_version(data))
        return self._encode(
            version,
            int(time.time()),
            [messages.failure(None, ResultReason.InvalidMessage, f"malformed TTLV: {error}")],
        )

    async def handle_tree(self, session: Session, tree: Item) -> bytes:
        """One decoded request message (the native TLS engine hands over trees)."""
        now = int(time.time())
        try:
            request = messages.parse_request(tree)
        except KmipError as e:
            version = messages.answer_version(messages.read_version(tree))
            return self._encode(version, now, [outcome_of(e, None)])
        version = messages.answer_version(request.header.version)
        if len(request.items) > self.max_batch_items:
            failure = messages.failure(
                None,
                ResultReason.InvalidMessage,
                f"{len(request.items)} batch items; this server accepts at most "
                f"{self.max_batch_items}",
            )
            return self._encode(version, now, [failure])
        results = await self._run_batch(session, request, version, now)
        # The client may ask for less than the server's limit, never for more.
        limit = min(
            request.header.max_response_size or self.max_response_size, self.max_response_size
        )
        try:
            encoded = self._encode(version, now, results)
        except InvalidUnwrap:
            # Sealed keys open only here, inside the encoder: find the items whose key
            # material does not open and fail just those.
            encoded = self._encode(version, now, [_opened(r) for r in results])
        if len(encoded) > limit:
            # §7.1 Maximum Response Size: payloads are dropped, the client is told why.
            message = f"response of {len(encoded)} bytes exceeds the maximum of {limit}"
            encoded = self._encode(
                version, now, _failed(results, ResultReason.ResponseTooLarge, message)
            )
        return encoded

    def _encode(self, version: tuple[int, int], now: int, items: list[ResponseItem]) -> bytes:
        return _native.encode(messages.build_response(version, now, items))

    async def _run_batch(
        self,
        session: Session,
        request: messages.Request,
        version: tuple[int, int],
        now: int,
    ) -> list[ResponseItem]:
        results: list[ResponseItem] = []
        placeholder: str | None = None
        stop_on_error = request.header.error_option != BatchErrorContinuationOption.Continue
        requested = request.header.version
        for item in request.items:
            started = metrics.clock()
            ctx = Context(
                session=session,
                services=self.services,
                version=version,
                now=now,
                operation=item.operation,
                placeholder=placeholder,
            )
            result = await self._run_item(ctx, item, requested)
            metrics.request(item.operation, result.reason, started)
            results.append(result)
            self.services.audit.operation(ctx, result)
            if result.status != ResultStatus.Success:
                if stop_on_error:
                    break
                continue
            if ctx.uid is not None and item.operation in PLACEHOLDER_SETTERS:
                placeholder = ctx.uid
        return results

    async def _run_item(
        self, ctx: Context, item: RequestItem, requested: tuple[int, int]
    ) -> ResponseItem:
        if requested[0] != 1 and item.operation != Operation.DiscoverVersions:
            return messages.failure(
                item,
                ResultReason.InvalidMessage,
                f"protocol version {requested[0]}.{requested[1]} is not supported; "
                "this server speaks KMIP 1.0 to 1.4",
            )
        if item.extension is not None and ttlv.value(item.extension, T_CRITICALITY) is not False:
            # §6.16: an extension the server does not understand and that is marked
            # critical fails the item.
            return messages.failure(
                item,
                ResultReason.FeatureNotSupported,
                "critical message extension not supported",
            )
        allowed = ctx.session.allowed
        if allowed is not None and item.operation not in allowed:
            return messages.failure(
                item,
                ResultReason.PermissionDenied,
                f"operation {_op_name(item.operation)} is not allowed for role "
                f"{ctx.session.role} of client {ctx.session.client}",
            )
        handler = self.dispatch.get(item.operation)
        if handler is None:
            return messages.failure(
                item,
                ResultReason.OperationNotSupported,
                f"operation {_op_name(item.operation)} is not supported by this server",
            )
        try:
            payload = await handler(ctx, item.payload)
        except Exception as exc:  # the one place that maps errors to results
            return outcome_of(exc, item)
        return ResponseItem(operation=item.operation, batch_id=item.batch_id, payload=payload)


# Operations whose result becomes the ID Placeholder for later items (§6.6).
PLACEHOLDER_SETTERS = frozenset(
    {
        Operation.Create,
        Operation.CreateKeyPair,
        Operation.Register,
        Operation.ReKey,
        Operation.ReKeyKeyPair,
        Operation.DeriveKey,
        Operation.Certify,
        Operation.ReCertify,
        Operation.Locate,
        Operation.Check,
        Operation.Get,
        Operation.GetAttributes,
        Operation.GetAttributeList,
        Operation.AddAttribute,
        Operation.ModifyAttribute,
        Operation.DeleteAttribute,
        Operation.Activate,
        Operation.Revoke,
        Operation.ObtainLease,
        Operation.GetUsageAllocation,
    }
)


def _op_name(op: int) -> str:
    try:
        return Operation(op).name
    except ValueError:
        return f"0x{op:08X}"
