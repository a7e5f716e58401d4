"""Get Attributes (§4.12), Get Attribute List (§4.13), Add (§4.14), Modify (§4.15)
and Delete Attribute (§4.16) of KMIP 1.4.

Result Reasons: Item Not Found (unknown uid, or no such attribute instance to modify
or delete), Permission Denied (an attribute the client may not change, or not in the
object's current state), Invalid Field (malformed Attribute, wrong value type).
A Get Attributes that names an attribute the object lacks answers success without
it: vCenter probes its x- attributes this way.
"""

from __future__ import annotations

from kmipfast.operations import common
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ResultReason
from kmipfast.protocol.errors import KmipError, invalid_field, missing
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject

T_ATTRIBUTE_NAME = int(Tag.AttributeName)
T_ATTRIBUTE_INDEX = int(Tag.AttributeIndex)


T_KEY_FORMAT_TYPE = int(Tag.KeyFormatType)


def _attribute_items(obj: ManagedObject, names: list[str], version: tuple[int, int]) -> list[Item]:
    wanted = names or list(obj.attributes)
    out: list[Item] = []
    for name in wanted:
        if not attrs.visible_in(name, version):
            continue
        for index, value in enumerate(obj.attributes.get(name, ())):
            if name == "Digest" and version < (1, 1):
                # Digest's Key Format Type field arrived in 1.1.
                value = (value[0], value[1], [c for c in value[2] if c[0] != T_KEY_FORMAT_TYPE])
            out.append(attrs.attribute_item(name, index, value))
    return out


async def get_attributes(ctx: Context, payload: Item | None) -> Item:
    """§4.12: the named attributes (all when none is named), every instance."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    obj = await ctx.services.vault.fetch(ctx.tenant, uid)
    names = [n[2] for n in ttlv.find_all(payload, T_ATTRIBUTE_NAME)]
    if len(set(names)) != len(names):
        raise KmipError(ResultReason.InvalidMessage, "an Attribute Name is repeated")
    return common.payload_of([common.uid_item(uid), *_attribute_items(obj, names, ctx.version)])


async def get_attribute_list(ctx: Context, payload: Item | None) -> Item:
    """§4.13: the names of the object's attributes."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    obj = await ctx.services.vault.fetch(ctx.tenant, uid)
    names = [
        ttlv.text(T_ATTRIBUTE_NAME, n)
        for n, values in obj.attributes.items()
        if values and attrs.visible_in(n, ctx.version)
    ]
    return common.payload_of([common.uid_item(uid), *names])


def _the_attribute(payload: Item | None) -> attrs.AttributeArg:
    item = ttlv.find(payload, common.T_ATTRIBUTE)
    if item is None:
        raise missing("Attribute")
    return attrs.parse_attribute(item)


async def add_attribute(ctx: Context, payload: Item | None) -> Item:
    """§4.14: a new instance (multi-instance attributes) or a first value."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    arg = _the_attribute(payload)
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> int:
        index = common.apply_attribute(obj, arg, "add")
        obj.touch(ctx.now)
        return index

    obj, index = await vault.update(ctx.tenant, uid, change)
    value = obj.attributes[arg.name][index]
    return common.payload(common.uid_item(uid), attrs.attribute_item(arg.name, index, value))


async def modify_attribute(ctx: Context, payload: Item | None) -> Item:
    """§4.15: replaces one existing instance (index 0 unless given)."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    arg = _the_attribute(payload)
    value = arg.value
    if value is None:
        raise invalid_field("Modify Attribute needs an Attribute Value")
    rule = attrs.require(attrs.rule_for(arg.name), arg.name, "modify")
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> Item:
        if rule.modify_states is not None and obj.state not in rule.modify_states:
            raise KmipError(
                ResultReason.PermissionDenied,
                f"{arg.name!r} cannot be changed in the object's current state",
            )
        present = obj.attributes.get(arg.name, [])
        index = arg.index or 0
        if index >= len(present):
            raise KmipError(
                ResultReason.ItemNotFound, f"the object has no {arg.name!r} at index {index}"
            )
        present[index] = (attrs.T_VALUE, value[1], value[2])
        obj.touch(ctx.now)
        return present[index]

    _obj, changed = await vault.update(ctx.tenant, uid, change)
    return common.payload(
        common.uid_item(uid), attrs.attribute_item(arg.name, arg.index or 0, changed)
    )


async def delete_attribute(ctx: Context, payload: Item | None) -> Item:
    """§4.16: removes one instance (index 0 unless given)."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    name = ttlv.typed(payload, T_ATTRIBUTE_NAME, ttlv.TEXT_STRING)
    if name is None:
        raise missing("Attribute Name")
    index = ttlv.typed(payload, T_ATTRIBUTE_INDEX, ttlv.INTEGER, 0)
    attrs.require(attrs.rule_for(name), name, "delete")
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> Item:
        present = obj.attributes.get(name, [])
        if index >= len(present):
            raise KmipError(
                ResultReason.ItemNotFound, f"the object has no {name!r} at index {index}"
            )
        removed = present.pop(index)
        if not present:
            del obj.attributes[name]
        obj.touch(ctx.now)
        return removed

    _obj, removed = await vault.update(ctx.tenant, uid, change)
    return common.payload(common.uid_item(uid), attrs.attribute_item(name, index, removed))
