"""The TTLV codec seen from Python (KMIP 1.4 §9.1): ``kmipfast._native.decode``/``encode``.

The §9.1.2 encoding examples and the captured client traffic are read from
``../shared/conformance``; the malformed-input matrix builds its few bytes with the helpers
below and asserts ``reason``, ``offset`` and ``tag`` of every error.
"""

from __future__ import annotations

import json
import pickle
import re
import resource
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmipfast import _native
from kmipfast.errors import TtlvDecodeError, TtlvEncodeError

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = ROOT.parent / "shared" / "conformance"

# Item types, KMIP 1.4 §9.1.1.3 (0x0B from KMIP 2.0).
STRUCTURE = 0x01
INTEGER = 0x02
LONG_INTEGER = 0x03
BIG_INTEGER = 0x04
ENUMERATION = 0x05
BOOLEAN = 0x06
TEXT_STRING = 0x07
BYTE_STRING = 0x08
DATE_TIME = 0x09
INTERVAL = 0x0A
DATE_TIME_EXTENDED = 0x0B

REQUEST_MESSAGE = 0x420078
REQUEST_HEADER = 0x420077
BATCH_COUNT = 0x42000D
NAME_VALUE = 0x420055
KEY_MATERIAL = 0x420043
SPEC_TAG = 0x420020  # every §9.1.2 example uses it


def load(name: str) -> Any:
    return json.loads((CONFORMANCE / name).read_text())


# ---- KMIP 1.4 §9.1.2: the specification's examples, values parsed from their descriptions ----


def _structure_children(text: str) -> list[tuple[int, int, Any]]:
    types = {"Enumeration": ENUMERATION, "Integer": INTEGER}
    found = re.findall(r"(\w+) (\d+) \(tag ([0-9A-Fa-f]{6})\)", text)
    return [(int(tag, 16), types[ty], int(v)) for ty, v, tag in found]


def _date_time(text: str) -> int:
    when = datetime.strptime(text, "%A, %B %d, %Y, %H:%M:%S GMT").replace(tzinfo=UTC)
    return int(when.timestamp())


def _interval(text: str) -> int:
    days = re.fullmatch(r"(\d+) days", text)
    assert days, text
    return int(days[1]) * 86_400


def _number(text: str) -> int:
    return int(re.fullmatch(r"(?:decimal )?value (\d+)", text)[1])  # type: ignore[index]


SPEC_VALUE_PARSERS = {
    "Integer": _number,
    "Long Integer": _number,
    "Big Integer": _number,
    "Enumeration": _number,
    "Boolean": lambda t: {"value True": True, "value False": False}[t],
    "Text String": lambda t: re.fullmatch(r'value "(.*)"', t)[1],  # type: ignore[index]
    "Byte String": lambda t: bytes(int(b, 16) for b in re.findall(r"0x([0-9A-Fa-f]{2})", t)),
    "Date-Time": _date_time,
    "Interval": _interval,
    "Structure": _structure_children,
}
SPEC_TYPES = {
    "Integer": INTEGER,
    "Long Integer": LONG_INTEGER,
    "Big Integer": BIG_INTEGER,
    "Enumeration": ENUMERATION,
    "Boolean": BOOLEAN,
    "Text String": TEXT_STRING,
    "Byte String": BYTE_STRING,
    "Date-Time": DATE_TIME,
    "Interval": INTERVAL,
    "Structure": STRUCTURE,
}
SPEC_EXAMPLES = load("ttlv-spec-examples.json")


def test_kmip_9_1_2_every_example_type_is_covered() -> None:
    assert sorted(e["type"] for e in SPEC_EXAMPLES) == sorted(SPEC_TYPES)


@pytest.mark.parametrize("example", SPEC_EXAMPLES, ids=[e["type"] for e in SPEC_EXAMPLES])
def test_kmip_9_1_2_spec_example_decodes_to_its_value_and_reencodes(example: dict) -> None:
    data = bytes.fromhex(example["hex"])
    assert len(data) == example["total_len"]
    value = SPEC_VALUE_PARSERS[example["type"]](example["value"])
    expected = (SPEC_TAG, SPEC_TYPES[example["type"]], value)
    decoded = _native.decode(data)
    assert decoded == expected
    assert type(decoded[2]) is type(value)
    assert _native.encode(expected) == data


# ---- captured client traffic ------------------------------------------------------------------


