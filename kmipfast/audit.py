"""The audit log: one JSON line per operation and per administrative change.

Lines carry who, which tenant, what, which object and the result — never key
material, PINs or message payloads.  Lines are buffered and flushed every 100 ms or
64 lines, so auditing costs no syscall per request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kmipfast.protocol.enums import Operation, ResultReason, ResultStatus

if TYPE_CHECKING:
    from kmipfast.protocol.messages import ResponseItem
    from kmipfast.protocol.processor import Context

_FLUSH_LINES = 64
_FLUSH_SECONDS = 0.1


_NAMES: dict[type, dict[int, str]] = {
    e: {int(m): m.name for m in e} for e in (Operation, ResultReason, ResultStatus)
}


def _name(enum: type[Operation] | type[ResultReason] | type[ResultStatus], value: int) -> str:
    name = _NAMES[enum].get(value)
    return name if name is not None else f"0x{value:08X}"


class _Clock:
    """The ISO time string, formatted once per second rather than once per line."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second = t
            cls.text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return cls.text


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._pending = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", buffering=1 << 16, encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        if self._file is None:
            return
        event.setdefault("time", _Clock.now())
        line = _ENCODE(event)
        with self._lock:
            self._file.write(line + "\n")
            self._pending += 1
            now = time.monotonic()
            if self._pending >= _FLUSH_LINES or now - self._last_flush >= _FLUSH_SECONDS:
                self._flush_locked(now)

    def _flush_locked(self, now: float) -> None:
        assert self._file is not None
        self._file.flush()
        self._pending = 0
        self._last_flush = now

    def flush(self) -> None:
        if self._file is None:
            return
        with self._lock:
            self._flush_locked(time.monotonic())

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def operation(self, ctx: Context, result: ResponseItem) -> None:
        event: dict[str, Any] = {
            "kind": "kmip",
            "client": ctx.session.client,
            "tenant": ctx.session.tenant,
            "peer": ctx.session.peer,
            "operation": _name(Operation, ctx.operation),
            "uid": ctx.uid,
            "result": _name(ResultStatus, result.status),
        }
        if result.reason is not None:
            event["reason"] = _name(ResultReason, result.reason)
        self.write(event)

    def admin(self, action: str, **fields: Any) -> None:
        self.write({"kind": "admin", "action": action, **fields})

    def refusal(self, reason: str, **fields: Any) -> None:
        self.write({"kind": "refused", "reason": reason, **fields})
