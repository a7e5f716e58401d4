"""A small blocking KMIP client for live-server tests: mTLS, TTLV framing, trees in and out.

It speaks exactly what the tests need and nothing more: ``connect`` opens a verified
TLS 1.2+ session, :meth:`Conn.roundtrip` sends one whole message and reads one whole
response (8-byte header, then exactly the declared length), :meth:`Conn.request` does
the same with trees (``kmipfast._native`` encodes and decodes). :func:`request_message`
and :class:`Result` build and read the common shapes; ``Conn.call`` is one operation
in one message. Nothing here prints values, which may be key material.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kmipfast import _native
from kmipfast.protocol.enums import (
    CryptographicAlgorithm,
    KeyFormatType,
    NameType,
    ObjectType,
    Operation,
    ResultReason,
    ResultStatus,
    SecretDataType,
)
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import Item, find, find_all, integer, struct_of, value

HEADER = struct.Struct(">3sBI")  # tag, item type, length
# A response is never bigger than this in the tests; a larger declared length is a bug.
MAX_RESPONSE = 64 * 1024 * 1024


class ConnectionClosed(Exception):
    """The server closed the connection (EOF, reset, or TLS close) before a whole message."""


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """TLS 1.2+ client context that verifies the server against ``ca`` and presents ``cert``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def connect(
    host: str,
    port: int,
    cert: str,
    key: str,
    ca: str,
    *,
    timeout: float = 15.0,
    server_hostname: str = "localhost",
) -> Conn:
    """Open a TCP connection and complete the mTLS handshake (raises on refusal)."""
    ctx = client_context(cert, key, ca)
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise
    return Conn(tls)


