"""Attribute rules (KMIP 1.4 §3) as a table, and Attribute items <-> object attributes.

Each standard attribute has one row: single or multi-instance, what a client may do
with it (set at Create/Register, add, modify, delete), which object states allow a
client to modify it, and the first protocol version that defines it (a response never
shows an attribute the client's version does not know).  Custom attributes: ``x-``
names belong to clients (any type, multi-instance, freely changed), ``y-`` names to
the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ATTRIBUTE_TYPES, ResultReason, State
from kmipfast.protocol.errors import KmipError, invalid_field
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item

T_ATTRIBUTE = int(Tag.Attribute)
T_NAME = int(Tag.AttributeName)
T_INDEX = int(Tag.AttributeIndex)
T_VALUE = int(Tag.AttributeValue)

_PRE_ACTIVE = frozenset({State.PreActive})
_NOT_FINAL = frozenset({State.PreActive, State.Active, State.Deactivated, State.Compromised})


@dataclass(frozen=True, slots=True)
class Rule:
    multi: bool = False
    init: bool = False  # a client may set it in a Create/Register template
    add: bool = False  # ... add it later (Add Attribute)
    modify: bool = False  # ... change it (Modify Attribute)
    delete: bool = False  # ... remove it (Delete Attribute)
    modify_states: frozenset[int] | None = None  # None: any state
    since: tuple[int, int] = (1, 0)


SERVER = Rule()
CLIENT = Rule(init=True, add=True, modify=True, delete=True)
CLIENT_MULTI = Rule(multi=True, init=True, add=True, modify=True, delete=True)

RULES: dict[str, Rule] = {
    "Unique Identifier": SERVER,
    "Name": CLIENT_MULTI,
    "Object Type": SERVER,
    "Cryptographic Algorithm": Rule(init=True),
    "Cryptographic Length": Rule(init=True),
    "Cryptographic Parameters": CLIENT_MULTI,
    "Cryptographic Domain Parameters": Rule(init=True),
    "Certificate Type": SERVER,
    "Certificate Length": Rule(since=(1, 1)),
    "X.509 Certificate Identifier": Rule(since=(1, 1)),
    "X.509 Certificate Subject": Rule(since=(1, 1)),
    "X.509 Certificate Issuer": Rule(since=(1, 1)),
    "Certificate Identifier": SERVER,
    "Certificate Subject": SERVER,
    "Certificate Issuer": SERVER,
    "Digital Signature Algorithm": Rule(multi=True, since=(1, 1)),
    "Digest": Rule(multi=True),
    "Operation Policy Name": CLIENT,
    "Cryptographic Usage Mask": Rule(init=True, add=True),
    "Lease Time": SERVER,
    "Usage Limits": Rule(init=True, add=True, modify=True),
    "State": SERVER,
    "Initial Date": SERVER,
    "Activation Date": Rule(init=True, add=True, modify=True, modify_states=_PRE_ACTIVE),
    "Process Start Date": Rule(init=True, add=True, modify=True, modify_states=_PRE_ACTIVE),
    "Protect Stop Date": Rule(init=True, add=True, modify=True, modify_states=_NOT_FINAL),
    "Deactivation Date": Rule(init=True, add=True, modify=True, modify_states=_NOT_FINAL),
    "Destroy Date": SERVER,
    "Compromise Occurrence Date": SERVER,
    "Compromise Date": SERVER,
    "Revocation Reason": SERVER,
    "Archive Date": SERVER,
    "Object Group": CLIENT_MULTI,
    "Fresh": Rule(init=True, add=True, since=(1, 1)),
    "Link": CLIENT_MULTI,
    "Application Specific Information": CLIENT_MULTI,
    "Contact Information": CLIENT,
    "Last Change Date": SERVER,
    "Alternative Name": Rule(
        multi=True, init=True, add=True, modify=True, delete=True, since=(1, 2)
    ),
    "Key Value Present": Rule(since=(1, 2)),
    "Key Value Location": Rule(
        multi=True, init=True, add=True, modify=True, delete=True, since=(1, 2)
    ),
    "Original Creation Date": Rule(init=True, since=(1, 2)),
    "Random Number Generator": Rule(init=True, since=(1, 3)),
    "PKCS#12 Friendly Name": Rule(init=True, add=True, modify=True, delete=True, since=(1, 4)),
    "Description": Rule(init=True, add=True, modify=True, delete=True, since=(1, 4)),
    "Comment": Rule(init=True, add=True, modify=True, delete=True, since=(1, 4)),
    "Sensitive": Rule(init=True, add=True, modify=True, since=(1, 4)),
    "Always Sensitive": Rule(since=(1, 4)),
    "Extractable": Rule(init=True, add=True, modify=True, since=(1, 4)),
    "Never Extractable": Rule(since=(1, 4)),
}

CUSTOM_CLIENT = CLIENT_MULTI
CUSTOM_SERVER = Rule(multi=True)


def rule_for(name: str) -> Rule | None:
    """The rule of an attribute name, None for a name KMIP does not define."""
    found = RULES.get(name)
    if found is not None:
        return found
    if name.startswith("x-") or name.startswith("X-"):
        return CUSTOM_CLIENT
    if name.startswith("y-") or name.startswith("Y-"):
        return CUSTOM_SERVER
    return None


def visible_in(name: str, version: tuple[int, int]) -> bool:
    found = RULES.get(name)
    return found is None or found.since <= version


@dataclass(slots=True)
class AttributeArg:
    """One Attribute of a request: name, optional index, value item."""

    name: str
    index: int | None
    value: Item | None


def parse_attribute(item: Item) -> AttributeArg:
    """Reads an Attribute structure (§2.1.1) and checks its value's type."""
    if item[0] != T_ATTRIBUTE or item[1] != ttlv.STRUCTURE:
        raise invalid_field("expected an Attribute structure")
    name = ttlv.value(item, T_NAME)
    if not isinstance(name, str) or not name:
        raise invalid_field("Attribute Name is missing")
    index = ttlv.value(item, T_INDEX)
    if index is not None and (not isinstance(index, int) or index < 0):
        raise invalid_field("Attribute Index must be a non-negative Integer")
    value = ttlv.find(item, T_VALUE)
    if value is not None:
        check_type(name, value)
    return AttributeArg(name=name, index=index, value=value)


def check_type(name: str, value: Item) -> None:
    expected = ATTRIBUTE_TYPES.get(name)
    if expected is not None and value[1] != expected[1]:
        raise invalid_field(
            f"attribute {name!r} must be of type {expected[1].name}, not type 0x{value[1]:02X}"
        )


def attribute_item(name: str, index: int | None, value: Item) -> Item:
    """An Attribute structure for a response; the index is shown only when non-zero."""
    return ttlv.struct(
        T_ATTRIBUTE,
        ttlv.text(T_NAME, name),
        ttlv.integer(T_INDEX, index) if index else None,
        value,
    )


def value_item(typ: int, value: object) -> Item:
    return (T_VALUE, typ, value)


def require(rule: Rule | None, name: str, what: str) -> Rule:
    """The rule, or the KMIP error a client gets for an attribute it may not touch."""
    if rule is None:
        raise invalid_field(f"{name!r} is not a KMIP attribute (custom ones start with x-)")
    allowed = {"init": rule.init, "add": rule.add, "modify": rule.modify, "delete": rule.delete}
    if not allowed[what]:
        verb = {"init": "set", "add": "add", "modify": "modify", "delete": "delete"}[what]
        raise KmipError(ResultReason.PermissionDenied, f"a client may not {verb} {name!r}")
    return rule
