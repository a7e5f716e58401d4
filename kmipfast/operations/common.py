"""Pieces shared by the operation handlers: payloads, templates, server-set attributes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from kmipfast import _native
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ObjectType, ResultReason, RNGAlgorithm, State
from kmipfast.protocol.errors import KmipError, invalid_field
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject

T_RESPONSE_PAYLOAD = int(Tag.ResponsePayload)
T_UNIQUE_IDENTIFIER = int(Tag.UniqueIdentifier)
T_OBJECT_TYPE = int(Tag.ObjectType)
T_TEMPLATE_ATTRIBUTE = int(Tag.TemplateAttribute)
T_ATTRIBUTE = int(Tag.Attribute)
T_NAME = int(Tag.Name)


def payload(*children: Item | None) -> Item:
    return ttlv.struct(T_RESPONSE_PAYLOAD, *children)


def payload_of(children: Iterable[Item]) -> Item:
    return ttlv.struct_of(T_RESPONSE_PAYLOAD, children)


def uid_item(uid: str) -> Item:
    return ttlv.text(T_UNIQUE_IDENTIFIER, uid)


def new_uid() -> str:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.
    Keys made one after another get neighbouring ids, so their rows land on the same
    few B-tree pages at the end of each index instead of a random page per key: fewer
    pages for each commit to write and for the cache to hold."""
    value = (time.time_ns() // 1_000_000 & _MS_MASK) << 80 | int.from_bytes(os.urandom(10))
    value = value & _VERSION_VARIANT_CLEAR | _VERSION_7 | _VARIANT_RFC
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MS_MASK = (1 << 48) - 1
_VERSION_VARIANT_CLEAR = ~((0xF << 76) | (0x3 << 62))
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62


async def template_attributes(
    ctx: Context, container: Item | None, tag: int = T_TEMPLATE_ATTRIBUTE
) -> list[attrs.AttributeArg]:
    """The Attributes of a Template-Attribute structure (§2.1.8): those of each named
    Template object (§2.2.6, deprecated in 1.3), then the explicit ones."""
    template = ttlv.find(container, tag)
    if template is None:
        return []
    out: list[attrs.AttributeArg] = []
    for name in ttlv.find_all(template, T_NAME):
        out += await _named_template(ctx, name)
    out += [attrs.parse_attribute(a) for a in ttlv.find_all(template, T_ATTRIBUTE)]
    return out


async def _named_template(ctx: Context, name: Item) -> list[attrs.AttributeArg]:
    value = (attrs.T_VALUE, name[1], name[2])
    uids = await ctx.services.store.locate(
        ctx.tenant,
        object_type=ObjectType.Template,
        attr_equals=[("Name", _native.encode(value))],
        max_items=1,
    )
    if not uids:
        label = ttlv.value(name, int(Tag.NameValue))
        raise KmipError(ResultReason.ItemNotFound, f"no Template named {label!r}")
    template = await ctx.services.vault.fetch(ctx.tenant, uids[0])
    parsed = [
        attrs.parse_attribute(_native.decode(bytes.fromhex(a)))
        for a in template.meta.get("template", [])
    ]
    # A template's own Name is not passed on to the objects made from it.
    return [a for a in parsed if a.name != "Name"]


def apply_attribute(obj: ManagedObject, arg: attrs.AttributeArg, what: str) -> int:
    """Sets or adds one client-supplied attribute under the rules of ``what`` (init or
    add); returns the index it landed at."""
    rule = attrs.require(attrs.rule_for(arg.name), arg.name, what)
    if arg.value is None:
        raise invalid_field(f"attribute {arg.name!r} has no Attribute Value")
    value = (attrs.T_VALUE, arg.value[1], arg.value[2])
    present = obj.attributes.setdefault(arg.name, [])
    if not rule.multi:
        if present and what == "add":
            raise KmipError(
                ResultReason.PermissionDenied,
                f"{arg.name!r} is single-instance and already set; use Modify Attribute",
            )
        present[:] = [value]
        return 0
    if value in present and what == "init":
        return present.index(value)
    present.append(value)
    return len(present) - 1


def new_object(ctx: Context, object_type: int, uid: str | None = None) -> ManagedObject:
    """A fresh object in Pre-Active with the attributes the server always sets."""
    uid = uid or new_uid()
    obj = ManagedObject(
        uid=uid,
        tenant=ctx.tenant,
        object_type=object_type,
        state=State.PreActive,
        key_blob=None,
        meta={},
        attributes={},
        created=ctx.now,
        updated=ctx.now,
    )
    obj.set("Unique Identifier", ttlv.TEXT_STRING, uid)
    obj.set("Object Type", ttlv.ENUMERATION, object_type)
    return obj


def finish_new_object(
    ctx: Context, obj: ManagedObject, client_args: list[attrs.AttributeArg]
) -> None:
    """Applies a template's attributes and the server-set dates and state."""
    for arg in client_args:
        if arg.name in ("Unique Identifier", "Object Type"):
            continue  # ours to set; a client repeating them is harmless
        apply_attribute(obj, arg, "init")
    activation = obj.first("Activation Date")
    obj.state = (
        State.Active if activation is not None and activation <= ctx.now else State.PreActive
    )
    if obj.object_type != ObjectType.Template:  # templates have no lifecycle (§3.22)
        obj.set("State", ttlv.ENUMERATION, obj.state)
    obj.set("Initial Date", ttlv.DATE_TIME, ctx.now)
    obj.set("Last Change Date", ttlv.DATE_TIME, ctx.now)
    if obj.object_type == ObjectType.Template:
        return
    obj.set("Original Creation Date", ttlv.DATE_TIME, ctx.now)
    # Shown only to clients whose version defines them (protocol/attributes.py).
    obj.set("Fresh", ttlv.BOOLEAN, True)


def mark_generated(obj: ManagedObject) -> None:
    """Random Number Generator (§3.44) of keys made here: the operating system's CSPRNG,
    which KMIP has no name for, hence Unspecified."""
    obj.attributes["Random Number Generator"] = [
        ttlv.struct(attrs.T_VALUE, ttlv.enum(Tag.RNGAlgorithm, RNGAlgorithm.Unspecified))
    ]
    # Made here, so its whole history is known (§3.47-§3.50, 1.4).
    sensitive = bool(obj.first("Sensitive"))
    extractable = obj.first("Extractable")
    extractable = True if extractable is None else bool(extractable)
    obj.set("Sensitive", ttlv.BOOLEAN, sensitive)
    obj.set("Always Sensitive", ttlv.BOOLEAN, sensitive)
    obj.set("Extractable", ttlv.BOOLEAN, extractable)
    obj.set("Never Extractable", ttlv.BOOLEAN, not extractable)
