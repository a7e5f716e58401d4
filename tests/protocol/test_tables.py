"""Tag, item type and enumeration tables against the KMIP specification's numbers.

Spot checks name the section of KMIP 1.4 they come from; the exhaustive check is
that every element name and symbolic value of the OASIS XML corpus resolves, which
test_xmlcase.py does by loading every file.
"""

from __future__ import annotations

import enum

import pytest

from kmipfast.protocol.enums import (
    ATTRIBUTE_TYPES,
    ENUM_FOR_TAG,
    MASK_FOR_TAG,
    BatchErrorContinuationOption,
    CryptographicAlgorithm,
    CryptographicUsageMask,
    KeyFormatType,
    NameType,
    ObjectType,
    Operation,
    PaddingMethod,
    QueryFunction,
    ResultReason,
    ResultStatus,
    RevocationReasonCode,
    State,
    StorageStatusMask,
    member,
    parse_mask,
)
from kmipfast.protocol.tags import EXTENSION_TAG_RANGE, ItemType, Tag


@pytest.mark.parametrize(
    ("tag", "number"),
    [
        (Tag.ActivationDate, 0x420001),
        (Tag.AttributeName, 0x42000A),
        (Tag.AttributeValue, 0x42000B),
        (Tag.BatchItem, 0x42000F),
        (Tag.CryptographicUsageMask, 0x42002C),
        (Tag.Operation, 0x42005C),
        (Tag.ProtocolVersionMajor, 0x42006A),
        (Tag.RequestMessage, 0x420078),
        (Tag.ResponseMessage, 0x42007B),
        (Tag.UniqueIdentifier, 0x420094),
        (Tag.ReplaceExisting, 0x420124),
        (Tag.Attributes, 0x420125),
    ],
)
def test_tag_values_kmip_9_1_3_1(tag: Tag, number: int) -> None:
    assert tag == number


def test_tags_are_unique_and_in_the_kmip_range_9_1_3_1() -> None:
    # An IntEnum silently turns a duplicated number into an alias: catch that.
    assert len(Tag.__members__) == len(list(Tag))
    assert all(0x420001 <= t <= 0x42FFFF for t in Tag)
    assert not any(t in EXTENSION_TAG_RANGE for t in Tag)
    # KMIP 1.0-1.4 leave no gap between 0x420001 and Replace Existing.
    assert all(n in Tag._value2member_map_ for n in range(0x420001, Tag.ReplaceExisting + 1))


def test_item_types_kmip_9_1_1_3() -> None:
    assert [t.value for t in ItemType] == list(range(1, 12))
    assert ItemType.Structure.value == 0x01 and ItemType.Interval.value == 0x0A


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (Operation.Create, 0x01),
        (Operation.Locate, 0x08),
        (Operation.GetAttributes, 0x0B),
        (Operation.Query, 0x18),
        (Operation.DiscoverVersions, 0x1E),
        (ObjectType.SymmetricKey, 0x02),
        (ObjectType.PrivateKey, 0x04),
        (CryptographicAlgorithm.AES, 0x03),
        (CryptographicAlgorithm.RSA, 0x04),
        (ResultStatus.OperationFailed, 0x01),
        (ResultReason.ItemNotFound, 0x01),
        (ResultReason.GeneralFailure, 0x100),
        (State.PreActive, 0x01),
        (State.DestroyedCompromised, 0x06),
        (NameType.UninterpretedTextString, 0x01),
        (KeyFormatType.Raw, 0x01),
        (KeyFormatType.TransparentSymmetricKey, 0x07),
        (RevocationReasonCode.KeyCompromise, 0x02),
        (BatchErrorContinuationOption.Stop, 0x02),
        (QueryFunction.QueryOperations, 0x01),
    ],
)
def test_enumeration_values_kmip_9_1_3_2(value: enum.IntEnum, number: int) -> None:
    assert value == number


def test_mask_values_kmip_9_1_3_3() -> None:
    assert CryptographicUsageMask.Sign.value == 0x01
    assert CryptographicUsageMask.Encrypt.value == 0x04
    assert CryptographicUsageMask.Decrypt.value == 0x08
    assert CryptographicUsageMask.WrapKey.value == 0x10
    assert StorageStatusMask.OnLineStorage.value == 0x01
    assert StorageStatusMask.ArchivalStorage.value == 0x02


def test_enum_for_tag_maps_enumeration_tags_kmip_9_1_3_2() -> None:
    assert ENUM_FOR_TAG[Tag.Operation] is Operation
    assert ENUM_FOR_TAG[Tag.ObjectType] is ObjectType
    assert ENUM_FOR_TAG[Tag.MaskGeneratorHashingAlgorithm] is ENUM_FOR_TAG[Tag.HashingAlgorithm]
    assert Tag.AttributeValue not in ENUM_FOR_TAG
    assert Tag.CryptographicUsageMask not in ENUM_FOR_TAG
    assert all(isinstance(t, Tag) for t in ENUM_FOR_TAG)
    assert set(MASK_FOR_TAG) >= {Tag.CryptographicUsageMask, Tag.StorageStatusMask}


def test_attribute_types_kmip_3() -> None:
    assert ATTRIBUTE_TYPES["Cryptographic Algorithm"] == (
        Tag.CryptographicAlgorithm,
        ItemType.Enumeration,
    )
    assert ATTRIBUTE_TYPES["Name"] == (Tag.Name, ItemType.Structure)
    assert ATTRIBUTE_TYPES["Cryptographic Usage Mask"] == (
        Tag.CryptographicUsageMask,
        ItemType.Integer,
    )
    assert ATTRIBUTE_TYPES["Lease Time"][1] is ItemType.Interval
    # Every enumeration-typed attribute has a class to resolve its XML values.
    for name, (tag, item_type) in ATTRIBUTE_TYPES.items():
        if item_type is ItemType.Enumeration:
            assert tag in ENUM_FOR_TAG, name


def test_member_lookup_of_keyword_names_profiles_5_4_1_1() -> None:
    # "None" cannot be a Python attribute name; the XML spelling still resolves.
    assert member(PaddingMethod, "None") is PaddingMethod.None_
    assert member(Operation, "DiscoverVersions") is Operation.DiscoverVersions
    with pytest.raises(KeyError):
        member(Operation, "NoSuchOperation")


@pytest.mark.parametrize(
    "text", ["Encrypt Decrypt", "Encrypt|Decrypt", " Decrypt   Encrypt ", "0x0000000C", "12"]
)
def test_parse_mask_spellings_of_the_xml_profile(text: str) -> None:
    assert (
        parse_mask(CryptographicUsageMask, text)
        == CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt
    )


def test_parse_mask_rejects_unknown_flag() -> None:
    with pytest.raises(KeyError):
        parse_mask(CryptographicUsageMask, "Encrypt Teleport")
    with pytest.raises(ValueError):
        parse_mask(CryptographicUsageMask, "  ")