class Conn:
    """One TLS session to the server. Not thread-safe: one conversation at a time."""

    def __init__(self, sock: ssl.SSLSocket | socket.socket) -> None:
        self.sock = sock

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    # -- bytes ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        chunks: list[bytes] = []
        remaining = n
        while remaining:
            try:
                chunk = self.sock.recv(min(remaining, 1 << 20))
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
                raise ConnectionClosed(f"connection lost: {exc!r}") from None
            except ssl.SSLError as exc:
                # A TLS alert from the server (e.g. certificate revoked/unknown) ends the session.
                raise ConnectionClosed(f"TLS error: {exc!r}") from None
            if not chunk:
                got = n - remaining
                raise ConnectionClosed(f"EOF after {got} of {n} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def recv_message(self) -> bytes:
        """Read one whole TTLV message: the 8-byte header, then exactly its length."""
        header = self._recv_exact(HEADER.size)
        _tag, _type, length = HEADER.unpack(header)
        if length > MAX_RESPONSE:
            raise AssertionError(f"server declared a {length}-byte response")
        return header + self._recv_exact(length)

    def roundtrip(self, request: bytes) -> bytes:
        self.send(request)
        return self.recv_message()

    def wait_closed(self, timeout: float) -> bool:
        """True if the server closes the connection within ``timeout`` seconds (EOF or
        reset, with no message in between); False if it is still open then."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except TimeoutError:
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(old)
        if data:
            raise AssertionError("server sent data where it should have closed")
        return True

    # -- trees ----------------------------------------------------------------

    def request(self, tree: Item) -> Item:
        return _native.decode(self.roundtrip(_native.encode(tree)))

    def call(
        self,
        operation: Operation,
        payload: Iterable[Item] = (),
        *,
        version: tuple[int, int] = (1, 4),
    ) -> Result:
        """One operation in its own message; returns its (only) batch item result."""
        response = self.request(request_message([(operation, list(payload))], version=version))
        results = batch_results(response)
        if len(results) != 1:
            raise AssertionError(f"expected 1 batch item, got {len(results)}")
        return results[0]

    def ok(
        self,
        operation: Operation,
        payload: Iterable[Item] = (),
        *,
        version: tuple[int, int] = (1, 4),
    ) -> Item:
        """:meth:`call` that must succeed; returns the response payload."""
        result = self.call(operation, payload, version=version)
        result.expect_success()
        return result.payload if result.payload is not None else (Tag.ResponsePayload, 1, [])


# ---------------------------------------------------------------------------
# Message shapes


def protocol_version(major: int, minor: int) -> Item:
    return struct_of(
        Tag.ProtocolVersion,
        [integer(Tag.ProtocolVersionMajor, major), integer(Tag.ProtocolVersionMinor, minor)],
    )


def request_message(
    items: Sequence[tuple[Operation, list[Item]]],
    *,
    version: tuple[int, int] = (1, 4),
    header_extra: Sequence[Item] = (),
) -> Item:
    """A Request Message with one batch item per (operation, payload children)."""
    header = struct_of(
        Tag.RequestHeader,
        [protocol_version(*version), *header_extra, integer(Tag.BatchCount, len(items))],
    )
    batch = [
        struct_of(
            Tag.BatchItem,
            [
                (int(Tag.Operation), int(ItemType.Enumeration), int(op)),
                struct_of(Tag.RequestPayload, payload),
            ],
        )
        for op, payload in items
    ]
    return struct_of(Tag.RequestMessage, [header, *batch])


@dataclass
class Result:
    operation: int | None
    status: int
    reason: int | None
    message: str | None
    payload: Item | None

    @property
    def success(self) -> bool:
        return self.status == ResultStatus.Success

    def describe(self) -> str:
        status = _name(ResultStatus, self.status)
        reason = _name(ResultReason, self.reason) if self.reason is not None else "-"
        return f"{status}/{reason}: {self.message!r}"

    def expect_success(self) -> None:
        if not self.success:
            raise AssertionError(f"operation failed: {self.describe()}")

    def expect_failure(self, reason: ResultReason) -> None:
        if self.success or self.reason != reason:
            raise AssertionError(f"expected OperationFailed/{reason.name}, got {self.describe()}")


def _name(cls: Any, number: int | None) -> str:
    try:
        return str(cls(number).name)
    except ValueError:
        return f"{number:#x}" if isinstance(number, int) else str(number)


def response_header(response: Item) -> Item | None:
    return find(response, Tag.ResponseHeader)


def response_version(response: Item) -> tuple[int, int]:
    pv = find(response_header(response), Tag.ProtocolVersion)
    return (value(pv, Tag.ProtocolVersionMajor), value(pv, Tag.ProtocolVersionMinor))


def batch_results(response: Item) -> list[Result]:
    if response[0] != Tag.ResponseMessage:
        raise AssertionError(f"not a Response Message: tag {response[0]:#x}")
    return [
        Result(
            operation=value(item, Tag.Operation),
            status=value(item, Tag.ResultStatus),
            reason=value(item, Tag.ResultReason),
            message=value(item, Tag.ResultMessage),
            payload=find(item, Tag.ResponsePayload),
        )
        for item in find_all(response, Tag.BatchItem)
    ]


def attribute(name: str, attr_value: Item) -> Item:
    """An Attribute structure; ``attr_value`` is a node whose tag is replaced by Attribute Value."""
    _tag, typ, val = attr_value
    return struct_of(
        Tag.Attribute,
        [
            (int(Tag.AttributeName), int(ItemType.TextString), name),
            (int(Tag.AttributeValue), typ, val),
        ],
    )


def attributes_of(payload: Item | None) -> dict[str, list[Any]]:
    """Attribute name -> values (in order) of the Attribute children of a payload."""
    out: dict[str, list[Any]] = {}
    for attr in find_all(payload, Tag.Attribute):
        name = value(attr, Tag.AttributeName)
        out.setdefault(name, []).append(value(attr, Tag.AttributeValue))
    return out


# ---------------------------------------------------------------------------
# Payloads the tests send often


def _enum(tag: int, number: int) -> Item:
    return (int(tag), int(ItemType.Enumeration), int(number))


def _text(tag: int, s: str) -> Item:
    return (int(tag), int(ItemType.TextString), s)


def uid_payload(uid: str) -> list[Item]:
    return [_text(Tag.UniqueIdentifier, uid)]


def name_attribute(name: str) -> Item:
    return attribute(
        "Name",
        struct_of(
            Tag.AttributeValue,
            [_text(Tag.NameValue, name), _enum(Tag.NameType, NameType.UninterpretedTextString)],
        ),
    )


def create_aes_payload(length: int = 256, name: str | None = None) -> list[Item]:
    """Create (KMIP 1.x §4.1) of an AES key, usage Encrypt|Decrypt, as vCenter asks."""
    attrs = [
        attribute("Cryptographic Algorithm", _enum(0, CryptographicAlgorithm.AES)),
        attribute("Cryptographic Length", integer(0, length)),
        attribute("Cryptographic Usage Mask", integer(0, 12)),
    ]
    if name is not None:
        attrs.append(name_attribute(name))
    return [
        _enum(Tag.ObjectType, ObjectType.SymmetricKey),
        struct_of(Tag.TemplateAttribute, attrs),
    ]


def register_aes_payload(material: bytes, name: str | None = None) -> list[Item]:
    """Register (KMIP 1.x §4.3) of a raw AES key with the given bytes."""
    attrs = [attribute("Cryptographic Usage Mask", integer(0, 12))]
    if name is not None:
        attrs.append(name_attribute(name))
    block = struct_of(
        Tag.KeyBlock,
        [
            _enum(Tag.KeyFormatType, KeyFormatType.Raw),
            struct_of(Tag.KeyValue, [(int(Tag.KeyMaterial), int(ItemType.ByteString), material)]),
            _enum(Tag.CryptographicAlgorithm, CryptographicAlgorithm.AES),
            integer(Tag.CryptographicLength, len(material) * 8),
        ],
    )
    return [
        _enum(Tag.ObjectType, ObjectType.SymmetricKey),
        struct_of(Tag.TemplateAttribute, attrs),
        struct_of(Tag.SymmetricKey, [block]),
    ]


def register_secret_payload(material: bytes) -> list[Item]:
    """Register of Secret Data (a password) with the given bytes."""
    block = struct_of(
        Tag.KeyBlock,
        [
            _enum(Tag.KeyFormatType, KeyFormatType.Opaque),
            struct_of(Tag.KeyValue, [(int(Tag.KeyMaterial), int(ItemType.ByteString), material)]),
        ],
    )
    return [
        _enum(Tag.ObjectType, ObjectType.SecretData),
        struct_of(Tag.TemplateAttribute, [attribute("Cryptographic Usage Mask", integer(0, 0))]),
        struct_of(Tag.SecretData, [_enum(Tag.SecretDataType, SecretDataType.Password), block]),
    ]


def key_material(get_payload: Item) -> bytes | None:
    """The Key Material of a Get response payload (Symmetric Key or Secret Data)."""
    for object_tag in (Tag.SymmetricKey, Tag.SecretData, Tag.PrivateKey, Tag.PublicKey):
        obj = find(get_payload, object_tag)
        if obj is not None:
            material = value(find(find(obj, Tag.KeyBlock), Tag.KeyValue), Tag.KeyMaterial)
            return material if isinstance(material, bytes) else None
    return None
