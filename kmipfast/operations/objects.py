"""Managed Cryptographic Objects (KMIP 1.4 §2.2): how each kind is sealed and served.

Two layouts, recorded in ``obj.meta["layout"]``:

- ``key``: Symmetric Keys and Secret Data in Raw/Opaque/Transparent Symmetric Key
  format.  Only the key bytes are sealed; the Key Block around them is rebuilt from
  the meta data on Get, in whichever of Raw or Transparent Symmetric Key the client
  asks for.  Create seals a key generated inside native code, so its plaintext never
  exists in Python.
- ``item``: everything else (certificates, public/private keys in any format, opaque
  objects, keys registered already wrapped).  The whole object item is encoded and
  sealed, and served back byte for byte.

On Get the sealed bytes go out through :class:`kmipfast._native.SealedKey`, opened
straight into the encoded response.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kmipfast import _native
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import (
    CryptographicAlgorithm,
    HashingAlgorithm,
    KeyFormatType,
    ObjectType,
    ResultReason,
)
from kmipfast.protocol.errors import KmipError, invalid_field
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject, generation_of

T_KEY_BLOCK = int(Tag.KeyBlock)
T_KEY_FORMAT_TYPE = int(Tag.KeyFormatType)
T_KEY_COMPRESSION_TYPE = int(Tag.KeyCompressionType)
T_KEY_VALUE = int(Tag.KeyValue)
T_KEY_MATERIAL = int(Tag.KeyMaterial)
T_KEY = int(Tag.Key)
T_ALGORITHM = int(Tag.CryptographicAlgorithm)
T_LENGTH = int(Tag.CryptographicLength)
T_WRAPPING_DATA = int(Tag.KeyWrappingData)
T_SECRET_DATA_TYPE = int(Tag.SecretDataType)

OBJECT_TAGS: dict[int, int] = {
    ObjectType.Certificate: int(Tag.Certificate),
    ObjectType.SymmetricKey: int(Tag.SymmetricKey),
    ObjectType.PublicKey: int(Tag.PublicKey),
    ObjectType.PrivateKey: int(Tag.PrivateKey),
    ObjectType.SplitKey: int(Tag.SplitKey),
    ObjectType.SecretData: int(Tag.SecretData),
    ObjectType.OpaqueObject: int(Tag.OpaqueObject),
    ObjectType.PGPKey: int(Tag.PGPKey),
    ObjectType.Template: int(Tag.Template),
}

# Key sizes (bits -> bytes) a Create may ask for, per algorithm (Symmetric Key Foundry).
_HMAC = frozenset(range(8, 4097, 8))
CREATE_LENGTHS: dict[int, frozenset[int]] = {
    CryptographicAlgorithm.AES: frozenset({128, 192, 256}),
    CryptographicAlgorithm.DES3: frozenset({112, 168, 192}),
    CryptographicAlgorithm.DES: frozenset({56, 64}),
    CryptographicAlgorithm.Camellia: frozenset({128, 192, 256}),
    CryptographicAlgorithm.Blowfish: frozenset(range(32, 449, 8)),
    CryptographicAlgorithm.HMAC_SHA1: _HMAC,
    CryptographicAlgorithm.HMAC_SHA224: _HMAC,
    CryptographicAlgorithm.HMAC_SHA256: _HMAC,
    CryptographicAlgorithm.HMAC_SHA384: _HMAC,
    CryptographicAlgorithm.HMAC_SHA512: _HMAC,
    CryptographicAlgorithm.HMAC_MD5: _HMAC,
}
CREATE_LENGTHS[CryptographicAlgorithm.SKIPJACK] = frozenset({80})
for _name in ("ChaCha20", "ChaCha20Poly1305", "TWOFISH", "ARIA", "SEED", "SM4"):
    if hasattr(CryptographicAlgorithm, _name):
        CREATE_LENGTHS[getattr(CryptographicAlgorithm, _name)] = (
            frozenset({256}) if _name.startswith("ChaCha") else frozenset({128, 192, 256})
        )


def key_bytes_for(algorithm: int, length: int) -> int:
    """Bytes of key material for a Create of ``algorithm``/``length`` bits."""
    allowed = CREATE_LENGTHS.get(algorithm)
    if allowed is None:
        raise invalid_field(f"cannot create a symmetric key for algorithm {_alg(algorithm)}")
    if length not in allowed:
        raise invalid_field(f"Cryptographic Length {length} is not valid for {_alg(algorithm)}")
    if algorithm == CryptographicAlgorithm.DES3:
        return 16 if length == 112 else 24
    if algorithm == CryptographicAlgorithm.DES:
        return 8
    return length // 8


def _alg(value: int) -> str:
    try:
        return CryptographicAlgorithm(value).name
    except ValueError:
        return f"0x{value:08X}"


def digest_value(hash_value: bytes, key_format: int) -> Item:
    """A Digest attribute value (§3.17): SHA-256 over the key material as registered."""
    return ttlv.struct(
        Tag.AttributeValue,
        ttlv.enum(Tag.HashingAlgorithm, HashingAlgorithm.SHA_256),
        ttlv.byte_string(Tag.DigestValue, hash_value),
        ttlv.enum(Tag.KeyFormatType, key_format),
    )


def seal_generated(
    obj: ManagedObject, sealer: tuple[int, _native.MasterKey], algorithm: int, length: int
) -> None:
    """Create: a random key generated and sealed natively under master key generation
    ``sealer[0]``."""
    gen, master = sealer
    nbytes = key_bytes_for(algorithm, length)
    obj.key_blob = master.seal_random(nbytes, obj.binding)
    obj.meta = {
        "layout": "key",
        "format": int(KeyFormatType.Raw),
        "algorithm": algorithm,
        "length": length,
        "tmk": gen,
    }
    obj.attributes["Digest"] = [
        digest_value(master.digest(obj.key_blob, obj.binding), KeyFormatType.Raw)
    ]


def seal_registered(
    obj: ManagedObject, sealer: tuple[int, _native.MasterKey], item: Item
) -> dict[str, Any]:
    """Register: seals the object item a client sent.  Returns the attributes found in
    its Key Block (algorithm, length) for the caller to record."""
    gen, master = sealer
    found: dict[str, Any] = {}
    block = ttlv.find(item, T_KEY_BLOCK)
    fmt = ttlv.value(block, T_KEY_FORMAT_TYPE)
    key_value = ttlv.find(block, T_KEY_VALUE)
    material = (
        ttlv.find(key_value, T_KEY_MATERIAL)
        if key_value is not None and key_value[1] == ttlv.STRUCTURE
        else None
    )
    wrapped = ttlv.find(block, T_WRAPPING_DATA) is not None
    if block is not None:
        alg, length = ttlv.value(block, T_ALGORITHM), ttlv.value(block, T_LENGTH)
        if alg is not None:
            found["Cryptographic Algorithm"] = (ttlv.ENUMERATION, alg)
        if length is not None:
            found["Cryptographic Length"] = (ttlv.INTEGER, length)
        if fmt is None:
            raise invalid_field("Key Block has no Key Format Type")
        if key_value is None:
            raise invalid_field("Key Block has no Key Value")
    if obj.object_type == ObjectType.SecretData and ttlv.find(item, T_SECRET_DATA_TYPE) is None:
        raise invalid_field("Secret Data needs a Secret Data Type")
    raw = _raw_key(obj.object_type, fmt, material, wrapped)
    if raw is not None:
        obj.key_blob = master.seal(raw, obj.binding)
        obj.meta = {
            "layout": "key",
            "format": int(fmt),
            "algorithm": found.get("Cryptographic Algorithm", (0, None))[1],
            "length": found.get("Cryptographic Length", (0, None))[1],
        }
        if obj.object_type == ObjectType.SecretData:
            obj.meta["secret_type"] = ttlv.value(item, T_SECRET_DATA_TYPE)
        digest_source: bytes | None = raw
    else:
        encoded = _native.encode(item)
        obj.key_blob = master.seal(encoded, obj.binding)
        obj.meta = {"layout": "item", "format": None if fmt is None else int(fmt)}
        digest_source = _digest_source(item, material)
    obj.meta["tmk"] = gen
    if not wrapped and digest_source is not None:
        obj.attributes["Digest"] = [
            digest_value(
                hashlib.sha256(digest_source).digest(),
                int(fmt) if fmt is not None else KeyFormatType.Raw,
            )
        ]
    return found


def _raw_key(
    object_type: int, fmt: int | None, material: Item | None, wrapped: bool
) -> bytes | None:
    """The bare key bytes when the object can use the ``key`` layout."""
    if (
        wrapped
        or material is None
        or object_type not in (ObjectType.SymmetricKey, ObjectType.SecretData)
    ):
        return None
    if fmt in (KeyFormatType.Raw, KeyFormatType.Opaque) and material[1] == ttlv.BYTE_STRING:
        return bytes(material[2])
    if fmt == KeyFormatType.TransparentSymmetricKey and material[1] == ttlv.STRUCTURE:
        key = ttlv.value(material, T_KEY)
        if isinstance(key, bytes):
            return key
    return None


def _digest_source(item: Item, material: Item | None) -> bytes | None:
    if material is not None and material[1] == ttlv.BYTE_STRING:
        return bytes(material[2])
    for tag in (int(Tag.CertificateValue), int(Tag.OpaqueDataValue)):
        value = ttlv.value(item, tag)
        if isinstance(value, bytes):
            return value
    return None


def generation(obj: ManagedObject) -> int:
    """The tenant master key generation an object's key is sealed under."""
    return generation_of(obj.meta)