def capture_messages() -> Iterator[tuple[str, bytes]]:
    for name in ("vmware", "mongodb"):
        for key, hexed in load(f"captures/{name}.json").items():
            yield f"{name}:{key}", bytes.fromhex(hexed)
    vcenter = load("captures/vcenter-7.0.3-session.json")
    for session in vcenter["sessions"]:
        for i, exchange in enumerate(session["exchanges"]):
            yield f"vcenter:{session['session']}:{i}:request", bytes.fromhex(exchange["request"])
            if exchange.get("pykmip_response"):
                response = bytes.fromhex(exchange["pykmip_response"])
                yield f"vcenter:{session['session']}:{i}:response", response


CAPTURES = list(capture_messages())
CAPTURE_IDS = [name for name, _ in CAPTURES]


def test_captures_found() -> None:
    assert len(CAPTURES) > 100
    assert {n.split(":")[0] for n in CAPTURE_IDS} == {"vmware", "mongodb", "vcenter"}


@pytest.mark.parametrize(("name", "data"), CAPTURES, ids=CAPTURE_IDS)
def test_capture_decodes_and_reencodes_byte_for_byte(name: str, data: bytes) -> None:
    tree = _native.decode(data)
    assert tree[1] == STRUCTURE
    assert _native.encode(tree) == data
    assert _native.decode(bytearray(data)) == tree
    assert _native.decode(memoryview(data)) == tree
    assert _native.frame_length(data) == len(data)
    assert _native.read_header(data) == (tree[0], STRUCTURE, len(data) - 8)


@pytest.mark.parametrize(("name", "data"), CAPTURES, ids=CAPTURE_IDS)
def test_kmip_9_1_capture_truncated_at_every_offset_is_truncated(name: str, data: bytes) -> None:
    top = int.from_bytes(data[:3], "big")
    for cut in range(len(data)):
        with pytest.raises(TtlvDecodeError) as info:
            _native.decode(data[:cut])
        e = info.value
        assert (e.reason, e.offset, e.tag) == ("truncated", 0, top if cut >= 3 else None), cut


# ---- byte builders for the malformed matrix --------------------------------------------------


def header(tag: int, ty: int, length: int) -> bytes:
    return tag.to_bytes(3, "big") + bytes([ty]) + struct.pack(">I", length)


def prim(tag: int, ty: int, value: bytes) -> bytes:
    return header(tag, ty, len(value)) + value + bytes(-len(value) % 8)


def structure(tag: int, *children: bytes) -> bytes:
    body = b"".join(children)
    return header(tag, STRUCTURE, len(body)) + body


def set_length(data: bytes, at: int, length: int) -> bytes:
    return data[: at + 4] + struct.pack(">I", length) + data[at + 8 :]


def poke(data: bytes, at: int, byte: int) -> bytes:
    return data[:at] + bytes([byte]) + data[at + 1 :]


def batch_count(n: int) -> bytes:
    return prim(BATCH_COUNT, INTEGER, struct.pack(">i", n))


def nested(depth: int) -> bytes:
    return b"".join(header(REQUEST_HEADER, STRUCTURE, 8 * (depth - i - 1)) for i in range(depth))


BC1, BC2 = batch_count(1), batch_count(2)
TWO_GIB = 0x8000_0000
NO_CAPS = {"max_message_size": 2**62, "max_field_size": 2**62}


