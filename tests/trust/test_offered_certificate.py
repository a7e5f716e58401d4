"""`offered_certificate`: the client certificate read from clear TLS <= 1.2 handshake
records after OpenSSL refused it.  It reads untrusted bytes: anything malformed is None,
never an exception."""

from __future__ import annotations

import os
import struct

import pytest

from kmipfast.tls_openssl import offered_certificate


def record(kind: int, body: bytes) -> bytes:
    return struct.pack(">BHH", kind, 0x0303, len(body)) + body


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def certificate_message(*ders: bytes) -> bytes:
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return handshake(11, len(entries).to_bytes(3, "big") + entries)


def test_certificate_found_across_records() -> None:
    hello = handshake(1, b"\x03\x03" + bytes(40))
    msg = certificate_message(b"LEAF-DER", b"CA-DER")
    flight = hello + msg
    # Split over two records, as a client may fragment its flight.
    data = record(22, flight[:30]) + record(22, flight[30:])
    assert offered_certificate(data) == b"LEAF-DER"


def test_nothing_after_change_cipher_spec_is_read() -> None:
    data = record(20, b"\x01") + record(22, certificate_message(b"HIDDEN"))
    assert offered_certificate(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x16\x03",
        record(22, certificate_message(b"X"))[:-1],  # cut off
        record(22, handshake(11, b"\x00\x00\x09\x00\x00\x09ab")),  # entry longer than body
        record(22, handshake(11, b"\x00\x00\x00")),  # empty chain
        record(23, b"application data"),
    ],
)
def test_malformed_is_none(data: bytes) -> None:
    assert offered_certificate(data) is None


def test_random_bytes_never_raise() -> None:
    for n in range(300):
        blob = os.urandom(n % 97)
        offered_certificate(record(22, blob) + blob)