def object_item(
    obj: ManagedObject, master: _native.MasterKey | None, requested_format: int | None
) -> Item:
    """The object as a Get returns it, with the key opened straight into the encoder."""
    tag = OBJECT_TAGS[obj.object_type]
    if obj.meta.get("layout") == "template":
        content = [_native.decode(bytes.fromhex(a)) for a in obj.meta.get("template", [])]
        return ttlv.struct_of(tag, content)
    if obj.key_blob is None:
        raise KmipError(
            ResultReason.ItemNotFound, f"object {obj.uid} has no key material (destroyed)"
        )
    # The blob is opened (integrity and binding checked) only while the response is
    # encoded; a failure there becomes this item's Cryptographic Failure (processor.py).
    assert master is not None
    meta = obj.meta
    if meta.get("layout") == "item":
        if requested_format is not None and requested_format != meta.get("format"):
            raise KmipError(
                ResultReason.KeyFormatTypeNotSupported,
                "this object is served only in the format it was registered in",
            )
        return (
            tag,
            ttlv.STRUCTURE,
            _native.SealedKey(master, obj.key_blob, obj.binding, item=True),
        )
    stored = meta.get("format", KeyFormatType.Raw)
    fmt = stored if requested_format is None else requested_format
    sealed = _native.SealedKey(master, obj.key_blob, obj.binding)
    if fmt in (KeyFormatType.Raw, KeyFormatType.Opaque) and fmt in (stored, KeyFormatType.Raw):
        material: Item = ttlv.byte_string(T_KEY_MATERIAL, sealed)
    elif (
        fmt == KeyFormatType.TransparentSymmetricKey and obj.object_type == ObjectType.SymmetricKey
    ):
        material = ttlv.struct(T_KEY_MATERIAL, ttlv.byte_string(T_KEY, sealed))
    else:
        raise KmipError(
            ResultReason.KeyFormatTypeNotSupported,
            f"key format {_fmt(fmt)} is not available for this object",
        )
    block = ttlv.struct(
        T_KEY_BLOCK,
        ttlv.enum(T_KEY_FORMAT_TYPE, fmt),
        ttlv.struct(T_KEY_VALUE, material),
        None if meta.get("algorithm") is None else ttlv.enum(T_ALGORITHM, meta["algorithm"]),
        None if meta.get("length") is None else ttlv.integer(T_LENGTH, meta["length"]),
    )
    if obj.object_type == ObjectType.SecretData:
        return ttlv.struct(tag, ttlv.enum(T_SECRET_DATA_TYPE, meta.get("secret_type") or 1), block)
    return ttlv.struct(tag, block)


def _fmt(value: int) -> str:
    try:
        return KeyFormatType(value).name
    except ValueError:
        return f"0x{value:08X}"