def _malformed() -> Iterator[Any]:
    def case(id_: str, data: bytes, reason: str, offset: int, tag: int | None, **kw: int) -> Any:
        return pytest.param(data, kw, reason, offset, tag, id=id_)

    fixed = {
        INTEGER: 4,
        LONG_INTEGER: 8,
        ENUMERATION: 4,
        BOOLEAN: 8,
        DATE_TIME: 8,
        INTERVAL: 4,
        DATE_TIME_EXTENDED: 8,
    }
    # §9.1.1.3: fixed lengths per type
    for ty, n in fixed.items():
        for wrong in (0, 1, 3, 5, 12 - n, 16):
            bad = prim(BATCH_COUNT, ty, bytes(wrong))
            yield case(f"9.1.1.3-type{ty:02x}-len{wrong}", bad, "bad_length", 0, BATCH_COUNT)
            yield case(
                f"9.1.1.3-type{ty:02x}-len{wrong}-nested",
                structure(REQUEST_HEADER, BC1, bad),
                "bad_length",
                24,
                BATCH_COUNT,
            )
    for n in (0, 1, 4, 12):
        big = prim(SPEC_TAG, BIG_INTEGER, b"\x01" * n)
        yield case(f"9.1.1.4-big-integer-len{n}", big, "bad_length", 0, SPEC_TAG)
    odd = set_length(structure(REQUEST_HEADER, BC1, bytes(8)), 0, 20)
    yield case(
        "9.1.1.4-structure-len-not-multiple-of-8",
        structure(REQUEST_MESSAGE, odd),
        "bad_length",
        8,
        REQUEST_HEADER,
    )
    # §9.1.1.4: zero padding
    two = structure(REQUEST_HEADER, BC1, BC2)
    for pad in range(4):
        yield case(f"9.1.1.4-integer-padding{pad}", poke(two, 36 + pad, 1), "nonzero_padding", 36,
                   BATCH_COUNT)
    for pad in range(5):
        text = poke(prim(NAME_VALUE, TEXT_STRING, b"abc"), 11 + pad, 0x80)
        yield case(f"9.1.1.4-text-padding{pad}", text, "nonzero_padding", 11, NAME_VALUE)
    raw = poke(prim(KEY_MATERIAL, BYTE_STRING, b"\xaa" * 9), 23, 0xFF)
    yield case("9.1.1.4-byte-string-padding", raw, "nonzero_padding", 17, KEY_MATERIAL)
    # §9.1.1.4: children fill their parent exactly
    short = set_length(structure(REQUEST_HEADER, BC1), 0, 8)
    yield case(
        "9.1.1.4-child-longer-than-parent",
        structure(REQUEST_MESSAGE, short, BC2),
        "child_overruns_parent",
        16,
        BATCH_COUNT,
    )
    text = prim(NAME_VALUE, TEXT_STRING, b"twelve bytes")
    yield case(
        "9.1.1.4-text-longer-than-parent",
        structure(REQUEST_MESSAGE, set_length(structure(REQUEST_HEADER, text), 0, 16), BC2),
        "child_overruns_parent",
        16,
        NAME_VALUE,
    )
    long_ = set_length(structure(REQUEST_HEADER, BC1), 0, 24)
    yield case(
        "9.1.1.4-child-structure-longer-than-parent",
        structure(REQUEST_MESSAGE, long_) + BC2,
        "child_overruns_parent",
        8,
        REQUEST_HEADER,
    )
    yield case(
        "9.1.1.4-parent-longer-than-children",
        structure(REQUEST_MESSAGE, long_, BC2),
        "child_overruns_parent",
        32,
        BATCH_COUNT,
    )
    yield case(
        "9.1.1.4-outer-shorter-than-children",
        set_length(structure(REQUEST_MESSAGE, BC1, BC2), 0, 16),
        "trailing_bytes",
        24,
        None,
    )
    yield case(
        "9.1.1.4-outer-longer-than-input",
        set_length(structure(REQUEST_MESSAGE, BC1), 0, 24),
        "truncated",
        0,
        REQUEST_MESSAGE,
    )
    # §9.1.1.4: UTF-8 text, Booleans 0 or 1, canonical Big Integers
    for i, (text_bytes, bad) in enumerate(
        [(b"ab\xffcd", 2), (b"\xe2\x82", 0), (b"ok\xc0\xaf", 2), (b"\xed\xa0\x80", 0),
         (b"abcdefgh\x80", 8)]
    ):
        yield case(
            f"9.1.1.4-invalid-utf8-{i}",
            structure(REQUEST_HEADER, BC1, prim(NAME_VALUE, TEXT_STRING, text_bytes)),
            "invalid_utf8",
            32 + bad,
            NAME_VALUE,
        )
    for v in (2, 0xFF, 1 << 8, 1 << 63, 2**64 - 1):
        boolean = prim(SPEC_TAG, BOOLEAN, v.to_bytes(8, "big"))
        yield case(f"9.1.1.4-boolean-{v:x}", boolean, "invalid_boolean", 8, SPEC_TAG)
        yield case(f"9.1.1.4-boolean-{v:x}-nested", structure(REQUEST_HEADER, boolean),
                   "invalid_boolean", 16, SPEC_TAG)
    for name, v in [
        ("positive", bytes(8) + b"\x7f" + bytes(6) + b"\x01"),
        ("negative", b"\xff" * 8 + b"\x80" + bytes(7)),
        ("zero", bytes(16)),
        ("minus-one", b"\xff" * 24),
    ]:
        yield case(f"9.1.1.4-noncanonical-big-integer-{name}", prim(SPEC_TAG, BIG_INTEGER, v),
                   "noncanonical_big_integer", 8, SPEC_TAG)
    # §9.1.1.3 types and §9.1.1.1 tags
    for ty in (0x00, 0x0C, 0x0D, 0xFF):
        unknown = prim(SPEC_TAG, ty, bytes(4))
        yield case(f"9.1.1.3-unknown-type-{ty:02x}", unknown, "unknown_type", 3, SPEC_TAG)
        yield case(f"9.1.1.3-unknown-type-{ty:02x}-nested", structure(REQUEST_HEADER, BC1, unknown),
                   "unknown_type", 27, SPEC_TAG)
    for tag in (0x000000, 0x41FFFF, 0x430000, 0xFFFFFF):
        yield case(f"9.1.1.1-invalid-tag-{tag:06x}", prim(tag, INTEGER, bytes(4)), "invalid_tag", 0,
                   tag)
    # depth and size caps
    yield case("depth-65", nested(65), "too_deep", 512, REQUEST_HEADER)
    yield case("depth-1000", nested(1000), "too_deep", 512, REQUEST_HEADER)
    yield case("depth-4-cap-3", nested(4), "too_deep", 24, REQUEST_HEADER, max_depth=3)
    for ty in (TEXT_STRING, BYTE_STRING):
        yield case(
            f"field-over-cap-type{ty:02x}",
            structure(REQUEST_HEADER, BC1, prim(NAME_VALUE, ty, b"seventeen bytes..")),
            "field_too_large",
            24,
            NAME_VALUE,
            max_field_size=16,
        )
    yield case("field-over-cap-big-integer", prim(SPEC_TAG, BIG_INTEGER, b"\x01" * 24),
               "field_too_large", 0, SPEC_TAG, max_field_size=16)
    yield case("message-over-cap", structure(REQUEST_MESSAGE, BC1, BC2), "message_too_large", 0,
               REQUEST_MESSAGE, max_message_size=39)
    # trailing bytes, short input
    for extra in (1, 7, 8, 24):
        yield case(f"trailing-{extra}", structure(REQUEST_MESSAGE, BC1) + bytes(extra),
                   "trailing_bytes", 24, None)
    yield case("empty", b"", "truncated", 0, None)
    yield case("two-bytes", b"\x42\x00", "truncated", 0, None)
    yield case("four-bytes", b"\x42\x00\x78\x01", "truncated", 0, REQUEST_MESSAGE)


