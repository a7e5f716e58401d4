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

from kmipfast.errors import InvalidUnwrap as InvalidUnwrap
from kmipfast.errors import TtlvDecodeError as TtlvDecodeError
from kmipfast.errors import TtlvEncodeError as TtlvEncodeError

__version__: Final[str]
__all__ = [
    "Hsm",
    "MasterKey",
    "SealedKey",
    "__version__",
    "aes_key_unwrap",
    "aes_key_unwrap_with_padding",
    "aes_key_wrap",
    "aes_key_wrap_with_padding",
    "decode",
    "encode",
    "frame_length",
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
    def ping(self) -> None: ...
    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, MasterKey]:
        """A fresh master key from the HSM's RNG, sealed by root key ``label``."""
    def seal_master_key(self, label: str, master: MasterKey, aad: bytes) -> bytes:
        """Seal an existing master key under root key ``label`` (root rotation)."""
    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> MasterKey: ...
