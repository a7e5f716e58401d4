"""The native module: TTLV codec, AES key wrap, master keys and the HSM.

The TTLV tree
-------------
A decoded item is a tuple ``(tag, type, value)``:

- ``tag``: the 3-byte tag as an int (``0x420078`` is Request Message);
- ``type``: the item type byte, 0x01 Structure, 0x02 Integer, 0x03 Long Integer,
  0x04 Big Integer, 0x05 Enumeration, 0x06 Boolean, 0x07 Text String, 0x08 Byte String,
  0x09 Date-Time, 0x0A Interval, 0x0B Date-Time Extended;
- ``value``: a ``list`` of child items for a Structure; ``int`` for Integer (32-bit
  signed), Long Integer (64-bit signed), Big Integer (any size), Enumeration and
  Interval (32-bit unsigned), Date-Time (POSIX seconds) and Date-Time Extended
  (POSIX microseconds); ``bool``; ``str``; ``bytes``.

Tuples and lists are what CPython builds and indexes fastest, and a whole message
crosses the boundary in one call each way.  ``encode`` also accepts ``bytearray`` or
``memoryview`` for a Byte String, and a :class:`SealedKey`, whose key is unwrapped
straight into the output buffer so Python never holds it.

Decoding is strict (KMIP 1.4 §9.1): fixed lengths, zero padding, children exactly
filling their parent, UTF-8, Booleans 0 or 1, known types, tags in 0x42xxxx/0x54xxxx,
canonical Big Integers, depth and size caps.  Failures raise
:class:`kmipfast.errors.TtlvDecodeError` with ``reason``, ``offset`` and ``tag``.
Encoding is canonical, so what decodes re-encodes byte for byte.
"""

from typing import Final, TypeAlias, Union, final

from kmipfast.errors import TlsError as TlsError
from kmipfast.errors import TtlvDecodeError as TtlvDecodeError
from kmipfast.errors import TtlvEncodeError as TtlvEncodeError

__version__: Final[str]
__all__ = [
    "Hsm",
    "MasterKey",
    "SealedKey",
    "TlsConfig",
    "TlsSession",
    "__version__",
    "aes_key_unwrap",
    "aes_key_unwrap_with_padding",
    "aes_key_wrap",
    "aes_key_wrap_with_padding",
    "decode",
    "encode",
    "frame_length",
    "peek_client_hello",
    "read_header",
]

Value: TypeAlias = Union[list["Item"], int, bool, str, bytes, bytearray, memoryview, "SealedKey"]
Item: TypeAlias = tuple[int, int, Value]
Buffer: TypeAlias = bytes | bytearray | memoryview

def decode(
    buf: Buffer,
    *,
    max_message_size: int = ...,
    max_field_size: int = ...,
    max_depth: int = ...,
) -> Item:
    """Decode one TTLV item that spans all of ``buf``; raises TtlvDecodeError."""

def encode(item: Item, *, max_field_size: int = ...) -> bytes:
    """Encode a tree canonically; raises TtlvEncodeError (or InvalidUnwrap for a
    SealedKey that fails to open)."""

def read_header(buf: Buffer) -> tuple[int, int, int] | None:
    """``(tag, type, length)`` of the item starting ``buf``; None before 8 bytes."""

def frame_length(buf: Buffer, max_message_size: int = ...) -> int | None:
    """Whole size of the message starting ``buf`` (header included), None before 8
    bytes; raises TtlvDecodeError if it is not a Structure, has a tag outside the KMIP
    ranges, or declares more than ``max_message_size`` (checked before buffering)."""

def aes_key_wrap(wrapping_key: Buffer, key_to_wrap: Buffer) -> bytes:
    """RFC 3394 AES Key Wrap (KEK of 16/24/32 bytes, input a multiple of 8, >= 16)."""

def aes_key_unwrap(wrapping_key: Buffer, wrapped_key: Buffer) -> bytearray:
    """RFC 3394 unwrap; raises InvalidUnwrap on integrity failure. Wipe the result."""

def aes_key_wrap_with_padding(wrapping_key: Buffer, key_to_wrap: Buffer) -> bytes:
    """RFC 5649 AES Key Wrap with Padding (any non-empty input)."""

def aes_key_unwrap_with_padding(wrapping_key: Buffer, wrapped_key: Buffer) -> bytearray:
    """RFC 5649 unwrap; raises InvalidUnwrap on integrity failure. Wipe the result."""