@pytest.mark.parametrize(("data", "limits", "reason", "offset", "tag"), list(_malformed()))
def test_kmip_9_1_malformed_input(
    data: bytes, limits: dict[str, int], reason: str, offset: int, tag: int | None
) -> None:
    with pytest.raises(TtlvDecodeError) as info:
        _native.decode(data, **limits)
    e = info.value
    assert (e.reason, e.offset, e.tag) == (reason, offset, tag), e.message
    assert isinstance(e, ValueError)


def test_caps_are_inclusive() -> None:
    assert _native.decode(nested(64))[1] == STRUCTURE
    assert _native.decode(nested(3), max_depth=3)[1] == STRUCTURE
    assert _native.decode(prim(NAME_VALUE, TEXT_STRING, b"x" * 16), max_field_size=16)
    assert _native.decode(structure(REQUEST_MESSAGE, BC1, BC2), max_message_size=40)


@pytest.mark.parametrize(
    ("data", "limits", "reason", "offset", "tag"),
    [
        (header(REQUEST_MESSAGE, STRUCTURE, TWO_GIB), {}, "truncated", 0, REQUEST_MESSAGE),
        (header(REQUEST_MESSAGE, STRUCTURE, 0xFFFF_FFF8), {}, "truncated", 0, REQUEST_MESSAGE),
        (header(KEY_MATERIAL, BYTE_STRING, TWO_GIB), NO_CAPS, "truncated", 0, KEY_MATERIAL),
        (header(KEY_MATERIAL, BYTE_STRING, 2**32 - 1), NO_CAPS, "truncated", 0, KEY_MATERIAL),
        (header(NAME_VALUE, TEXT_STRING, TWO_GIB), {}, "field_too_large", 0, NAME_VALUE),
        (header(SPEC_TAG, BIG_INTEGER, TWO_GIB), NO_CAPS, "truncated", 0, SPEC_TAG),
        (
            structure(REQUEST_MESSAGE, header(KEY_MATERIAL, BYTE_STRING, TWO_GIB)),
            NO_CAPS,
            "truncated",
            8,
            KEY_MATERIAL,
        ),
    ],
    ids=["structure", "structure-max", "bytes", "bytes-max", "text-capped", "big", "nested"],
)
def test_declared_2_gib_on_small_buffer_errors_fast_without_allocating(
    data: bytes, limits: dict[str, int], reason: str, offset: int, tag: int
) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(TtlvDecodeError) as info:
        _native.decode(data, **limits)
    assert time.monotonic() - start < 1.0
    assert (info.value.reason, info.value.offset, info.value.tag) == (reason, offset, tag)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 64 * 1024


