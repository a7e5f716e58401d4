"""The audit log: one JSON line per operation and per administrative change.

Lines carry who, which tenant, what, which object and the result — never key
material, PINs or message payloads.  Each line is chained to the one before it
(``seq``, ``prev``: see :mod:`kmipfast.auditchain`) and signed checkpoints of the chain
head are added now and then.  Lines are queued and written by a thread every 100 ms or
4,096 lines, fsynced once per batch, so auditing costs no syscall on the event loop.
Fields are documented in docs/audit.md.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kmipfast import auditchain
from kmipfast.protocol.enums import Operation, ResultReason, ResultStatus

if TYPE_CHECKING:
    from kmipfast.config import Config
    from kmipfast.protocol.messages import ResponseItem
    from kmipfast.protocol.processor import Context, Session

log = logging.getLogger("kmipfast.audit")

# A batch is written and fsynced every 100 ms, or sooner when this many lines wait
# (about 1 MiB): under load that is ten fsyncs and writer wake-ups a second, each of
# which costs the event loop the GIL, not one per few milliseconds.
_FLUSH_LINES = 4096
_FLUSH_SECONDS = 0.1


_NAMES: dict[type, dict[int, str]] = {
    e: {int(m): m.name for m in e} for e in (Operation, ResultReason, ResultStatus)
}


def _name(enum: type[Operation] | type[ResultReason] | type[ResultStatus], value: int) -> str:
    name = _NAMES[enum].get(value)
    return name if name is not None else f"0x{value:08X}"


def os_user() -> str:
    """Who runs this process, for administrative audit lines."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


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
_encode_text = json.encoder.encode_basestring_ascii  # a str as a JSON string, in C


