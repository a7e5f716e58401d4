"""KMIP 1.1 messages shaped like real vCenter traffic, for the load tests.

Every request starts from a capture in ``../shared/conformance/captures/vmware.json``
(hex TTLV), decoded once with ``kmipfast._native.decode``; a request for another
object is the same tree with its Unique Identifier replaced and re-encoded.  Nothing
here prints or keeps key material: responses are checked by their Result Status only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kmipfast import _native

CAPTURES = Path(
    os.environ.get(
        "KMIP_CAPTURES",
        Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "captures",
    )
)

UNIQUE_IDENTIFIER = 0x420094
RESULT_STATUS = 0x42007F
BATCH_ITEM = 0x42000F
OPERATION = 0x42005C
RESPONSE_PAYLOAD = 0x42007C
RESULT_REASON = 0x42007E
RESULT_MESSAGE = 0x42007D
TEXT = 0x07
STRUCTURE = 0x01

# Result Status = Success (0) as it appears on the wire: one per successful batch item.
SUCCESS = bytes.fromhex("42007f050000000400000000")


def _load() -> dict[str, bytes]:
    with open(CAPTURES / "vmware.json") as f:
        raw: dict[str, str] = json.load(f)
    return {name: bytes.fromhex(value) for name, value in raw.items()}


CAPTURED = _load()


def tree(name: str) -> Any:
    """The decoded capture ``name`` (e.g. ``"get"``, ``"create"``, ``"add_attribute"``)."""
    return _native.decode(CAPTURED[name])


def with_uid(item: Any, uid: str) -> Any:
    """A copy of ``item`` with every Unique Identifier set to ``uid``."""
    tag, typ, value = item
    if tag == UNIQUE_IDENTIFIER and typ == TEXT:
        return (tag, typ, uid)
    if typ == STRUCTURE:
        return (tag, typ, [with_uid(child, uid) for child in value])
    return item


def find(item: Any, tag: int) -> Any:
    """The value of the first item with ``tag`` (depth first), or None."""
    t, typ, value = item
    if t == tag:
        return value
    if typ == STRUCTURE:
        for child in value:
            found = find(child, tag)
            if found is not None:
                return found
    return None


def text_attribute(name: str, value: str) -> Any:
    """An Attribute structure (KMIP 1.x) with a Text String value."""
    return (0x420008, STRUCTURE, [(0x42000A, TEXT, name), (0x42000B, TEXT, value)])


_GET = tree("get")
_ADD = tree("add_attribute")
_GET_ATTRIBUTES = tree("get_attributes")

DISCOVER_VERSIONS = CAPTURED["discover_versions_1"]  # empty, as vCenter opens with
QUERY = CAPTURED["query"]  # Query Server Information
CREATE = CAPTURED["create"]  # AES-256, usage mask 12, no Name
GET_RESPONSE = CAPTURED["get_response"]  # what the canned server answers


def get(uid: str) -> bytes:
    return _native.encode(with_uid(_GET, uid))


def add_attributes(uid: str) -> bytes:
    """The batch of three x- attributes vCenter adds after Create."""
    return _native.encode(with_uid(_ADD, uid))


def get_attributes(uid: str) -> bytes:
    """GetAttributes of one x- attribute (vCenter asks one at a time)."""
    return _native.encode(with_uid(_GET_ATTRIBUTES, uid))


def request(operation: int, payload: list[Any]) -> bytes:
    """A one-item KMIP 1.1 request, header copied from the captured Get."""
    header = _GET[2][0]
    item = (BATCH_ITEM, STRUCTURE, [(OPERATION, 0x05, operation), (0x420079, STRUCTURE, payload)])
    return _native.encode((0x420078, STRUCTURE, [header, item]))


def register_secret(data: bytes, name: str) -> bytes:
    """Register of Secret Data (Password), as storage arrays store their keys."""
    template = (
        0x420091,
        STRUCTURE,
        [
            (
                0x420008,
                STRUCTURE,
                [(0x42000A, TEXT, "Cryptographic Usage Mask"), (0x42000B, 0x02, 0x0C)],
            ),
            (
                0x420008,
                STRUCTURE,
                [
                    (0x42000A, TEXT, "Name"),
                    (0x42000B, STRUCTURE, [(0x420055, TEXT, name), (0x420054, 0x05, 1)]),
                ],
            ),
        ],
    )
    secret = (
        0x420085,
        STRUCTURE,
        [
            (0x420086, 0x05, 1),  # Secret Data Type: Password
            (
                0x420040,
                STRUCTURE,
                [  # Key Block
                    (0x420042, 0x05, 2),  # Key Format Type: Opaque
                    (0x420045, STRUCTURE, [(0x420043, 0x08, data)]),  # Key Value / Key Material
                ],
            ),
        ],
    )
    return request(3, [(0x420057, 0x05, 7), template, secret])  # Object Type: Secret Data


def destroy(uid: str) -> bytes:
    return request(20, [(UNIQUE_IDENTIFIER, TEXT, uid)])


def frame_length(buf: bytes | bytearray) -> int | None:
    """Whole length of the message starting ``buf`` (8-byte TTLV header + body)."""
    if len(buf) < 8:
        return None
    return 8 + int.from_bytes(buf[4:8], "big")


def succeeded(response: bytes, items: int = 1) -> bool:
    """True when all ``items`` batch items of ``response`` have Result Status Success."""
    return response.count(SUCCESS) == items


def uid_of(response: bytes) -> str | None:
    """The Unique Identifier in a successful Create/Register response."""
    value = find(_native.decode(response), UNIQUE_IDENTIFIER)
    return value if isinstance(value, str) else None


def failure_reason(response: bytes) -> str:
    """A short description of a failed response: the reason code and message, no data."""
    try:
        t = _native.decode(response)
    except Exception as e:  # a broken response is a failure too
        return f"undecodable response ({type(e).__name__})"
    reason = find(t, RESULT_REASON)
    message = find(t, RESULT_MESSAGE)
    text = f"reason {reason}" if reason is not None else "no reason"
    if isinstance(message, str):
        text += f": {message[:80]}"
    return text
