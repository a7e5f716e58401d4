"""Re-key (KMIP 1.4 §4.4): a new symmetric key replacing an existing one.

The replacement gets the original's attributes (algorithm, length, usage mask, custom
attributes), takes over its Names, and the two are linked (Replaced / Replacement
Object Link).  With an Offset, the new dates are shifted from now by it.

Result Reasons: Item Not Found, Permission Denied (destroyed or compromised
original), Invalid Field (not a symmetric key made or registered as raw bytes).
"""

from __future__ import annotations

from kmipfast.operations import common, objects
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import LinkType, ObjectType, ResultReason, State
from kmipfast.protocol.errors import KmipError, invalid_field
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject

T_OFFSET = int(Tag.Offset)

# Attributes the replacement does not inherit: the server sets them afresh.
_NOT_INHERITED = frozenset(
    {
        "Unique Identifier",
        "State",
        "Initial Date",
        "Last Change Date",
        "Activation Date",
        "Deactivation Date",
        "Destroy Date",
        "Compromise Date",
        "Compromise Occurrence Date",
        "Revocation Reason",
        "Digest",
        "Link",
        "Name",
        "Process Start Date",
        "Protect Stop Date",
    }
)


def _link(kind: int, uid: str) -> Item:
    return ttlv.struct(
        attrs.T_VALUE,
        ttlv.enum(Tag.LinkType, kind),
        ttlv.text(Tag.LinkedObjectIdentifier, uid),
    )


async def rekey(ctx: Context, payload: Item | None) -> Item:
    """§4.4: generates the replacement natively; the original keeps its material."""
    uid = ctx.uid_from(payload)
    vault = ctx.services.vault
    offset = ttlv.typed(payload, T_OFFSET, ttlv.INTERVAL)
    args = await common.template_attributes(ctx, payload)
    sealer = await ctx.services.keys.current(ctx.tenant)

    def change(old: ManagedObject) -> ManagedObject:
        if old.object_type != ObjectType.SymmetricKey or old.meta.get("layout") != "key":
            raise invalid_field("Re-key works on symmetric keys held as key material")
        if old.state not in (State.PreActive, State.Active, State.Deactivated):
            raise KmipError(ResultReason.PermissionDenied, "that key can no longer be re-keyed")
        new = common.new_object(ctx, ObjectType.SymmetricKey)
        for name, values in old.attributes.items():
            if name not in _NOT_INHERITED:
                new.attributes[name] = list(values)
        if "Name" in old.attributes:
            new.attributes["Name"] = old.attributes.pop("Name")
        if offset is not None:
            new.set("Activation Date", ttlv.DATE_TIME, ctx.now + offset)
        elif old.first("Activation Date") is not None:
            new.set("Activation Date", ttlv.DATE_TIME, ctx.now)
        common.finish_new_object(ctx, new, args)
        objects.seal_generated(new, sealer, old.meta["algorithm"], old.meta["length"])
        common.mark_generated(new)
        new.attributes["Link"] = [_link(LinkType.ReplacedObjectLink, old.uid)]
        old.attributes.setdefault("Link", []).append(_link(LinkType.ReplacementObjectLink, new.uid))
        old.touch(ctx.now)
        return new

    # The original (now linked to its replacement) is saved first, then the
    # replacement; a crash between leaves a dangling link, never a lost key.
    _old, new = await vault.update(ctx.tenant, uid, change)
    await vault.insert(new)
    ctx.uid = new.uid
    return common.payload(common.uid_item(new.uid))
