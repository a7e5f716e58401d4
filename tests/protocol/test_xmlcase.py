"""The OASIS KMIP XML test-case loader (KMIP Profiles, XML encoding) and its replay helpers.

Vectors are read from ../shared/conformance; nothing here transcribes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmipfast.protocol.enums import CryptographicUsageMask, ObjectType, Operation, ResultStatus
from kmipfast.protocol.tags import EXTENSION_TAG_RANGE, ItemType, Tag
from kmipfast.protocol.xmlcase import (
    Node,
    Placeholder,
    XmlCaseError,
    bind,
    capture_uids,
    compare,
    load_case,
)

CONFORMANCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance"
OASIS_1X = sorted(
    [p for v in ("v1.0", "v1.3", "v1.4") for p in (CONFORMANCE / "oasis" / v).rglob("*.xml")]
    + list((CONFORMANCE / "oasis-tc").rglob("*.xml"))
)
OASIS_2X = sorted(p for v in ("v2.0", "v2.1") for p in (CONFORMANCE / "oasis" / v).rglob("*.xml"))

# Files that cannot be loaded, with the reason. Every KMIP 1.x file loads.
UNLOADABLE: dict[str, str] = {
    "oasis/v2.0/mandatory/PKCS11-M-1-20.xml": "PKCS#11 Function names (C_Initialize...) "
    "have no numbers in enums.py",
    "oasis/v2.1/mandatory/PKCS11-M-1-21.xml": "PKCS#11 Function names (C_Initialize...) "
    "have no numbers in enums.py",
}


def _rel(path: Path) -> str:
    return path.relative_to(CONFORMANCE).as_posix()


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node[2], list):
        for child in node[2]:
            yield from _walk(child)


def _find(node: Node, tag: int) -> Node:
    return next(n for n in _walk(node) if n[0] == tag)


def test_corpus_is_present() -> None:
    assert len(OASIS_1X) > 300 and len(OASIS_2X) > 100


@pytest.mark.parametrize("path", OASIS_1X + OASIS_2X, ids=_rel)
def test_every_oasis_xml_case_loads_profiles_xml_encoding(path: Path) -> None:
    reason = UNLOADABLE.get(_rel(path))
    if reason is not None:
        with pytest.raises(XmlCaseError):
            load_case(path)
        return
    pairs = load_case(path)
    assert pairs
    # Some files keep old messages inside XML comments; those are not part of the case.
    text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(pairs) == text.count("<RequestMessage") == text.count("<ResponseMessage")
    for request, response in pairs:
        assert request[0] == Tag.RequestMessage and response[0] == Tag.ResponseMessage
        assert request[1] == ItemType.Structure


def test_sklc_m_1_10_create_is_typed() -> None:
    request, response = load_case(CONFORMANCE / "oasis/v1.0/mandatory/SKLC-M-1-10.xml")[0]
    assert _find(request, Tag.Operation)[2] is Operation.Create
    assert _find(request, Tag.ObjectType)[2] is ObjectType.SymmetricKey
    attributes = [n for n in _walk(request) if n[0] == Tag.Attribute]
    by_name = {a[2][0][2]: a[2][1] for a in attributes if isinstance(a[2], list)}
    assert by_name["Cryptographic Usage Mask"] == (
        Tag.AttributeValue,
        ItemType.Integer,
        CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt,
    )
    assert by_name["Cryptographic Length"][2] == 256
    assert _find(response, Tag.ResultStatus)[2] is ResultStatus.Success
    assert _find(response, Tag.UniqueIdentifier)[2] == Placeholder("UNIQUE_IDENTIFIER_0")
    assert isinstance(_find(response, Tag.TimeStamp)[2], int)


def test_attribute_names_with_pdf_spacing_are_collapsed() -> None:
    # SKLC-M-1-10 writes "Cryptographic   Usage Mask" in its Get Attributes request.
    pairs = load_case(CONFORMANCE / "oasis/v1.0/mandatory/SKLC-M-1-10.xml")
    names = [n[2] for req, _ in pairs for n in _walk(req) if n[0] == Tag.AttributeName]
    assert "Cryptographic Usage Mask" in names
    assert all("  " not in str(name) for name in names)


def test_time_lines_are_stripped_from_oasis_tc_files() -> None:
    path = CONFORMANCE / "oasis-tc/v1.0/AKLC_M_1_10_AsymmetricKey_1.xml"
    assert "# TIME" in path.read_text(encoding="utf-8")
    assert len(load_case(path)) == path.read_text(encoding="utf-8").count("<RequestMessage")


def test_tc_71_extension_tag_is_kept_as_a_number() -> None:
    path = CONFORMANCE / (
        "oasis-tc/v1.2/TC_71_12_Unrecognized_Message_Extension_with_Criticality_Indicator_False.xml"
    )
    request, _ = load_case(path)[0]
    extension = _find(request, Tag.VendorExtension)
    assert isinstance(extension[2], list)
    assert extension[2][0][0] in EXTENSION_TAG_RANGE
    assert extension[2][0][1] == ItemType.TextString


def test_values_of_every_item_type(tmp_path: Path) -> None:
    case = tmp_path / "case.xml"
    case.write_text(
        """<KMIP><RequestMessage>
        <BatchCount type="Integer" value="0x10"/>
        <UsageLimitsTotal type="LongInteger" value="-5"/>
        <Modulus type="BigInteger" value="FF"/>
        <PublicExponent type="BigInteger" value="0000000000010001"/>
        <Sensitive type="Boolean" value="true"/>
        <LeaseTime type="Interval" value="3600"/>
        <InitialDate type="DateTime" value="1970-01-02T00:00:00+00:00"/>
        <ActivationDate type="DateTime" value="$NOW-3600"/>
        <IVCounterNonce type="ByteString" value="$IV_COUNTER_NONCE"/>
        <Data type="ByteString" value="00ff"/>
        <OpaqueDataType type="Enumeration" value="0x80000001"/>
        <ResponsePayload/>
        </RequestMessage><ResponseMessage/></KMIP>""",
        encoding="utf-8",
    )
    [(request, _)] = load_case(case)
    assert isinstance(request[2], list)
    values = [node[2] for node in request[2]]
    assert values == [
        16,
        -5,
        -1,
        65537,
        True,
        3600,
        86400,
        Placeholder("NOW", -3600),
        Placeholder("IV_COUNTER_NONCE"),
        b"\x00\xff",
        0x80000001,
        [],
    ]


def test_unknown_element_is_reported_with_the_file(tmp_path: Path) -> None:
    case = tmp_path / "bad.xml"
    case.write_text(
        '<KMIP><RequestMessage><NoSuchTag type="Integer" value="1"/></RequestMessage></KMIP>'
    )
    with pytest.raises(XmlCaseError, match=r"bad\.xml.*NoSuchTag"):
        load_case(case)


def _uid(value: str | Placeholder) -> Node:
    return (Tag.UniqueIdentifier, ItemType.TextString, value)


def test_bind_fills_uids_and_now_and_keeps_wildcards() -> None:
    tree: Node = (
        Tag.RequestPayload,
        ItemType.Structure,
        [
            _uid(Placeholder("UNIQUE_IDENTIFIER_1")),
            _uid(Placeholder("UNIQUE_IDENTIFIER_5")),
            (Tag.ActivationDate, ItemType.DateTime, Placeholder("NOW", -3600)),
            (Tag.IVCounterNonce, ItemType.ByteString, Placeholder("IV_COUNTER_NONCE")),
        ],
    )
    bound = bind(tree, ["a", "b"], now=10_000)
    assert bound[2] == [
        _uid("b"),
        _uid(Placeholder("UNIQUE_IDENTIFIER_5")),
        (Tag.ActivationDate, ItemType.DateTime, 6400),
        (Tag.IVCounterNonce, ItemType.ByteString, Placeholder("IV_COUNTER_NONCE")),
    ]


def _create_key_pair_response(private: str | Placeholder, public: str | Placeholder) -> Node:
    return (
        Tag.ResponsePayload,
        ItemType.Structure,
        [
            (Tag.PrivateKeyUniqueIdentifier, ItemType.TextString, private),
            (Tag.PublicKeyUniqueIdentifier, ItemType.TextString, public),
        ],
    )


def test_capture_uids_records_new_identifiers_in_order() -> None:
    # After Create Key Pair, _0 is the private key and _1 the public key.
    expected = _create_key_pair_response(
        Placeholder("UNIQUE_IDENTIFIER_0"), Placeholder("UNIQUE_IDENTIFIER_1")
    )
    uids: list[str] = []
    capture_uids(expected, _create_key_pair_response("priv", "pub"), uids)
    assert uids == ["priv", "pub"]
    capture_uids(expected, _create_key_pair_response("x", "y"), uids)
    assert uids == ["priv", "pub"]


def test_capture_and_compare_replay_sklc_m_1_10() -> None:
    # A server that answers exactly as recorded, with its own identifier and clock.
    _, expected = load_case(CONFORMANCE / "oasis/v1.0/mandatory/SKLC-M-1-10.xml")[0]
    actual = bind(expected, ["server-uid-1"], now=1_700_000_000)
    actual = _replace(actual, Tag.TimeStamp, 1_700_000_000)
    uids: list[str] = []
    assert any("unbound" in d for d in compare(expected, actual))
    capture_uids(expected, actual, uids)
    assert uids == ["server-uid-1"]
    assert compare(bind(expected, uids, now=0), actual) == []


def _replace(node: Node, tag: int, value: int | str) -> Node:
    if node[0] == tag:
        return (node[0], node[1], value)
    if isinstance(node[2], list):
        return (node[0], node[1], [_replace(child, tag, value) for child in node[2]])
    return node


def test_compare_reports_result_differences() -> None:
    _, expected = load_case(CONFORMANCE / "oasis/v1.0/mandatory/SKLC-M-1-10.xml")[0]
    expected = bind(expected, ["u"], now=0)
    failed = _replace(expected, Tag.ResultStatus, ResultStatus.OperationFailed)
    diffs = compare(expected, failed)
    assert len(diffs) == 1 and "ResultStatus" in diffs[0] and "OperationFailed" in diffs[0]
    assert any(
        "UniqueIdentifier" in d
        for d in compare(expected, _replace(expected, Tag.UniqueIdentifier, "v"))
    )


def test_compare_lenient_and_strict_places() -> None:
    def attribute(name: str, item_type: ItemType, value: int | str | bytes) -> Node:
        return (
            Tag.Attribute,
            ItemType.Structure,
            [
                (Tag.AttributeName, ItemType.TextString, name),
                (Tag.AttributeValue, item_type, value),
            ],
        )

    expected: Node = (
        Tag.ResponsePayload,
        ItemType.Structure,
        [
            attribute("Initial Date", ItemType.DateTime, 100),
            attribute("Cryptographic Length", ItemType.Integer, 256),
            (Tag.IVCounterNonce, ItemType.ByteString, Placeholder("IV_COUNTER_NONCE")),
            (Tag.ResultMessage, ItemType.TextString, "Access denied"),
        ],
    )
    # Attributes in another order, a later Initial Date, any IV, other wording: conforms.
    actual: Node = (
        Tag.ResponsePayload,
        ItemType.Structure,
        [
            attribute("Cryptographic Length", ItemType.Integer, 256),
            attribute("Initial Date", ItemType.DateTime, 999),
            (Tag.IVCounterNonce, ItemType.ByteString, b"\x01" * 16),
            (Tag.ResultMessage, ItemType.TextString, "denied"),
        ],
    )
    assert compare(expected, actual) == []
    assert isinstance(actual[2], list)
    wrong_length = (
        actual[0],
        actual[1],
        [attribute("Cryptographic Length", ItemType.Integer, 128), *actual[2][1:]],
    )
    assert any("Cryptographic Length" in d for d in compare(expected, wrong_length))
    missing = (actual[0], actual[1], actual[2][:1])
    assert sum("missing" in d for d in compare(expected, missing)) == 3


def test_compare_never_shows_byte_strings() -> None:
    secret = bytes(range(32))
    expected: Node = (Tag.KeyMaterial, ItemType.ByteString, secret)
    diffs = compare(expected, (Tag.KeyMaterial, ItemType.ByteString, bytes(32)))
    assert len(diffs) == 1
    assert secret.hex() not in diffs[0] and "32 bytes" in diffs[0]


def _as_server(node: Node) -> Node:
    """The recorded response as a server would send it: placeholders become concrete values."""
    tag, item_type, value = node
    if isinstance(value, list):
        return (tag, item_type, [_as_server(child) for child in value])
    if isinstance(value, Placeholder):
        concrete: dict[ItemType, int | str | bytes] = {
            ItemType.TextString: f"server-{value.name}",
            ItemType.ByteString: value.name.encode(),
            ItemType.DateTime: 1_700_000_000 + value.offset,
        }
        return (tag, item_type, concrete[ItemType(item_type)])
    return node


@pytest.mark.parametrize("path", OASIS_1X, ids=_rel)
def test_replaying_recorded_responses_conforms(path: Path) -> None:
    uids: list[str] = []
    for _, expected in load_case(path):
        actual = _as_server(expected)
        capture_uids(expected, actual, uids)
        assert compare(bind(expected, uids, now=1_700_000_000), actual) == []
