"""Create (KMIP 1.4 §4.1) and Register (§4.3).

Result Reasons: Invalid Field (wrong object type, bad or missing algorithm/length,
attribute of the wrong type), Permission Denied (an attribute a client may not set),
Item Not Found (named templates), Cryptographic Failure / General Failure (root key
or HSM trouble while unsealing the tenant's master key).
"""

from __future__ import annotations

from kmipfast import _native
from kmipfast.operations import certificates, common, objects
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ObjectType
from kmipfast.protocol.errors import invalid_field, missing
from kmipfast.protocol.processor import Context
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject


async def create(ctx: Context, payload: Item | None) -> Item:
    """§4.1: a new symmetric key, generated and sealed inside native code."""
    object_type = ttlv.typed(payload, common.T_OBJECT_TYPE, ttlv.ENUMERATION)
    if object_type is None:
        raise missing("Object Type")
    if object_type != ObjectType.SymmetricKey:
        raise invalid_field("Create makes Symmetric Keys; use Register for other objects")
    args = await common.template_attributes(ctx, payload)
    obj = common.new_object(ctx, object_type)
    common.finish_new_object(ctx, obj, args)
    algorithm = obj.first("Cryptographic Algorithm")
    length = obj.first("Cryptographic Length")
    if algorithm is None:
        raise missing("Cryptographic Algorithm attribute")
    if length is None:
        raise missing("Cryptographic Length attribute")
    sealer = await ctx.services.keys.current(ctx.tenant)
    objects.seal_generated(obj, sealer, algorithm, length)
    common.mark_generated(obj)
    await ctx.services.vault.insert(obj)
    ctx.uid = obj.uid
    return common.payload(ttlv.enum(common.T_OBJECT_TYPE, object_type), common.uid_item(obj.uid))


async def register(ctx: Context, payload: Item | None) -> Item:
    """§4.3: stores a client-supplied object, sealed."""
    object_type = ttlv.typed(payload, common.T_OBJECT_TYPE, ttlv.ENUMERATION)
    if object_type is None:
        raise missing("Object Type")
    tag = objects.OBJECT_TAGS.get(object_type)
    if tag is None:
        raise invalid_field("this server does not store objects of that Object Type")
    item = ttlv.find(payload, tag)
    if item is None:
        raise missing(f"the {ObjectType(object_type).name} object")
    args = await common.template_attributes(ctx, payload)
    obj = common.new_object(ctx, object_type)
    if object_type == ObjectType.Template:
        return await _register_template(ctx, obj, item, args)
    sealer = await ctx.services.keys.current(ctx.tenant)
    found = objects.seal_registered(obj, sealer, item)
    if object_type == ObjectType.Certificate:
        found.update(certificates.certificate_attributes(item))
    for name, (typ, value) in found.items():
        obj.set(name, typ, value)
    # The Key Block's own algorithm/length win; a template repeating them is fine.
    args = [a for a in args if a.name not in found]
    common.finish_new_object(ctx, obj, args)
    await ctx.services.vault.insert(obj)
    ctx.uid = obj.uid
    return common.payload(common.uid_item(obj.uid))


async def _register_template(
    ctx: Context, obj: ManagedObject, item: Item, args: list[attrs.AttributeArg]
) -> Item:
    """A Template (§2.2.6) holds attributes for later Creates/Registers that name it;
    they are no secret, so they are kept in the meta data, not sealed."""
    content = list(ttlv.find_all(item, common.T_ATTRIBUTE))
    parsed = [attrs.parse_attribute(a) for a in content]
    obj.meta = {"layout": "template", "template": [_native.encode(a).hex() for a in content]}
    # A template is known by the Name it carries; its other attributes are for the
    # objects made from it, not its own (TC-312).
    own = [a for a in parsed if a.name == "Name"]
    common.finish_new_object(ctx, obj, [*own, *args])
    await ctx.services.vault.insert(obj)
    ctx.uid = obj.uid
    return common.payload(common.uid_item(obj.uid))
