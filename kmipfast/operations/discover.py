"""Discover Versions (KMIP 1.4 §4.26) and Query (§4.25).

Result Reasons: none beyond the batch loop's (both always succeed).
"""

from __future__ import annotations

from kmipfast import __version__
from kmipfast.operations import common
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ObjectType, QueryFunction
from kmipfast.protocol.messages import SUPPORTED_VERSIONS, T_MAJOR, T_MINOR, T_PROTOCOL_VERSION
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item

T_QUERY_FUNCTION = int(Tag.QueryFunction)


def _version_item(v: tuple[int, int]) -> Item:
    return ttlv.struct(T_PROTOCOL_VERSION, ttlv.integer(T_MAJOR, v[0]), ttlv.integer(T_MINOR, v[1]))


async def discover_versions(ctx: Context, payload: Item | None) -> Item:
    """§4.26: the versions we speak that the client listed, newest first (all of
    ours when the client listed none)."""
    asked = {
        (ttlv.value(pv, T_MAJOR), ttlv.value(pv, T_MINOR))
        for pv in ttlv.find_all(payload, T_PROTOCOL_VERSION)
    }
    offered = [v for v in SUPPORTED_VERSIONS if not asked or v in asked]
    return common.payload_of(_version_item(v) for v in offered)


def supported_operations() -> list[int]:
    from kmipfast.operations import DISPATCH

    return sorted(DISPATCH)


SERVED_OBJECTS = (
    ObjectType.SymmetricKey,
    ObjectType.SecretData,
    ObjectType.OpaqueObject,
    ObjectType.Certificate,
    ObjectType.PublicKey,
    ObjectType.PrivateKey,
)


async def query(ctx: Context, payload: Item | None) -> Item:
    """§4.25: operations, object types and server information, as asked."""
    functions = {q[2] for q in ttlv.find_all(payload, T_QUERY_FUNCTION)}
    out: list[Item] = []
    if QueryFunction.QueryOperations in functions:
        out += [ttlv.enum(Tag.Operation, op) for op in supported_operations()]
    if QueryFunction.QueryObjects in functions:
        out += [ttlv.enum(Tag.ObjectType, t) for t in SERVED_OBJECTS]
    if QueryFunction.QueryServerInformation in functions:
        out.append(ttlv.text(Tag.VendorIdentification, f"{ctx.services.vendor} {__version__}"))
        out.append(ttlv.struct(Tag.ServerInformation))
    return common.payload_of(out)