@final
class MasterKey:
    """A tenant master key (AES-256) that lives only in native memory, zeroized on drop
    or :meth:`wipe`.  Object keys are sealed bound to a ``binding`` (tenant and object
    identifier): RFC 5649 over ``len(binding) || binding || key``, so a blob moved to
    another object or tenant fails to open."""

    @staticmethod
    def generate() -> MasterKey: ...
    @staticmethod
    def from_bytes(key: Buffer) -> MasterKey:
        """Copy a 32-byte key; the caller wipes its own buffer."""
    def seal(self, key: Buffer, binding: bytes) -> bytes: ...
    def seal_random(self, length: int, binding: bytes) -> bytes:
        """Generate a random key natively and return it only sealed."""
    def open(self, blob: bytes, binding: bytes) -> bytearray:
        """Open a sealed key into a bytearray the caller must wipe."""
    def sealed_length(self, blob: bytes, binding: bytes) -> int: ...
    def digest(self, blob: bytes, binding: bytes) -> bytes:
        """SHA-256 of the sealed key, computed natively (the Digest attribute)."""
    def reseal(self, blob: bytes, binding: bytes, target: MasterKey, new_binding: bytes) -> bytes:
        """Move a sealed key to another master key without exposing it."""
    def seal_master(self, other: MasterKey, binding: bytes) -> bytes:
        """Seal another master key (software root: development only)."""
    def open_master(self, blob: bytes, binding: bytes) -> MasterKey: ...
    def wipe(self) -> None:
        """Zeroize now; later use raises InvalidUnwrap."""
    @property
    def wiped(self) -> bool: ...

@final
class SealedKey:
    """A sealed key on its way into a response; ``encode`` opens it into the output.
    With ``item=True`` the sealed bytes are a whole encoded TTLV item written verbatim
    in place of the item holding the SealedKey (objects stored as items)."""

    def __new__(
        cls, master: MasterKey, blob: bytes, binding: bytes, *, item: bool = False
    ) -> SealedKey: ...

@final
class Hsm:
    """A PKCS#11 token holding tenant root keys; every call releases the GIL."""

    @staticmethod
    def open(module: str, token_label: str, pin: str | bytearray, max_sessions: int = 4) -> Hsm:
        """Load the PKCS#11 module once per process, log in, pool ``max_sessions``
        sessions.  Only the first login of a process checks the PIN (PKCS#11 login
        state is per process)."""
    def generate_root_key(self, label: str) -> None: ...
    def root_key_exists(self, label: str) -> bool: ...
    def destroy_root_key(self, label: str) -> None: ...
    def shred_root_key(self, label: str) -> tuple[list[int], list[int], int]:
        """Destroy root key ``label``, then ask the token again: ``(handles,
        handles_still_found, label_still_found)`` — its handles before the destroy, those
        still naming it after (empty when gone), keys the label still finds (0 when gone)."""
    def signing_public_key(self, label: str) -> bytes:
        """The uncompressed P-256 point (65 bytes) of signing key pair ``label``, made in
        the token on first use (private key sensitive, never extractable)."""
    def sign_digest(self, label: str, digest: bytes) -> bytes:
        """ECDSA P-256 (CKM_ECDSA) over a 32-byte SHA-256 digest: ``r || s``, 64 bytes."""
    def ping(self) -> None: ...
    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, MasterKey]:
        """A fresh master key from the HSM's RNG, sealed by root key ``label``."""
    def seal_master_key(self, label: str, master: MasterKey, aad: bytes) -> bytes:
        """Seal an existing master key under root key ``label`` (root rotation)."""
    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> MasterKey: ...
    def reinitialize(self) -> None:
        """Finalize and re-initialize the PKCS#11 library (once no session is in use) and
        find the token again; HsmUnavailable while the token is still away."""

# ---- TLS engine (rustls, aws-lc-rs) ----------------------------------------------------

def peek_client_hello(data: Buffer) -> str | None:
    """Which engine should serve a connection whose first bytes are ``data``: None until
    the ClientHello is complete, ``"openssl"`` for a client offering only TLS < 1.2 or no
    ECDHE + AEAD suite rustls serves (with a group and signature scheme in common),
    ``"rustls"`` otherwise (bytes that are not TLS too: rustls refuses them as
    ``not_tls``).  Assumes ECDSA P-256 and RSA server keys; see
    :meth:`TlsConfig.peek_client_hello`."""