def test_frame_length_refuses_2_gib_and_non_structures_before_the_body() -> None:
    with pytest.raises(TtlvDecodeError) as info:
        _native.frame_length(header(REQUEST_MESSAGE, STRUCTURE, TWO_GIB))
    assert (info.value.reason, info.value.offset, info.value.tag) == (
        "message_too_large",
        0,
        REQUEST_MESSAGE,
    )
    with pytest.raises(TtlvDecodeError) as info:
        _native.frame_length(BC1)
    assert (info.value.reason, info.value.tag) == ("bad_value", BATCH_COUNT)
    with pytest.raises(TtlvDecodeError) as info:
        _native.frame_length(header(0x123456, STRUCTURE, 0))
    assert (info.value.reason, info.value.tag) == ("invalid_tag", 0x123456)
    assert _native.frame_length(header(REQUEST_MESSAGE, STRUCTURE, 16)[:7]) is None
    assert _native.frame_length(header(REQUEST_MESSAGE, STRUCTURE, 16)) == 24
    assert _native.read_header(b"\x42\x00\x78\x01\x00\x00") is None


def test_decode_error_pickles_with_its_location() -> None:
    with pytest.raises(TtlvDecodeError) as info:
        _native.decode(prim(SPEC_TAG, BOOLEAN, (2).to_bytes(8, "big")))
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.reason, again.offset, again.tag) == ("invalid_boolean", 8, SPEC_TAG)


# ---- encode errors ---------------------------------------------------------------------------


def deep_tree(depth: int) -> tuple[int, int, list]:
    tree: tuple[int, int, list] = (REQUEST_HEADER, STRUCTURE, [])
    for _ in range(depth - 1):
        tree = (REQUEST_HEADER, STRUCTURE, [tree])
    return tree


