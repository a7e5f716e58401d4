"""``Processor.answer_now``: a plain Get of a held key answered without waiting.

Whatever it answers must be what the ordinary path (``handle_tree``) answers, byte for
byte apart from the time stamp, with the same audit line and metrics; everything it
cannot answer exactly that way it must decline (None), so the ordinary path gives the
error or waits for the store or the HSM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kmipfast import _native, metrics
from kmipfast.operations import DISPATCH, QUICK
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import (
    KeyFormatType,
    Operation,
    ResultReason,
    ResultStatus,
)
from kmipfast.protocol.processor import Processor, Session
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from tests.protocol import test_processor
from tests.protocol.test_processor import (
    DEFAULT,
    TENANT_B,
    Kmip,
    attribute,
    batch_item,
    message,
    results,
    uid,
)

serve = test_processor.serve  # the fixture: a fresh runtime per test


def quick_processor(k: Kmip) -> Processor:
    return Processor(
        k.rt.services,
        DISPATCH,
        max_message_size=1 << 20,
        max_batch_items=64,
        max_response_size=1 << 22,
        quick=QUICK,
    )


def get(key: str, *extra: Item, version: tuple[int, int] = (1, 1), **kw: Any) -> Item:
    return message(batch_item(Operation.Get, uid(key), *extra, **kw), version=version)


def without_time(resp: bytes) -> Item:
    tag, typ, (header, *items) = _native.decode(resp)
    kept = [c for c in header[2] if c[0] != Tag.TimeStamp]
    return (tag, typ, [(header[0], header[1], kept), *items])


async def served_key(k: Kmip) -> str:
    """A key that has been got once (no longer Fresh), so it is cached and held."""
    key = await k.create()
    await k.ok(Operation.Get, uid(key))
    return key


def test_quick_answer_is_the_ordinary_answer(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        p = quick_processor(k)
        key = await served_key(k)
        for version in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 7)]:
            for batch_id in [None, b"\x00\x01"]:
                tree = get(key, version=version, batch_id=batch_id)
                quick = p.answer_now(DEFAULT, tree)
                assert quick is not None, (version, batch_id)
                ordinary = await p.handle_tree(DEFAULT, tree)
                assert without_time(quick) == without_time(ordinary)
                [r] = results(_native.decode(quick))
                assert (r.status, r.batch_id) == (ResultStatus.Success, batch_id)

    serve(body)


def test_quick_answers_are_audited_and_counted(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        p = quick_processor(k)
        key = await served_key(k)
        audit = k.rt.services.audit
        lines: list[tuple[Any, ...]] = []
        audit.answered = lambda *args: lines.append(args)  # type: ignore[method-assign]
        vault = k.rt.services.vault
        counted = metrics.requests.get((Operation.Get, None), 0)
        hits = vault.hits
        assert p.answer_now(DEFAULT, get(key)) is not None
        [(session, operation, audited_uid, result)] = lines
        assert (session, operation, audited_uid) == (DEFAULT, Operation.Get, key)
        assert result.status == ResultStatus.Success
        assert metrics.requests[(Operation.Get, None)] == counted + 1
        assert vault.hits == hits + 1
        # A cached object the quick path declines (Fresh) is counted by the ordinary
        # path alone: the same hits as a server without the quick path.
        counts = []
        for answer_first, processor in [(False, k.processor), (True, p)]:
            fresh = await k.create()
            hits, misses = vault.hits, vault.misses
            if answer_first:
                assert p.answer_now(DEFAULT, get(fresh)) is None
            await processor.handle_tree(DEFAULT, get(fresh))
            counts.append((vault.hits - hits, vault.misses - misses))
        assert counts[0] == counts[1] and counts[0][0] > 0

    serve(body)


def test_requests_the_quick_path_leaves_to_the_ordinary_one(serve: Callable[..., None]) -> None:
    """Each case is declined, and the ordinary path then gives its proper answer."""

    async def body(k: Kmip) -> None:
        p = quick_processor(k)
        key = await served_key(k)
        fresh = await k.create()
        unextractable = await k.create(attribute("Extractable", ttlv.BOOLEAN, False))
        await k.ok(Operation.GetAttributes, uid(unextractable))
        get_only = Session("reader", "default", "fp-r", allowed=frozenset({Operation.Query}))
        fmt = ttlv.enum(Tag.KeyFormatType, KeyFormatType.TransparentSymmetricKey)
        two = message(
            batch_item(Operation.Get, uid(key), batch_id=b"1"),
            batch_item(Operation.Get, uid(key), batch_id=b"2"),
        )
        critical = ttlv.struct(
            Tag.MessageExtension,
            ttlv.text(Tag.VendorIdentification, "x"),
            ttlv.boolean(Tag.CriticalityIndicator, True),
            ttlv.struct(Tag.VendorExtension),
        )
        cases: list[tuple[str, Session, Item, int | None]] = [
            ("Fresh: the first Get is a write", DEFAULT, get(fresh), None),
            ("a Key Format Type", DEFAULT, get(key, fmt), None),
            ("another tenant's uid", TENANT_B, get(key), ResultReason.ItemNotFound),
            ("an unknown uid", DEFAULT, get("no-such-key"), ResultReason.ItemNotFound),
            ("a role without Get", get_only, get(key), ResultReason.PermissionDenied),
            ("version 2.0", DEFAULT, get(key, version=(2, 0)), ResultReason.InvalidMessage),
            ("two batch items", DEFAULT, two, None),
            (
                "a critical extension",
                DEFAULT,
                get(key, extension=critical),
                ResultReason.FeatureNotSupported,
            ),
            ("not extractable", DEFAULT, get(unextractable), ResultReason.NotExtractable),
        ]
        for name, session, tree, reason in cases:
            assert p.answer_now(session, tree) is None, name
            got = results(_native.decode(await p.handle_tree(session, tree)))
            if reason is None:
                assert all(r.status == ResultStatus.Success for r in got), name
            else:
                assert (got[0].status, got[0].reason) == (ResultStatus.OperationFailed, reason), (
                    name
                )

    serve(body)


def test_quick_path_waits_for_what_is_not_held(serve: Callable[..., None]) -> None:
    """An object not in the cache, or a master key not held (dropped, renewed), is
    declined; once the ordinary Get has loaded it, quick answers resume, opened under
    the master key held now."""

    async def body(k: Kmip) -> None:
        p = quick_processor(k)
        services = k.rt.services
        key = await served_key(k)
        tree = get(key)
        expected = without_time(await p.handle_tree(DEFAULT, tree))

        services.vault.clear()
        assert p.answer_now(DEFAULT, tree) is None
        assert without_time(await p.handle_tree(DEFAULT, tree)) == expected
        assert p.answer_now(DEFAULT, tree) is not None

        services.keys.drop("default")  # wipes the held master key
        assert p.answer_now(DEFAULT, tree) is None
        assert without_time(await p.handle_tree(DEFAULT, tree)) == expected
        renewed = p.answer_now(DEFAULT, tree)
        assert renewed is not None and without_time(renewed) == expected

    serve(body)


def test_destroyed_key_is_left_to_the_ordinary_path(serve: Callable[..., None]) -> None:
    async def body(k: Kmip) -> None:
        p = quick_processor(k)
        key = await served_key(k)
        assert p.answer_now(DEFAULT, get(key)) is not None
        await k.ok(Operation.Destroy, uid(key))
        assert p.answer_now(DEFAULT, get(key)) is None
        [r] = results(_native.decode(await p.handle_tree(DEFAULT, get(key))))
        assert r.status == ResultStatus.OperationFailed

    serve(body)
