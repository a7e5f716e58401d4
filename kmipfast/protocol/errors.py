"""The one error family of the protocol layer.

Handlers raise :class:`KmipError`; the batch loop turns it into a failed batch item
with its Result Reason and message.  Anything else becomes General Failure with a
logged incident id (``kmipfast.protocol.processor``).
"""

from __future__ import annotations

from kmipfast.protocol.enums import ResultReason


class KmipError(Exception):
    """A failure with the Result Reason a client expects (KMIP 1.4 §11)."""

    def __init__(self, reason: ResultReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"KmipError({self.reason.name}, {self.message!r})"


def not_found(uid: str) -> KmipError:
    # The same answer for "never existed" and "another tenant's": no existence oracle.
    return KmipError(ResultReason.ItemNotFound, f"no object with Unique Identifier {uid!r}")


def invalid_field(message: str) -> KmipError:
    return KmipError(ResultReason.InvalidField, message)


def missing(field: str) -> KmipError:
    return KmipError(ResultReason.InvalidField, f"missing required field: {field}")


def denied(message: str) -> KmipError:
    return KmipError(ResultReason.PermissionDenied, message)