ENCODE_ERRORS = [
    # bad tuple shape
    ("shape-2-tuple", (SPEC_TAG, INTEGER), {}, "bad_value", 0, None),
    ("shape-4-tuple", (SPEC_TAG, INTEGER, 1, 2), {}, "bad_value", 0, None),
    ("shape-list", [SPEC_TAG, INTEGER, 1], {}, "bad_value", 0, None),
    ("shape-int", 5, {}, "bad_value", 0, None),
    ("shape-child", (REQUEST_MESSAGE, STRUCTURE, [(BATCH_COUNT, INTEGER, 1), (1, 2)]), {},
     "bad_value", 24, None),
    ("shape-child-list", (REQUEST_MESSAGE, STRUCTURE, [[BATCH_COUNT, INTEGER, 1]]), {},
     "bad_value", 8, None),
    # ints out of range
    ("integer-2^31", (SPEC_TAG, INTEGER, 2**31), {}, "value_out_of_range", 0, SPEC_TAG),
    ("integer-below", (SPEC_TAG, INTEGER, -(2**31) - 1), {}, "value_out_of_range", 0, SPEC_TAG),
    ("long-2^63", (SPEC_TAG, LONG_INTEGER, 2**63), {}, "value_out_of_range", 0, SPEC_TAG),
    ("enumeration-negative", (SPEC_TAG, ENUMERATION, -1), {}, "value_out_of_range", 0, SPEC_TAG),
    ("enumeration-2^32", (SPEC_TAG, ENUMERATION, 2**32), {}, "value_out_of_range", 0, SPEC_TAG),
    ("interval-negative", (SPEC_TAG, INTERVAL, -1), {}, "value_out_of_range", 0, SPEC_TAG),
    ("date-time-2^63", (SPEC_TAG, DATE_TIME, 2**63), {}, "value_out_of_range", 0, SPEC_TAG),
    ("date-time-ext-2^63", (SPEC_TAG, DATE_TIME_EXTENDED, 2**63), {}, "value_out_of_range", 0,
     SPEC_TAG),
    ("integer-in-structure", (REQUEST_MESSAGE, STRUCTURE, [(BATCH_COUNT, INTEGER, 2**40)]),
     {}, "value_out_of_range", 8, BATCH_COUNT),
    # wrong Python types
    ("integer-str", (SPEC_TAG, INTEGER, "5"), {}, "value_out_of_range", 0, SPEC_TAG),
    ("integer-float", (SPEC_TAG, INTEGER, 1.0), {}, "value_out_of_range", 0, SPEC_TAG),
    ("boolean-int", (SPEC_TAG, BOOLEAN, 1), {}, "bad_value", 0, SPEC_TAG),
    ("text-bytes", (SPEC_TAG, TEXT_STRING, b"x"), {}, "bad_value", 0, SPEC_TAG),
    ("bytes-str", (SPEC_TAG, BYTE_STRING, "x"), {}, "bad_value", 0, SPEC_TAG),
    ("big-integer-float", (SPEC_TAG, BIG_INTEGER, 1.5), {}, "bad_value", 0, SPEC_TAG),
    ("structure-tuple", (SPEC_TAG, STRUCTURE, ()), {}, "bad_value", 0, SPEC_TAG),
    ("type-0x0c", (SPEC_TAG, 0x0C, 1), {}, "unknown_type", 0, SPEC_TAG),
    ("type-0x00", (SPEC_TAG, 0x00, 1), {}, "unknown_type", 0, SPEC_TAG),
    ("type-str", (SPEC_TAG, "x", 1), {}, "unknown_type", 0, SPEC_TAG),
    ("tag-str", ("x", INTEGER, 1), {}, "invalid_tag", 0, None),
    ("tag-over-3-bytes", (2**24, INTEGER, 1), {}, "invalid_tag", 0, 2**24),
    # depth and caps
    ("depth-65", deep_tree(65), {}, "too_deep", 512, REQUEST_HEADER),
    ("text-over-cap", (SPEC_TAG, TEXT_STRING, "x" * 17), {"max_field_size": 16},
     "field_too_large", 0, SPEC_TAG),
    ("bytes-over-cap", (SPEC_TAG, BYTE_STRING, b"x" * 17), {"max_field_size": 16},
     "field_too_large", 0, SPEC_TAG),
    ("big-integer-over-cap", (SPEC_TAG, BIG_INTEGER, 2**200), {"max_field_size": 16},
     "field_too_large", 0, SPEC_TAG),
]


@pytest.mark.parametrize(
    ("tree", "kwargs", "reason", "offset", "tag"),
    [pytest.param(*e[1:], id=e[0]) for e in ENCODE_ERRORS],
)
def test_encode_error(
    tree: Any, kwargs: dict[str, int], reason: str, offset: int, tag: int | None
) -> None:
    with pytest.raises(TtlvEncodeError) as info:
        _native.encode(tree, **kwargs)
    e = info.value
    assert (e.reason, e.offset, e.tag) == (reason, offset, tag), e.message


def test_encode_depth_64_is_accepted() -> None:
    assert _native.encode(deep_tree(64)) == nested(64)


def test_encode_text_string_with_lone_surrogate_raises_encode_error() -> None:
    # A str that is no valid Unicode cannot be UTF-8 encoded: that is an encode error too.
    with pytest.raises(TtlvEncodeError) as info:
        _native.encode((NAME_VALUE, TEXT_STRING, "a\ud800b"))
    assert (info.value.reason, info.value.tag) == ("bad_value", NAME_VALUE)


BIG_INTEGER_EDGES = {
    "-2^63": -(2**63),
    "-2^127": -(2**127),
    "-2^191": -(2**191),
    "-2^63-1": -(2**63) - 1,
    "2^63-1": 2**63 - 1,
    "2^63": 2**63,
    "-128": -128,
    "-129": -129,
    "-1": -1,
    "0": 0,
}


