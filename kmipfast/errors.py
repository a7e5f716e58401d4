"""Exceptions raised by the native module and the key hierarchy.

They are defined here, in Python, so users catch ordinary Python classes; the native
module imports them (``pyo3::import_exception!``) instead of defining its own.
"""

from __future__ import annotations


class TtlvError(ValueError):
    """A TTLV item that breaks the encoding rules (KMIP 1.4 §9.1).

    ``reason`` is a stable code (``truncated``, ``bad_length``, ``nonzero_padding``,
    ``child_overruns_parent``, ``length_mismatch``, ``invalid_utf8``, ``invalid_boolean``,
    ``unknown_type``, ``too_deep``, ``field_too_large``, ``message_too_large``,
    ``trailing_bytes``, ``invalid_tag``, ``noncanonical_big_integer``,
    ``value_out_of_range``, ``bad_value``); ``offset`` is the byte offset of the
    offending item or field and ``tag`` its tag when known.
    """

    def __init__(self, reason: str, offset: int, tag: int | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.offset = offset
        self.tag = tag
        self.message = message

    def __reduce__(self) -> tuple[type[TtlvError], tuple[str, int, int | None, str]]:
        return (type(self), (self.reason, self.offset, self.tag, self.message))


class TtlvDecodeError(TtlvError):
    """Input bytes are not a well-formed TTLV item."""


class TtlvEncodeError(TtlvError):
    """A tree cannot be encoded (wrong value type, out of range, too deep)."""


class InvalidUnwrap(Exception):
    """Unwrapping failed its integrity check: wrong key, corrupted blob, a blob bound to
    another object or tenant, or a master key that was wiped."""


class HsmError(Exception):
    """The HSM refused or failed an operation."""


class HsmUnavailable(HsmError):
    """The HSM library, slot or token cannot be reached now (retryable)."""


class HsmKeyNotFound(HsmError):
    """The root key is not in the HSM (destroyed, or never created)."""


class HsmIntegrityError(HsmError):
    """A sealed master key failed authentication (tampered, or another root key)."""


class TlsError(Exception):
    """A TLS session of the native engine ended in failure.

    ``reason`` is a stable code: ``unknown_ca``, ``not_allowed`` (self-signed certificate not
    in the allow-list), ``removed`` (a resumed session whose client is no longer trusted),
    ``expired``, ``not_yet_valid``, ``bad_usage``, ``bad_certificate``, ``bad_signature``,
    ``no_certificate``, ``no_shared_cipher``, ``version``, ``not_tls``, ``peer_alert``,
    ``protocol``, ``message_too_large``, ``bad_framing``.  ``to_write`` holds the bytes still
    to send before closing (an alert or close_notify); ``fingerprint``, ``subject`` and
    ``issuer`` describe the client certificate when one was seen.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        to_write: bytes = b"",
        fingerprint: str | None = None,
        subject: str | None = None,
        issuer: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.to_write = to_write
        self.fingerprint = fingerprint
        self.subject = subject
        self.issuer = issuer

    def __reduce__(
        self,
    ) -> tuple[type[TlsError], tuple[str, str, bytes, str | None, str | None, str | None]]:
        return (
            type(self),
            (self.reason, self.message, self.to_write, self.fingerprint, self.subject, self.issuer),
        )
