"""Get (KMIP 1.4 §4.11) and Check (§4.10).

Result Reasons: Item Not Found (unknown uid, another tenant's, or key material
destroyed), Key Format Type Not Supported, Key Compression Type Not Supported,
Feature Not Supported (key wrapping on Get), Sensitive / Not Extractable (1.4),
Cryptographic Failure (root key gone, a sealed blob that fails its binding), General
Failure (HSM unavailable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kmipfast.keys.hierarchy import StaleGeneration
from kmipfast.operations import common, objects
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ResultReason
from kmipfast.protocol.errors import KmipError
from kmipfast.protocol.processor import Context, Session
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject

if TYPE_CHECKING:
    from kmipfast.services import Services

T_KEY_FORMAT_TYPE = int(Tag.KeyFormatType)
T_KEY_COMPRESSION = int(Tag.KeyCompressionType)
T_WRAPPING_SPEC = int(Tag.KeyWrappingSpecification)
T_USAGE_MASK = int(Tag.CryptographicUsageMask)
T_UNIQUE_IDENTIFIER = int(Tag.UniqueIdentifier)


async def get(ctx: Context, payload: Item | None) -> Item:
    """§4.11: the object with its key material, opened into the response natively."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    if ttlv.find(payload, T_WRAPPING_SPEC) is not None:
        raise KmipError(ResultReason.FeatureNotSupported, "key wrapping on Get is not supported")
    if ttlv.find(payload, T_KEY_COMPRESSION) is not None:
        raise KmipError(
            ResultReason.KeyCompressionTypeNotSupported, "key compression is not supported"
        )
    requested = ttlv.typed(payload, T_KEY_FORMAT_TYPE, ttlv.ENUMERATION)
    try:
        obj, item = await _served_item(ctx, uid, requested)
    except StaleGeneration:
        # Re-encrypted since it was cached: the stored row is under the new generation.
        ctx.services.vault.forget(ctx.tenant, uid)
        obj, item = await _served_item(ctx, uid, requested)
    if obj.first("Fresh") is True:
        await _served(ctx, uid)
    return _payload(obj, item)


def cached_get(session: Session, services: Services, payload: Item) -> tuple[str, Item] | None:
    """The plain Get vCenter and ESXi hosts send (a Unique Identifier, nothing else)
    answered without waiting, when the object and its master key are both held here
    and serving it changes nothing (not Fresh): ``(uid, response payload)``.  None
    for anything else, which then takes :func:`get`, where every error is answered."""
    fields = payload[2]
    if len(fields) != 1:
        return None
    tag, typ, uid = fields[0]
    if tag != T_UNIQUE_IDENTIFIER or typ != ttlv.TEXT_STRING:
        return None
    obj = services.vault.cached(session.tenant, uid)
    if obj is None or obj.key_blob is None or obj.first("Fresh") is True:
        return None
    master = services.keys.held(session.tenant, objects.generation(obj))
    if master is None:
        return None
    served = obj.served
    if served is None or served[0] is not master:
        # The payload holds the sealed blob and the master key it opens under (opened
        # only while a response is encoded); made again when the master key is renewed.
        try:
            _check_servable(obj)
            served = obj.served = (master, _payload(obj, objects.object_item(obj, master, None)))
        except KmipError:
            return None
    services.vault.hits += 1
    return uid, served[1]


async def _served_item(ctx: Context, uid: str, requested: int | None) -> tuple[ManagedObject, Item]:
    obj = await ctx.services.vault.fetch(ctx.tenant, uid)
    _check_servable(obj)
    master = None
    if obj.key_blob is not None:
        master = await ctx.services.keys.master(ctx.tenant, objects.generation(obj))
    return obj, objects.object_item(obj, master, requested)


def _check_servable(obj: ManagedObject) -> None:
    if obj.first("Extractable") is False:
        raise KmipError(ResultReason.NotExtractable, "the object is not extractable")
    if obj.first("Sensitive") is True:
        raise KmipError(
            ResultReason.Sensitive, "the object is sensitive and key wrapping is not offered"
        )


def _payload(obj: ManagedObject, item: Item) -> Item:
    return common.payload(
        ttlv.enum(common.T_OBJECT_TYPE, obj.object_type), common.uid_item(obj.uid), item
    )


async def _served(ctx: Context, uid: str) -> None:
    """Fresh (§3.34) turns False once the object has been served; one write per key."""

    def change(obj: ManagedObject) -> None:
        obj.set("Fresh", ttlv.BOOLEAN, False)

    await ctx.services.vault.update(ctx.tenant, uid, change)


async def check(ctx: Context, payload: Item | None) -> Item:
    """§4.10: the object exists and allows the usage asked about."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    obj = await ctx.services.vault.fetch(ctx.tenant, uid)
    wanted = ttlv.typed(payload, T_USAGE_MASK, ttlv.INTEGER)
    have = obj.first("Cryptographic Usage Mask")
    if wanted is not None and have is not None and wanted & ~have:
        raise KmipError(
            ResultReason.IllegalOperation, "the object's usage mask does not allow that usage"
        )
    return common.payload(common.uid_item(uid))
