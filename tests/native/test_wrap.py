"""AES key wrap (RFC 3394), key wrap with padding (RFC 5649) and tenant master keys, from Python.

The RFC vectors are read from ``tests/vectors``; every vector is also run through pyca/
cryptography's ``keywrap``, an independent implementation, so a wrong vector file fails too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import keywrap
from hypothesis import given, settings
from hypothesis import strategies as st

from kmipfast import _native
from kmipfast.errors import InvalidUnwrap

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"

KEY_MATERIAL = 0x420043
BYTE_STRING = 0x08
STRUCTURE = 0x01


def vectors(name: str) -> list[dict[str, Any]]:
    return json.loads((VECTORS / name).read_text())["vectors"]


RFC3394 = vectors("rfc3394.json")
RFC5649 = vectors("rfc5649.json")


def test_vector_files_hold_every_rfc_vector() -> None:
    assert [v["section"] for v in RFC3394 if v["result"] == "pass"] == [
        "4.1", "4.2", "4.3", "4.4", "4.5", "4.6"
    ]
    assert sum(v["result"] == "pass" for v in RFC5649) == 2
    for v in RFC3394 + RFC5649:
        assert v["result"] in ("pass", "fail")
    assert any("bitflip" in v["id"] for v in RFC3394 + RFC5649)
    assert any("wrongkek" in v["id"] for v in RFC3394 + RFC5649)


# (ours wrap, ours unwrap, pyca wrap, pyca unwrap) per RFC
KW = (
    _native.aes_key_wrap,
    _native.aes_key_unwrap,
    keywrap.aes_key_wrap,
    keywrap.aes_key_unwrap,
)
KWP = (
    _native.aes_key_wrap_with_padding,
    _native.aes_key_unwrap_with_padding,
    keywrap.aes_key_wrap_with_padding,
    keywrap.aes_key_unwrap_with_padding,
)
CASES = [pytest.param(v, KW, id=v["id"]) for v in RFC3394] + [
    pytest.param(v, KWP, id=v["id"]) for v in RFC5649
]


@pytest.mark.parametrize(("vector", "functions"), CASES)
def test_rfc3394_section_4_and_rfc5649_section_6_vectors(
    vector: dict[str, Any], functions: tuple[Any, ...]
) -> None:
    wrap, unwrap, pyca_wrap, pyca_unwrap = functions
    kek = bytes.fromhex(vector["kek"])
    ciphertext = bytes.fromhex(vector["ciphertext"])
    if vector["result"] == "pass":
        plaintext = bytes.fromhex(vector["plaintext"])
        assert wrap(kek, plaintext) == ciphertext
        assert pyca_wrap(kek, plaintext) == ciphertext
        unwrapped = unwrap(kek, ciphertext)
        assert isinstance(unwrapped, bytearray)
        assert unwrapped == plaintext
        assert pyca_unwrap(kek, ciphertext) == plaintext
        # bytearray and memoryview inputs are accepted as well
        assert wrap(bytearray(kek), memoryview(plaintext)) == ciphertext
    else:
        with pytest.raises(InvalidUnwrap):
            unwrap(kek, ciphertext)
        with pytest.raises(keywrap.InvalidUnwrap):
            pyca_unwrap(kek, ciphertext)


@settings(max_examples=200)
@given(
    st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.integers(2, 12).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)),
)
def test_rfc3394_wrap_matches_pyca_for_any_key_and_data(kek: bytes, data: bytes) -> None:
    wrapped = _native.aes_key_wrap(kek, data)
    assert wrapped == keywrap.aes_key_wrap(kek, data)
    assert _native.aes_key_unwrap(kek, wrapped) == data


@settings(max_examples=200)
@given(
    st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.binary(min_size=1, max_size=100),
)
def test_rfc5649_wrap_matches_pyca_for_any_key_and_length(kek: bytes, data: bytes) -> None:
    wrapped = _native.aes_key_wrap_with_padding(kek, data)
    assert wrapped == keywrap.aes_key_wrap_with_padding(kek, data)
    assert len(wrapped) == -(-len(data) // 8) * 8 + 8
    assert _native.aes_key_unwrap_with_padding(kek, wrapped) == data


@pytest.mark.parametrize("kek_len", [0, 8, 15, 17, 31, 33, 64])
def test_rfc3394_2_kek_must_be_an_aes_key(kek_len: int) -> None:
    for wrap in (_native.aes_key_wrap, _native.aes_key_wrap_with_padding):
        with pytest.raises(ValueError, match="16, 24 or 32"):
            wrap(bytes(kek_len), bytes(16))


def test_rfc3394_2_2_and_rfc5649_4_input_lengths_are_value_errors_not_unwrap_failures() -> None:
    kek = bytes(32)
    for n in (0, 8, 15, 17):
        with pytest.raises(ValueError) as info:
            _native.aes_key_wrap(kek, bytes(n))
        assert not isinstance(info.value, InvalidUnwrap)
    for n in (0, 8, 16, 23, 25):
        with pytest.raises(ValueError):
            _native.aes_key_unwrap(kek, bytes(n))
    with pytest.raises(ValueError):
        _native.aes_key_wrap_with_padding(kek, b"")
    for n in (0, 8, 15, 17):
        with pytest.raises(ValueError):
            _native.aes_key_unwrap_with_padding(kek, bytes(n))


def test_rfc5649_3_kw_blob_is_not_a_kwp_blob() -> None:
    kek = bytes(range(32))
    with pytest.raises(InvalidUnwrap):
        _native.aes_key_unwrap_with_padding(kek, _native.aes_key_wrap(kek, bytes(16)))
    with pytest.raises(InvalidUnwrap):
        _native.aes_key_unwrap(kek, _native.aes_key_wrap_with_padding(kek, bytes(16)))


# ---- MasterKey and SealedKey ----------------------------------------------------------------

ROOT_KEY = bytes(range(32))
OBJECT_KEY = bytes(range(100, 132))
BINDING = b"tenant-a/0f1e2d3c"


@pytest.fixture
def master() -> Any:
    return _native.MasterKey.from_bytes(ROOT_KEY)


def test_master_key_seal_open_round_trip(master: Any) -> None:
    blob = master.seal(OBJECT_KEY, BINDING)
    opened = master.open(blob, BINDING)
    assert isinstance(opened, bytearray)
    assert opened == OBJECT_KEY
    assert master.sealed_length(blob, BINDING) == len(OBJECT_KEY)
    generated = _native.MasterKey.generate()
    assert generated.open(generated.seal(b"k", BINDING), BINDING) == b"k"


def test_master_key_seal_is_rfc5649_over_length_binding_key(master: Any) -> None:
    # The documented blob format, checked with an independent RFC 5649 implementation.
    blob = master.seal(OBJECT_KEY, BINDING)
    plain = keywrap.aes_key_unwrap_with_padding(ROOT_KEY, blob)
    assert plain == len(BINDING).to_bytes(2, "big") + BINDING + OBJECT_KEY


@pytest.mark.parametrize(
    "other",
    [b"tenant-a/0f1e2d3d", b"tenant-b/0f1e2d3c", b"tenant-a/0f1e2d3", b"", BINDING + b"0"],
)
def test_master_key_open_with_another_binding_is_invalid_unwrap(master: Any, other: bytes) -> None:
    blob = master.seal(OBJECT_KEY, BINDING)
    with pytest.raises(InvalidUnwrap):
        master.open(blob, other)
    with pytest.raises(InvalidUnwrap):
        master.sealed_length(blob, other)


def test_master_key_open_tampered_or_foreign_blob_is_invalid_unwrap(master: Any) -> None:
    blob = master.seal(OBJECT_KEY, BINDING)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(InvalidUnwrap):
            master.open(bytes(tampered), BINDING)
    with pytest.raises(InvalidUnwrap):
        _native.MasterKey.generate().open(blob, BINDING)


def test_master_key_from_bytes_requires_32_bytes() -> None:
    for n in (0, 16, 24, 31, 33):
        with pytest.raises(ValueError):
            _native.MasterKey.from_bytes(bytes(n))


@pytest.mark.parametrize("length", [1, 7, 16, 32, 33, 64, 1024])
def test_master_key_seal_random_length(master: Any, length: int) -> None:
    blob = master.seal_random(length, BINDING)
    assert len(blob) == -(-(2 + len(BINDING) + length) // 8) * 8 + 8
    assert master.sealed_length(blob, BINDING) == length
    assert len(master.open(blob, BINDING)) == length
    assert master.seal_random(length, BINDING) != blob


@pytest.mark.parametrize("length", [0, 1025])
def test_master_key_seal_random_refuses_bad_length(master: Any, length: int) -> None:
    with pytest.raises(ValueError):
        master.seal_random(length, BINDING)


def test_master_key_reseal_moves_a_key_to_another_master_and_binding(master: Any) -> None:
    target = _native.MasterKey.generate()
    blob = master.seal(OBJECT_KEY, BINDING)
    moved = master.reseal(blob, BINDING, target, b"tenant-b/1")
    assert target.open(moved, b"tenant-b/1") == OBJECT_KEY
    with pytest.raises(InvalidUnwrap):
        master.open(moved, b"tenant-b/1")
    with pytest.raises(InvalidUnwrap):
        master.reseal(blob, b"wrong", target, b"tenant-b/1")


def test_master_key_seal_master_open_master(master: Any) -> None:
    tenant = _native.MasterKey.generate()
    sealed = master.seal_master(tenant, b"tenant-a")
    reopened = master.open_master(sealed, b"tenant-a")
    blob = tenant.seal(OBJECT_KEY, BINDING)
    assert reopened.open(blob, BINDING) == OBJECT_KEY
    with pytest.raises(InvalidUnwrap):
        master.open_master(sealed, b"tenant-b")


def encoded_key(value: Any) -> bytes:
    return _native.encode((0x420040, STRUCTURE, [(KEY_MATERIAL, BYTE_STRING, value)]))


@pytest.mark.parametrize("length", [1, 16, 32, 33, 64])
def test_sealed_key_in_encode_yields_the_bytes_of_the_plaintext(master: Any, length: int) -> None:
    key = bytes(range(length))
    sealed = _native.SealedKey(master, master.seal(key, BINDING), BINDING)
    assert encoded_key(sealed) == encoded_key(key)
    assert _native.decode(encoded_key(sealed))[2][0][2] == key


def test_sealed_key_of_seal_random_encodes_what_open_returns(master: Any) -> None:
    blob = master.seal_random(32, BINDING)
    sealed = _native.SealedKey(master, blob, BINDING)
    assert encoded_key(sealed) == encoded_key(bytes(master.open(blob, BINDING)))


def test_sealed_key_with_wrong_binding_fails_encode(master: Any) -> None:
    sealed = _native.SealedKey(master, master.seal(OBJECT_KEY, BINDING), b"other")
    with pytest.raises(InvalidUnwrap):
        encoded_key(sealed)


def test_master_key_wipe_then_use_is_invalid_unwrap(master: Any) -> None:
    blob = master.seal(OBJECT_KEY, BINDING)
    sealed = _native.SealedKey(master, blob, BINDING)
    assert not master.wiped
    master.wipe()
    assert master.wiped
    with pytest.raises(InvalidUnwrap):
        master.open(blob, BINDING)
    with pytest.raises(InvalidUnwrap):
        master.seal(OBJECT_KEY, BINDING)
    with pytest.raises(InvalidUnwrap):
        master.seal_random(32, BINDING)
    with pytest.raises(InvalidUnwrap):
        master.sealed_length(blob, BINDING)
    with pytest.raises(InvalidUnwrap):
        encoded_key(sealed)
    with pytest.raises(InvalidUnwrap):
        _native.MasterKey.generate().seal_master(master, b"x")
    master.wipe()  # idempotent
    assert master.wiped


def test_repr_hides_key_material(master: Any) -> None:
    blob = master.seal(OBJECT_KEY, BINDING)
    sealed = _native.SealedKey(master, blob, BINDING)
    for obj in (master, sealed):
        for text in (repr(obj), str(obj)):
            assert "hidden" in text
            for secret in (ROOT_KEY, OBJECT_KEY, blob):
                assert secret.hex() not in text.lower()
                assert repr(secret)[2:20] not in text