@pytest.mark.parametrize("value", list(BIG_INTEGER_EDGES.values()), ids=list(BIG_INTEGER_EDGES))
def test_kmip_9_1_1_4_big_integer_minimal_sign_extension_round_trips(value: int) -> None:
    # -2^63 is 0x8000000000000000: eight bytes, no extra block of sign extension.
    data = _native.encode((SPEC_TAG, BIG_INTEGER, value))
    magnitude_bits = (value if value >= 0 else ~value).bit_length()
    length = -(-(magnitude_bits + 1) // 64) * 8  # sign bit included, whole 8-byte blocks
    assert data[4:8] == length.to_bytes(4, "big")
    assert data[8:] == value.to_bytes(length, "big", signed=True)
    assert _native.decode(data) == (SPEC_TAG, BIG_INTEGER, value)


def test_encode_accepts_bytearray_and_memoryview_for_byte_string() -> None:
    plain = _native.encode((KEY_MATERIAL, BYTE_STRING, b"\x01\x02\x03"))
    assert _native.encode((KEY_MATERIAL, BYTE_STRING, bytearray(b"\x01\x02\x03"))) == plain
    assert _native.encode((KEY_MATERIAL, BYTE_STRING, memoryview(b"\x01\x02\x03"))) == plain


# ---- hypothesis round trips --------------------------------------------------------------------

tags = st.one_of(st.integers(0x420000, 0x42FFFF), st.integers(0x540000, 0x54FFFF))
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
leaves = st.one_of(
    st.tuples(tags, st.just(INTEGER), i32),
    st.tuples(tags, st.just(LONG_INTEGER), i64),
    st.tuples(tags, st.just(BIG_INTEGER), st.integers(-(2**300), 2**300)),
    st.tuples(tags, st.just(ENUMERATION), u32),
    st.tuples(tags, st.just(BOOLEAN), st.booleans()),
    st.tuples(tags, st.just(TEXT_STRING), st.text(max_size=40)),
    st.tuples(tags, st.just(BYTE_STRING), st.binary(max_size=40)),
    st.tuples(tags, st.just(DATE_TIME), i64),
    st.tuples(tags, st.just(INTERVAL), u32),
    st.tuples(tags, st.just(DATE_TIME_EXTENDED), i64),
)
trees = st.recursive(
    leaves,
    lambda children: st.tuples(tags, st.just(STRUCTURE), st.lists(children, max_size=6)),
    max_leaves=40,
)


def depth(tree: tuple[int, int, Any]) -> int:
    if tree[1] != STRUCTURE:
        return 0
    return 1 + max((depth(c) for c in tree[2]), default=0)


def normalise(tree: tuple[int, int, Any]) -> tuple[int, int, Any]:
    """Structures as lists, as decode returns them."""
    tag, ty, value = tree
    if ty == STRUCTURE:
        return (tag, ty, [normalise(c) for c in value])
    return tree


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_hypothesis_tree_encode_decode_round_trip(tree: tuple[int, int, Any]) -> None:
    assert depth(tree) <= 64
    data = _native.encode(normalise(tree))
    assert len(data) % 8 == 0
    back = _native.decode(data)
    assert back == normalise(tree)
    assert _native.encode(back) == data


def _canonical_or_decode_error(data: bytes) -> None:
    try:
        tree = _native.decode(data)
    except TtlvDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        assert _native.encode(tree) == data


@settings(max_examples=500)
@given(st.binary(max_size=256))
def test_hypothesis_decode_random_bytes_only_raises_decode_error(data: bytes) -> None:
    _canonical_or_decode_error(data)


@settings(max_examples=300)
@given(tags, st.integers(0, 0x0C), st.binary(max_size=128))
def test_hypothesis_decode_random_body_behind_a_header(tag: int, ty: int, body: bytes) -> None:
    _canonical_or_decode_error(header(tag, ty, len(body)) + body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.lists(st.tuples(st.integers(0), st.integers(0, 255)), min_size=1, max_size=3),
       st.integers(0))
def test_hypothesis_mutated_encoding_decodes_canonically_or_raises_decode_error(
    tree: tuple[int, int, Any], edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_native.encode(normalise(tree)))
    for at, byte in edits:
        data[at % len(data)] = byte
    _canonical_or_decode_error(bytes(data[: len(data) - cut % 9]))