def _after_last_newline(f: IO[bytes], size: int) -> int:
    """Offset just past the last newline in the first ``size`` bytes of ``f`` (0 if none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - 8192)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


class AuditLog:
    """The log file.  ``write`` only queues the encoded event (the hot path: no I/O, no
    hashing); a writer thread chains queued lines (``seq``, ``prev``), appends them and
    fsyncs once per batch.  Batches are taken every 100 ms, at 4,096 queued lines, or as
    soon as the previous batch is on disk, whichever is later; ``flush`` and ``sync``
    write what is queued at once, in the caller's thread.

    Several processes (workers, administrative commands) append to the same log: each
    batch is written under an exclusive lock on ``<path>.lock``, after re-reading the
    chain's last line if another process wrote since, and rotation (at
    ``max_bytes``) happens under that lock too.  With a signer, a checkpoint thread
    signs the chain head every ``checkpoint_interval`` seconds if lines were added, and
    once more on close."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = 100 << 20,
        signer: auditchain.Signer | None = None,
        checkpoint_interval: float = 60.0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.signer = signer
        self.checkpoint_interval = checkpoint_interval
        self._pending: list[str] = []
        self._lock = threading.Lock()  # guards _pending
        self._io = threading.Lock()  # one batch at a time; taken before _lock
        self._wake = threading.Condition(self._lock)
        self._first_pending = 0.0
        self._inflight = False  # a batch taken from _pending and not yet on disk
        self._closed = path is None
        self._fd = -1
        self._lock_fd = -1
        self._end = -1  # size of the file after our last write; -1: unknown
        self._seq = -1  # seq and hash of the last line we know of
        self._head = auditchain.GENESIS
        self._checkpointed = -1
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_failed = False
        self._stopping = threading.Event()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(
                path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
            )
            self._open_file()

    # -- queueing (any thread) -------------------------------------------------------------
    def write(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        event.setdefault("time", _Clock.now())
        self._queue(_ENCODE(event))

    def _queue(self, body: str) -> None:
        with self._lock:
            if not self._pending:
                self._first_pending = time.monotonic()
            self._pending.append(body)
            if self._writer is None:
                self._start_threads()
            # The first line starts the writer's 100 ms clock (it sleeps while the queue is
            # empty); a full batch ends it early.
            if len(self._pending) in (1, _FLUSH_LINES):
                self._wake.notify()

    def commit(self, event: dict[str, Any]) -> tuple[int, str]:
        """Writes ``event`` (and everything queued before it) durably now; returns the
        ``(seq, hash)`` of its line, e.g. for a certificate that cites it."""
        if self._closed:
            raise auditchain.AuditChainError("the audit log is not open")
        event.setdefault("time", _Clock.now())
        body = _ENCODE(event)
        with self._io:
            with self._lock:
                batch, self._pending = self._pending, []
                self._inflight = True
            batch.append(body)
            try:
                self._write_batch(batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch[:-1]
                raise
            finally:
                self._inflight = False
            return self._seq, self._head

    def flush(self) -> None:
        """Returns once every line written so far is in the file; free when the writer
        thread has already written them (the usual case)."""
        if self._closed:
            return
        with self._lock:
            if not self._pending and not self._inflight:
                return
        self._drain()

    def sync(self) -> None:
        """Returns once every line queued so far is on disk."""
        if self._closed:
            return
        self._drain()

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last line this process knows is in the log."""
        with self._io:
            return self._seq, self._head

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._drain()
            if self.signer is not None and self._seq != self._checkpointed and self._seq >= 0:
                self.checkpoint()
        finally:
            with self._lock:
                self._closed = True
                self._wake.notify_all()
            self._stopping.set()
            for t in (self._writer, self._checkpointer):
                if t is not None and t is not threading.current_thread():
                    t.join(timeout=5.0)
            self._drain()
            with self._io:
                for fd in (self._fd, self._lock_fd):
                    if fd >= 0:
                        os.close(fd)
                self._fd = self._lock_fd = -1

    def checkpoint(self) -> bool:
        """Signs the current chain head (an HSM call: not on the event loop) and appends
        the checkpoint line.  False when there is nothing new or signing failed."""
        if self.signer is None:
            return False
        self._drain()
        seq, head = self._refresh_head()
        if seq < 0 or seq == self._checkpointed:
            return False
        try:
            key, sig = self.signer.sign(auditchain.checkpoint_digest(seq, head))
        except Exception as e:  # the HSM away or refusing: say so once, try again later
            if not self._checkpoint_failed:
                log.error("audit checkpoint not signed: %s", e)
                self.write({"kind": "admin", "action": "audit checkpoint failed", "error": str(e)})
            self._checkpoint_failed = True
            return False
        self._checkpoint_failed = False
        self.commit({"kind": "checkpoint", "head_seq": seq, "head": head, "key": key, "sig": sig})
        self._checkpointed = self._seq
        return True

    def _refresh_head(self) -> tuple[int, str]:
        """The chain head as the file has it now (other processes may have written)."""
        with self._io:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                size = self._current_size()
                if size != self._end:
                    self._end = self._resume(size)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            return self._seq, self._head

    # -- threads ---------------------------------------------------------------------------
    def _start_threads(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._writer.start()
        if self.signer is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="audit-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    if len(self._pending) >= _FLUSH_LINES:
                        break
                    if self._pending:
                        wait = self._first_pending + _FLUSH_SECONDS - time.monotonic()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
                if self._closed:
                    return
            try:
                self._drain()
            except OSError as e:  # disk full, file gone: keep the lines, retry
                log.error("audit log %s not written: %s", self.path, e)
                time.sleep(_FLUSH_SECONDS)

    def _checkpoint_loop(self) -> None:
        while True:
            if self._stopping.wait(self.checkpoint_interval):
                return
            try:
                self.checkpoint()
            except OSError as e:
                log.error("audit checkpoint not written: %s", e)

    # -- the file (under self._io) ---------------------------------------------------------
    def _drain(self) -> None:
        with self._io:
            with self._lock:
                batch, self._pending = self._pending, []
                self._inflight = bool(batch)
            if batch:
                try:
                    self._write_batch(batch)
                except BaseException:
                    with self._lock:
                        self._pending[:0] = batch
                    raise
                finally:
                    self._inflight = False

    def _open_file(self) -> None:
        assert self.path is not None
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._end = -1

    def _write_batch(self, batch: list[str]) -> None:
        assert self.path is not None
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            size = self._current_size()
            if size != self._end:
                size = self._resume(size)  # another process wrote, or first batch
            if size >= self.max_bytes:
                self._rotate()
                size = 0
            seq, head = self._seq, self._head
            out = []
            for body in batch:
                seq += 1
                line = auditchain.chained(seq, head, body).encode()
                head = hashlib.sha256(line).hexdigest()
                out.append(line)
            data = b"\n".join(out) + b"\n"
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
            self._seq, self._head, self._end = seq, head, size + len(data)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current_size(self) -> int:
        """The size of the log file, reopened first if it was rotated by someone else."""
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._open_file()
            return os.fstat(self._fd).st_size
        if st.st_ino != os.fstat(self._fd).st_ino:
            self._open_file()
        return st.st_size

    def _resume(self, size: int) -> int:
        """Reads the chain's last line (this file's, else the newest rotated file's) to
        continue after it.  A torn last line (a crash mid-write) is cut off."""
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(max(0, size - 1))
            if size and f.read(1) != b"\n":
                keep = _after_last_newline(f, size)
                os.truncate(self.path, keep)
                log.error("audit log %s: cut a torn last line (%d bytes)", self.path, size - keep)
                size = keep
            tail = auditchain.last_line(f, size) if size else None
        if tail is not None and not tail.startswith(b'{"seq":'):
            # A log from before lines were chained (an upgraded data dir): it is kept,
            # renamed aside, and the chain starts at genesis in a new file.
            aside = self.path.with_name(f"{self.path.name}.unchained-{int(time.time())}")
            os.rename(self.path, aside)
            self._open_file()
            log.warning("audit log %s predates the hash chain; kept as %s", self.path, aside)
            size, tail = 0, None
        where = str(self.path)
        if tail is None:
            older = auditchain.rotated_files(self.path)
            if older:
                where = str(older[-1])
                with open(older[-1], "rb") as f:
                    tail = auditchain.last_line(f, os.fstat(f.fileno()).st_size)
        if tail is None:
            self._seq, self._head = -1, auditchain.GENESIS
        else:
            self._seq, self._head = auditchain.tail_of(tail, where)
            if tail.startswith(b'{"seq":') and b',"kind":"checkpoint",' in tail:
                self._checkpointed = self._seq  # the head is signed already
        return size

    def _rotate(self) -> None:
        assert self.path is not None
        older = auditchain.rotated_files(self.path)
        n = int(older[-1].name.rsplit(".", 1)[1]) + 1 if older else 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{n}"))
        self._open_file()
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._end = 0

    def operation(self, ctx: Context, result: ResponseItem) -> None:
        self.answered(ctx.session, ctx.operation, ctx.uid, result)

    def answered(
        self, session: Session, operation: int, uid: str | None, result: ResponseItem
    ) -> None:
        """One batch item answered to ``session``: the line :meth:`write` would make of
        its event, formatted here directly (this runs for every request)."""
        if self._closed:
            return
        who = session.audit_who
        if not who:
            # Client, tenant and peer, encoded once per session.
            who = session.audit_who = _ENCODE(
                {"client": session.client, "tenant": session.tenant, "peer": session.peer}
            )[1:-1]
        reason = (
            "" if result.reason is None else f',"reason":"{_name(ResultReason, result.reason)}"'
        )
        self._queue(
            f'{{"kind":"kmip",{who},"operation":"{_name(Operation, operation)}",'
            f'"uid":{"null" if uid is None else _encode_text(uid)},'
            f'"result":"{_name(ResultStatus, result.status)}"{reason},"time":"{_Clock.now()}"}}'
        )

    def admin(self, action: str, **fields: Any) -> None:
        """An administrative change, with the OS user of the process that made it."""
        fields.setdefault("os_user", os_user())
        self.write({"kind": "admin", "action": action, **fields})

    def refusal(self, reason: str, **fields: Any) -> None:
        self.write({"kind": "refused", "reason": reason, **fields})


def audit_signer(config: Config, keys: object) -> auditchain.Signer | None:
    """The checkpoint signer over the audit key where ``keys`` (the HSM or the software
    root) keeps it; its public key goes to ``audit-key.pem`` in the data dir."""
    if not isinstance(keys, auditchain.SigningKeys):
        return None
    return auditchain.Signer(keys, config.data_dir / auditchain.PUBLIC_KEY_FILE)
