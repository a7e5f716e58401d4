"""Load OASIS KMIP XML test cases into TTLV trees, and compare a server's answers with them.

Theory of operation. A test-case file (KMIP Profiles, "XML encoding") is a root
element (``<KMIP>`` or ``<KmipTestCase>``) holding request and response messages in
turn. Every element is one TTLV item: the element name is the tag name (or
``<TTLV tag="0x540001">`` for extension tags), ``type=`` the item type (missing
means Structure) and ``value=`` the value in its XML spelling. :func:`load_case`
turns each pair into the tree convention the native codec uses,
``(tag, item_type, value)`` with structures as lists of children.

Values the file cannot know are :class:`Placeholder` objects: ``$UNIQUE_IDENTIFIER_N``
(the N-th identifier the server handed out in this file), ``$NOW±n`` (the send time)
and wildcards such as ``$IV_COUNTER_NONCE`` or ``$KEY_MATERIAL_0``. A runner keeps the
identifiers it has seen (:func:`capture_uids`), fills requests in with :func:`bind`
before sending, and checks responses with :func:`compare`, which is lenient exactly
where a correct server may differ from the recorded one (clock-derived dates, digests
of generated keys, result messages, order of attributes).

Quirks of the corpus handled here: ``# TIME n`` lines between messages (stripped),
attribute names with runs of spaces left over from PDF extraction
(``"Cryptographic   Usage Mask"``: whitespace collapsed), masks written as flag
names separated by spaces or ``|``, and empty structures written without ``type=``.
Diffs never show byte strings or big integers, which may be key material.
"""

from __future__ import annotations

import enum
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from kmipfast.protocol.enums import ATTRIBUTE_TYPES, ENUM_FOR_TAG, MASK_FOR_TAG, member, parse_mask
from kmipfast.protocol.tags import ItemType, Tag

__all__ = [
    "LENIENT_DATE_TAGS",
    "Node",
    "Placeholder",
    "Value",
    "XmlCaseError",
    "bind",
    "capture_uids",
    "compare",
    "load_case",
    "parse_element",
]


@dataclass(frozen=True)
class Placeholder:
    """A value the test file leaves open: ``$NAME`` or ``$NAME±offset``."""

    name: str
    offset: int = 0

    _UID_PREFIX = "UNIQUE_IDENTIFIER_"

    @property
    def uid_index(self) -> int | None:
        """N for ``$UNIQUE_IDENTIFIER_N``, else None."""
        if self.name.startswith(self._UID_PREFIX) and self.name[len(self._UID_PREFIX) :].isdigit():
            return int(self.name[len(self._UID_PREFIX) :])
        return None

    @property
    def is_now(self) -> bool:
        return self.name == "NOW"

    @property
    def is_wildcard(self) -> bool:
        """True for values the server makes up (IVs, correlation values, key material...)."""
        return self.uid_index is None and not self.is_now

    def __str__(self) -> str:
        return f"${self.name}{self.offset:+d}" if self.offset else f"${self.name}"


Value: TypeAlias = "int | bool | str | bytes | Placeholder | list[Node]"
Node: TypeAlias = "tuple[int, int, Value]"


class XmlCaseError(ValueError):
    """A test-case file that cannot be turned into trees; the message names file and element."""


# Dates a server sets from its own clock: any Date-Time is accepted for them.
LENIENT_DATE_TAGS: frozenset[int] = frozenset(
    {
        Tag.TimeStamp,
        Tag.InitialDate,
        Tag.LastChangeDate,
        Tag.ActivationDate,
        Tag.DeactivationDate,
        Tag.DestroyDate,
        Tag.CompromiseDate,
        Tag.ArchiveDate,
        Tag.OriginalCreationDate,
    }
)
# Free text, and digests of keys the server generated: present, of the right type, any value.
_ANY_VALUE_TAGS: frozenset[int] = frozenset({Tag.ResultMessage, Tag.DigestValue})

