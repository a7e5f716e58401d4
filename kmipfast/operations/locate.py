"""Locate (KMIP 1.4 §4.9): filters pushed into the store, newest objects first.

Object Type and State become column filters; every other attribute (Name,
Cryptographic Algorithm/Length, custom x- attributes, ...) matches an instance whose
canonical TTLV bytes are equal.  Maximum Items and Offset Items page the result;
Located Items (1.3+) tells the total.  Storage Status Mask: every object is on-line.

Result Reasons: Invalid Field (malformed Attribute).
"""

from __future__ import annotations

from kmipfast.operations import common
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import State, StorageStatusMask
from kmipfast.protocol.errors import invalid_field
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import attribute_bytes

T_MAXIMUM_ITEMS = int(Tag.MaximumItems)
T_OFFSET_ITEMS = int(Tag.OffsetItems)
T_STORAGE_STATUS_MASK = int(Tag.StorageStatusMask)
T_LOCATED_ITEMS = int(Tag.LocatedItems)
_FINDABLE = (State.PreActive, State.Active, State.Deactivated, State.Compromised)


async def locate(ctx: Context, payload: Item | None) -> Item:
    """§4.9: uids of the tenant's objects matching every given attribute."""
    object_type: int | None = None
    states: list[int] | None = None
    equals: list[tuple[str, bytes]] = []
    for item in ttlv.find_all(payload, common.T_ATTRIBUTE):
        arg = attrs.parse_attribute(item)
        if arg.value is None:
            raise invalid_field(f"Locate attribute {arg.name!r} has no value")
        if arg.name == "Object Type":
            object_type = arg.value[2]
        elif arg.name == "State":
            states = [*(states or []), arg.value[2]]
        else:
            equals.append((arg.name, attribute_bytes(arg.value)))
    if states is None:
        # Destroyed objects keep their attributes but are no longer found (§4.9).
        states = list(_FINDABLE)
    maximum = ttlv.typed(payload, T_MAXIMUM_ITEMS, ttlv.INTEGER)
    offset = ttlv.typed(payload, T_OFFSET_ITEMS, ttlv.INTEGER, 0)
    if (maximum is not None and maximum < 0) or offset < 0:
        raise invalid_field("Maximum Items and Offset Items must not be negative")
    mask = ttlv.typed(payload, T_STORAGE_STATUS_MASK, ttlv.INTEGER)
    if mask is not None and not mask & StorageStatusMask.OnLineStorage:
        uids: list[str] = []
    else:
        uids = await ctx.services.store.locate(
            ctx.tenant, object_type=object_type, states=states, attr_equals=equals
        )
    total = len(uids)
    page = uids[offset:] if maximum is None else uids[offset : offset + maximum]
    if page:
        ctx.uid = page[0]
    located = ttlv.integer(T_LOCATED_ITEMS, total) if ctx.version >= (1, 3) else None
    return common.payload_of([*([located] if located else []), *map(common.uid_item, page)])
