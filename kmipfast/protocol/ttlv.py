"""Small helpers over the native tree ``(tag, type, value)`` (see ``kmipfast/_native.pyi``).

Builders return plain tuples and readers take them; no wrapper objects, so a handler
walks exactly what the codec produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from kmipfast.protocol.tags import ItemType, Tag

Item = tuple[int, int, Any]

STRUCTURE = int(ItemType.Structure)
INTEGER = int(ItemType.Integer)
LONG_INTEGER = int(ItemType.LongInteger)
BIG_INTEGER = int(ItemType.BigInteger)
ENUMERATION = int(ItemType.Enumeration)
BOOLEAN = int(ItemType.Boolean)
TEXT_STRING = int(ItemType.TextString)
BYTE_STRING = int(ItemType.ByteString)
DATE_TIME = int(ItemType.DateTime)
INTERVAL = int(ItemType.Interval)
DATE_TIME_EXTENDED = int(ItemType.DateTimeExtended)


def struct(tag: int, *children: Item | None) -> Item:
    """A Structure; ``None`` children (optional fields left out) are dropped."""
    return (int(tag), STRUCTURE, [c for c in children if c is not None])


def struct_of(tag: int, children: Iterable[Item]) -> Item:
    return (int(tag), STRUCTURE, list(children))


def integer(tag: int, value: int) -> Item:
    return (int(tag), INTEGER, int(value))


def long_integer(tag: int, value: int) -> Item:
    return (int(tag), LONG_INTEGER, int(value))


def enum(tag: int, value: int) -> Item:
    return (int(tag), ENUMERATION, int(value))


def boolean(tag: int, value: bool) -> Item:
    return (int(tag), BOOLEAN, bool(value))


def text(tag: int, value: str) -> Item:
    return (int(tag), TEXT_STRING, value)


def byte_string(tag: int, value: Any) -> Item:
    return (int(tag), BYTE_STRING, value)


def date_time(tag: int, value: int) -> Item:
    return (int(tag), DATE_TIME, int(value))


def interval(tag: int, value: int) -> Item:
    return (int(tag), INTERVAL, int(value))


def children(item: Item | None) -> list[Item]:
    """The children of a Structure (empty for anything else or None)."""
    if item is None or item[1] != STRUCTURE:
        return []
    kids: list[Item] = item[2]
    return kids


def find(item: Item | None, tag: int) -> Item | None:
    """The first child with ``tag``."""
    for child in children(item):
        if child[0] == tag:
            return child
    return None


def find_all(item: Item | None, tag: int) -> Iterator[Item]:
    for child in children(item):
        if child[0] == tag:
            yield child


def value(item: Item | None, tag: int, default: Any = None) -> Any:
    """The value of the first child with ``tag``, or ``default``."""
    child = find(item, tag)
    return default if child is None else child[2]


def typed(item: Item | None, tag: int, typ: int, default: Any = None) -> Any:
    """The value of the first child with ``tag``, which must be of item type ``typ``:
    a field of the wrong type is the client's error (Invalid Field), not ours."""
    child = find(item, tag)
    if child is None:
        return default
    if child[1] != typ:
        from kmipfast.protocol.errors import invalid_field

        raise invalid_field(f"{tag_name(tag)} must be of type {ItemType(typ).name}")
    return child[2]


def tag_name(tag: int) -> str:
    try:
        return Tag(tag).name
    except ValueError:
        return f"0x{tag:06X}"


def redacted(item: Item, depth: int = 0) -> str:
    """A one-item-per-line rendering for logs: names and enumerations shown, every
    other value hidden (it may be key material)."""
    tag, typ, val = item
    pad = "  " * depth
    if typ == STRUCTURE:
        inner = "\n".join(redacted(c, depth + 1) for c in val)
        return f"{pad}{tag_name(tag)}\n{inner}" if inner else f"{pad}{tag_name(tag)}"
    shown = str(val) if typ in (ENUMERATION, BOOLEAN) else f"<{ItemType(typ).name}>"
    return f"{pad}{tag_name(tag)} = {shown}"