_TIME_MARK = re.compile(r"#\s*TIME\s+\d+")
_PLACEHOLDER = re.compile(r"^\$([A-Z][A-Z0-9_]*?)([+-]\d+)?$")
_ROOTS = frozenset({"KMIP", "KmipTestCase"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------
# XML -> tree


def _int(text: str) -> int:
    t = text.strip()
    if t.lower().lstrip("-").startswith("0x"):
        return int(t, 16)
    return int(t, 10)


def _big_int(text: str) -> int:
    # Hex digits of the big-endian two's-complement bytes, usually without 0x.
    t = text.strip()
    t = t[2:] if t.lower().startswith("0x") else t
    if len(t) % 2:
        t = "0" + t
    return int.from_bytes(bytes.fromhex(t), "big", signed=True)


def _datetime(text: str) -> datetime:
    t = text.strip()
    d = datetime.fromisoformat(t)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _seconds(text: str) -> int:
    return int(_datetime(text).timestamp())


def _microseconds(text: str) -> int:
    if text.strip().lstrip("-").isdigit():
        return int(text)
    delta = _datetime(text) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _bool(text: str) -> bool:
    return {"true": True, "false": False, "1": True, "0": False}[text.strip().lower()]


def _bytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _enumeration(cls: type[enum.IntEnum] | None, text: str) -> int:
    t = text.strip()
    if t.lower().startswith("0x") or t.isdigit():
        number = _int(t)
        if cls is not None and number in cls._value2member_map_:
            return cls(number)
        return number
    if cls is None:
        raise KeyError(f"symbolic value {t!r} for a tag without a known enumeration")
    return member(cls, t)


def _integer(mask: type[enum.IntFlag] | None, text: str) -> int:
    t = text.strip()
    if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", t):
        return _int(t)
    if mask is None:
        raise KeyError(f"symbolic value {t!r} for an Integer that is not a mask")
    return parse_mask(mask, t)


_ENUM_BY_NUMBER: dict[int, type[enum.IntEnum]] = {int(k): v for k, v in ENUM_FOR_TAG.items()}
_MASK_BY_NUMBER: dict[int, type[enum.IntFlag]] = {int(k): v for k, v in MASK_FOR_TAG.items()}

_PARSERS: dict[ItemType, Callable[[str], int | bool | str | bytes]] = {
    ItemType.LongInteger: _int,
    ItemType.BigInteger: _big_int,
    ItemType.Interval: _int,
    ItemType.Boolean: _bool,
    ItemType.TextString: str,
    ItemType.ByteString: _bytes,
    ItemType.DateTime: _seconds,
    ItemType.DateTimeExtended: _microseconds,
}


def _tag_of(elem: ET.Element) -> int:
    explicit = elem.get("tag")
    if explicit is not None:
        return _int(explicit)
    try:
        return Tag[elem.tag]
    except KeyError:
        raise KeyError(f"unknown tag name <{elem.tag}>") from None


def _scalar(tag: int, item_type: ItemType, text: str, attribute: str | None) -> Value:
    """Parse one value; ``attribute`` is the Attribute Name when ``tag`` is Attribute Value."""
    match = _PLACEHOLDER.match(text.strip())
    if match:
        return Placeholder(match.group(1), int(match.group(2) or 0))
    value_tag = tag
    if tag == Tag.AttributeValue:
        known = ATTRIBUTE_TYPES.get(attribute or "")
        value_tag = known[0] if known else 0  # custom attribute: numbers only
    if item_type is ItemType.Enumeration:
        return _enumeration(_ENUM_BY_NUMBER.get(value_tag), text)
    if item_type is ItemType.Integer:
        return _integer(_MASK_BY_NUMBER.get(value_tag), text)
    value = _PARSERS[item_type](text)
    if tag == Tag.AttributeName and isinstance(value, str):
        value = " ".join(value.split())
    return value


def parse_element(elem: ET.Element, attribute: str | None = None) -> Node:
    """Turn one XML element (and its children) into a tree node."""
    tag = _tag_of(elem)
    type_name = elem.get("type", "Structure")
    try:
        item_type = ItemType[type_name]
    except KeyError:
        raise KeyError(f"unknown item type {type_name!r} on <{elem.tag}>") from None
    if item_type is ItemType.Structure:
        children: list[Node] = []
        name = attribute
        for child in elem:
            node = parse_element(child, name)
            if node[0] == Tag.AttributeName and isinstance(node[2], str):
                name = node[2]
            children.append(node)
        return (Tag(tag) if tag in Tag._value2member_map_ else tag, item_type, children)
    text = elem.get("value")
    if text is None:
        raise KeyError(f"<{elem.tag}> of type {type_name} has no value")
    try:
        value = _scalar(tag, item_type, text, attribute)
    except (KeyError, ValueError) as exc:
        raise KeyError(f"<{elem.tag} type={type_name} value={text!r}>: {exc}") from None
    return (Tag(tag) if tag in Tag._value2member_map_ else tag, item_type, value)


def load_case(path: str | Path) -> list[tuple[Node, Node]]:
    """Read one OASIS XML test-case file as (request, expected response) trees, in order."""
    path = Path(path)
    text = _TIME_MARK.sub("", path.read_bytes().decode("utf-8"))
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise XmlCaseError(f"{path}: not XML: {exc}") from None
    if root.tag not in _ROOTS:
        raise XmlCaseError(f"{path}: unexpected root <{root.tag}>")
    messages: list[Node] = []
    for index, elem in enumerate(root):
        try:
            messages.append(parse_element(elem))
        except KeyError as exc:
            raise XmlCaseError(f"{path}: message {index}: {exc.args[0]}") from None
    pairs: list[tuple[Node, Node]] = []
    for i in range(0, len(messages), 2):
        request = messages[i]
        response = messages[i + 1] if i + 1 < len(messages) else None
        if (
            request[0] != Tag.RequestMessage
            or response is None
            or response[0] != Tag.ResponseMessage
        ):
            raise XmlCaseError(f"{path}: message {i} is not a request followed by a response")
        pairs.append((request, response))
    return pairs


# ---------------------------------------------------------------------------
# Placeholders


def bind(tree: Node, uids: list[str], now: int) -> Node:
    """Fill in ``$UNIQUE_IDENTIFIER_N`` (for the N seen so far) and ``$NOW±n``; keep wildcards."""
    tag, item_type, value = tree
    if isinstance(value, list):
        return (tag, item_type, [bind(child, uids, now) for child in value])
    if isinstance(value, Placeholder):
        index = value.uid_index
        if index is not None and index < len(uids):
            return (tag, item_type, uids[index])
        if value.is_now:
            scale = 1_000_000 if item_type == ItemType.DateTimeExtended else 1
            return (tag, item_type, (now + value.offset) * scale)
    return tree


def _attribute_name(node: Node) -> str | None:
    if node[0] != Tag.Attribute or not isinstance(node[2], list):
        return None
    for child in node[2]:
        if child[0] == Tag.AttributeName and isinstance(child[2], str):
            return " ".join(child[2].split())
    return None


def _pairs(
    expected: list[Node], actual: list[Node]
) -> Iterator[tuple[Node | None, Node | None, str]]:
    """Pair children by tag (Attributes by name) and occurrence; order across tags is free."""

    def keyed(nodes: list[Node]) -> dict[tuple[int, str | None, int], Node]:
        seen: dict[tuple[int, str | None], int] = {}
        out: dict[tuple[int, str | None, int], Node] = {}
        for node in nodes:
            base = (node[0], _attribute_name(node))
            seen[base] = seen.get(base, -1) + 1
            out[(*base, seen[base])] = node
        return out

    exp, act = keyed(expected), keyed(actual)
    for key, node in exp.items():
        yield node, act.get(key), _step(key)
    for key, node in act.items():
        if key not in exp:
            yield None, node, _step(key)


def _step(key: tuple[int, str | None, int]) -> str:
    tag, attribute, occurrence = key
    name = Tag(tag).name if tag in Tag._value2member_map_ else f"0x{tag:06X}"
    label = f"{name}({attribute})" if attribute else name
    return f"{label}[{occurrence}]" if occurrence else label


def capture_uids(expected: Node, actual: Node, uids: list[str]) -> None:
    """Append to ``uids`` the identifiers the server returned where ``expected`` has a new
    ``$UNIQUE_IDENTIFIER_N``, in order of N (N must follow on from those already known)."""
    found: dict[int, str] = {}

    def walk(exp: Node, act: Node) -> None:
        value = exp[2]
        if isinstance(value, list) and isinstance(act[2], list):
            for e, a, _ in _pairs(value, act[2]):
                if e is not None and a is not None:
                    walk(e, a)
        elif isinstance(value, Placeholder) and isinstance(act[2], str):
            index = value.uid_index
            if index is not None and index >= len(uids):
                found.setdefault(index, act[2])

    walk(expected, actual)
    while len(uids) in found:
        uids.append(found[len(uids)])


def _show(item_type: int, value: Value) -> str:
    """Render a value for a diff; byte strings and big integers may be key material."""
    if isinstance(value, Placeholder):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes sha256:{hashlib.sha256(value).hexdigest()[:12]}>"
    if item_type == ItemType.BigInteger and isinstance(value, int):
        return f"<big integer, {value.bit_length()} bits>"
    if isinstance(value, enum.Enum):
        return f"{value.name}({value.value:#x})"
    return repr(value)


def compare(expected: Node, actual: Node) -> list[str]:
    """Differences between an expected (bound) response tree and the server's, as sentences.

    An empty list means the response conforms. Unbound ``$UNIQUE_IDENTIFIER_N`` are
    reported: call :func:`capture_uids` and :func:`bind` first.
    """
    diffs: list[str] = []

    def walk(exp: Node, act: Node, path: str, value_tag: int) -> None:
        # value_tag: the tag whose rules apply; an Attribute Value takes its Attribute Name's.
        e_type, a_type, e_value, a_value = exp[1], act[1], exp[2], act[2]
        if e_type != a_type:
            diffs.append(
                f"{path}: expected item type {_type_name(e_type)}, got {_type_name(a_type)}"
            )
        elif isinstance(e_value, list):
            attribute_tag = _attribute_tag(exp)
            for e, a, step in _pairs(e_value, a_value if isinstance(a_value, list) else []):
                child_path = f"{path}/{step}"
                if a is None:
                    diffs.append(f"{child_path}: missing")
                elif e is None:
                    diffs.append(f"{child_path}: unexpected {_show(a[1], a[2])}")
                else:
                    child_tag = (
                        attribute_tag if e[0] == Tag.AttributeValue and attribute_tag else e[0]
                    )
                    walk(e, a, child_path, child_tag)
        elif isinstance(e_value, Placeholder):
            if e_value.uid_index is not None:
                diffs.append(f"{path}: {e_value} is unbound (server sent {_show(a_type, a_value)})")
            # $NOW and wildcards: any value of the right item type.
        elif value_tag in _ANY_VALUE_TAGS or (
            value_tag in LENIENT_DATE_TAGS and e_type == ItemType.DateTime
        ):
            pass
        elif e_value != a_value:
            diffs.append(f"{path}: expected {_show(e_type, e_value)}, got {_show(a_type, a_value)}")

    if expected[0] != actual[0]:
        return [f"/: expected {_tag_name(expected[0])}, got {_tag_name(actual[0])}"]
    walk(expected, actual, f"/{_tag_name(expected[0])}", expected[0])
    return diffs


def _attribute_tag(node: Node) -> int | None:
    """For an Attribute structure with a standard name, the tag its value stands for."""
    known = ATTRIBUTE_TYPES.get(_attribute_name(node) or "")
    return int(known[0]) if known else None


def _tag_name(tag: int) -> str:
    return Tag(tag).name if tag in Tag._value2member_map_ else f"0x{tag:06X}"


def _type_name(item_type: int) -> str:
    return (
        ItemType(item_type).name
        if item_type in ItemType._value2member_map_
        else f"0x{item_type:02X}"
    )