@final
class TlsConfig:
    """Server certificate(s), trust and resumption state for native TLS sessions.

    A client certificate is accepted if its SHA-256 fingerprint (lowercase hex of the DER,
    as ``kmipfast.pki.fingerprint``; upper case and ``:`` accepted) is in
    ``allowed_fingerprints`` and it is currently valid and usable for clientAuth, or if it
    chains to ``ca_roots_pem``.  TLS 1.2 and 1.3, ECDHE + AEAD suites only, resumption by
    tickets and a session cache shared across :meth:`update`.  ``extra_cert_chain_pem`` /
    ``extra_key_pem``: a second identity (e.g. RSA) for clients that cannot verify the
    first one's signatures.  Raises ValueError for unusable PEM, keys or fingerprints."""

    def __new__(
        cls,
        cert_chain_pem: Buffer,
        key_pem: Buffer,
        ca_roots_pem: Buffer,
        allowed_fingerprints: list[str],
        max_message_size: int = ...,
        *,
        extra_cert_chain_pem: Buffer | None = None,
        extra_key_pem: Buffer | None = None,
        session_cache_size: int = 8192,
        tickets: bool = True,
        min_version: str = "1.2",
    ) -> TlsConfig: ...
    def update(self, ca_roots_pem: Buffer, allowed_fingerprints: list[str]) -> None:
        """Replace trust for sessions started from now on; resumed sessions are re-checked
        against it (``TlsError.reason == "removed"`` when no longer trusted).  Open
        sessions are not touched: close them by ``peer_fingerprint``."""
    def is_allowed(self, fingerprint: str) -> bool: ...
    def peek_client_hello(self, data: bytes) -> str | None:
        """Like :func:`peek_client_hello`, for this config's keys and versions."""
    @property
    def max_message_size(self) -> int: ...

@final
class TlsSession:
    """One server-side TLS connection, fed the raw bytes of ``data_received``.

    Session secrets stay native.  Every failure raises :class:`TlsError`: write its
    ``to_write`` (an alert or close_notify), log ``reason``/``fingerprint``/``subject``,
    close the transport; later calls raise it again."""

    def __new__(cls, config: TlsConfig) -> TlsSession: ...
    def receive(self, data: Buffer) -> tuple[bytes, list[Item | TtlvDecodeError]]:
        """Decrypt, frame (8-byte TTLV header, length checked against the cap before
        buffering: ``message_too_large`` / ``bad_framing`` end the session) and decode.
        Returns the bytes to write and, in order, each complete request as a tree, or as a
        ``TtlvDecodeError`` instance when the frame is not valid TTLV (answer it Invalid
        Message).  No request is returned before the client is verified."""
    def send(self, tree: Item) -> bytes:
        """Encode (``SealedKey`` values opened into a wiped buffer) and encrypt one
        response; raises TtlvEncodeError or TlsError."""
    def send_encoded(self, data: Buffer) -> bytes:
        """Encrypt an already encoded message."""
    def close(self) -> bytes:
        """close_notify: write these bytes, then close the transport."""
    @property
    def handshake_done(self) -> bool: ...
    @property
    def resumed(self) -> bool: ...
    @property
    def peer_closed(self) -> bool:
        """The client sent close_notify."""
    @property
    def peer_fingerprint(self) -> str | None:
        """SHA-256 of the client certificate's DER, lowercase hex (resumed sessions too)."""
    @property
    def peer_subject(self) -> str | None:
        """RFC 4514, as ``cryptography``'s ``Name.rfc4514_string()``."""
    @property
    def peer_issuer(self) -> str | None: ...
    @property
    def peer_certificate(self) -> bytes | None:
        """DER of the client's end-entity certificate: the verified one once the handshake
        is done, else the one the verifier refused (to show and allow it later)."""
    @property
    def peer_not_after(self) -> int | None:
        """End of the client certificate's validity, POSIX seconds."""
    @property
    def protocol_version(self) -> str | None:
        """``"TLSv1.2"`` or ``"TLSv1.3"``, as ``ssl.SSLObject.version()``."""
    @property
    def cipher_suite(self) -> str | None:
        """IANA name of the negotiated suite."""
    @property
    def error(self) -> str | None:
        """Reason code of the failure that ended the session."""
