"""SQLite store: one writer thread doing group commit, a small pool of readers.

Theory of operation
-------------------
Durability costs one fsync per transaction (WAL + ``synchronous=FULL``), so
writes are grouped.  Every write is a closure ``fn(conn) -> (result, scrub)``
put on a queue together with the caller's asyncio future.  One dedicated
thread owns the only writing connection; it blocks for the first queued
write, takes whatever else is queued (up to ``group_commit_max``), runs them
all in one ``BEGIN IMMEDIATE`` transaction, each inside its own SAVEPOINT so a
failing write (a conflict, say) is rolled back alone, then COMMITs once and
resolves every caller's future through ``loop.call_soon_threadsafe``.  While
one batch is being fsynced the next one queues up, so the fsync rate, not the
write rate, bounds throughput.

Reads run on a thread pool, each thread with its own connection set to
``query_only``; WAL lets them proceed while the writer commits.  Nothing here
runs SQLite on the event loop thread.

Destroy means gone: ``secure_delete=ON`` makes SQLite zero the space a
removed blob occupied in the page it rewrites, but the WAL still holds older
frames of that page (with the blob) and the main file still holds the old page
until a checkpoint copies the new one over it.  So after a batch that removed
or replaced wrapped key bytes, the writer runs ``wal_checkpoint(TRUNCATE)``:
it copies the scrubbed pages into the main file and truncates the WAL to zero
bytes.  Callers of such writes are answered only after that checkpoint.
(Blocks the filesystem freed are outside SQLite's reach; full-disk encryption
covers those.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kmipfast import metrics
from kmipfast.store.base import (
    CLIENT_COLUMNS,
    CLIENT_FIELDS,
    NODE_FIELDS,
    OBJECT_COLUMNS,
    OBJECT_FIELDS,
    TENANT_COLUMNS,
    TENANT_FIELDS,
    ClientRecord,
    NodeRecord,
    ObjectRecord,
    Store,
    StoreConflict,
    StoreError,
    StoreSnapshot,
    StoreStats,
    TenantRecord,
    row_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# A write: runs inside the writer's transaction, returns (result, scrub) where
# scrub says the write removed wrapped key bytes that must be overwritten on disk.
WriteFn = Callable[[sqlite3.Connection], tuple[Any, bool]]

# Versioned migrations, applied in order in one transaction at open.  Never
# edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        root_label TEXT NOT NULL,
        sealed_master_key BLOB,
        master_key_version INTEGER NOT NULL,
        created INTEGER NOT NULL,
        rotated INTEGER
    ) STRICT;
    CREATE TABLE clients (
        name TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        fingerprint TEXT UNIQUE,
        subject TEXT,
        issuer TEXT,
        not_after INTEGER,
        created INTEGER NOT NULL,
        ca_rule TEXT
    ) STRICT;
    CREATE INDEX clients_tenant ON clients(tenant);
    -- "Newest first" is (created, rowid) descending; PostgreSQL uses a
    -- bigserial column where SQLite has the rowid.
    CREATE TABLE objects (
        uid TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        object_type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        key_blob BLOB,
        key_meta BLOB NOT NULL,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        version INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX objects_tenant_created ON objects(tenant, created);
    CREATE TABLE attributes (
        uid TEXT NOT NULL REFERENCES objects(uid) ON DELETE CASCADE,
        name TEXT NOT NULL,
        idx INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (uid, name, idx)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX attributes_name_value ON attributes(name, value);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
    INSERT INTO meta (key, value) VALUES ('data_version', 0);
    """,
    # 2: root-key lifecycle: the master key a re-encryption moves objects away from,
    # and the server processes ("nodes") with the data version each has acted on.
    """
    ALTER TABLE tenants ADD COLUMN previous_sealed_master_key BLOB;
    ALTER TABLE tenants ADD COLUMN previous_master_key_version INTEGER;
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        data_version INTEGER NOT NULL,
        seen INTEGER NOT NULL,
        held TEXT NOT NULL
    ) STRICT;
    """,
    # 3: per-client roles (allowed operations) and the CA certificate of a CA + subject rule.
    """
    ALTER TABLE clients ADD COLUMN role TEXT NOT NULL DEFAULT 'full';
    ALTER TABLE clients ADD COLUMN ca_pem TEXT;
    """,
    # 4: Locate probes an object's attributes through the primary key (uid, name, idx);
    # the (name, value) index only doubled the B-tree work of every attribute row
    # written (a third of a Create's store time).
    """
    DROP INDEX attributes_name_value;
    """,
)

_BUMP_DATA_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'data_version'"
_OBJECTS_SEQ = "SELECT value FROM meta WHERE key = 'objects_seq'"
_BUMP_OBJECTS_SEQ = "UPDATE meta SET value = value + 1 WHERE key = 'objects_seq' RETURNING value"


class _CommitMark:
    """The highest ``objects_seq`` committed to one database, shared by every process
    that opens it: 8 bytes at the start of ``<db>-seq``, mapped shared.  Raised (never
    lowered) under an exclusive flock after each commit."""

    def __init__(self, path: Path, committed: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < mmap.PAGESIZE:
                os.ftruncate(fd, mmap.PAGESIZE)
            self.view = mmap.mmap(fd, mmap.PAGESIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if self.value() > committed:  # a restored or replaced database: start over
                self.view[0:8] = committed.to_bytes(8, "little")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def value(self) -> int:
        return int.from_bytes(self.view[0:8], "little")

    def raise_to(self, seq: int) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self.value() < seq:
                self.view[0:8] = seq.to_bytes(8, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.view.close()
        os.close(self._fd)


# Longest a group commit waits for writers that are on their way (see _writer_main).
_GATHER_MAX = 0.002
# More foreign commits than this at once are not checked one by one.
_SEQ_SCAN_LIMIT = 4096
_PAGE = 500  # rows per page in list_objects


@dataclass(slots=True)
class _Write:
    fn: WriteFn
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    # Set for a plain object insert, which a batch of them does in two statements.
    created: ObjectRecord | None = None


_STOP = object()  # queue sentinel: finish what is queued, checkpoint, exit


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would COMMIT first)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise StoreError("migration script ends with an incomplete statement")
    return out


def _constraint_error(exc: sqlite3.IntegrityError, what: str) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return StoreError(f"{what}: unknown tenant")
    if name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
        return StoreConflict(f"{what}: already exists")
    return StoreError(f"{what}: {exc}")


# -- write operations (run on the writer thread) -------------------------------


_ROWS_PER_INSERT = 500


def _insert_rows(
    conn: sqlite3.Connection, table: str, columns: str, width: int, rows: list[tuple[Any, ...]]
) -> None:
    """Multi-row INSERTs: one statement, hence one trip through SQLite and one wait for
    the GIL (which the event loop mostly holds), for many rows; within SQLite's
    32766-variable limit."""
    one = f"({_placeholders(width)})"
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(chunk))}",
            [v for row in chunk for v in row],
        )


def _attribute_rows(rec: ObjectRecord) -> list[tuple[Any, ...]]:
    return [
        (rec.uid, name, idx, value)
        for name, values in rec.attributes.items()
        for idx, value in enumerate(values)
    ]


def _insert_attribute_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    _insert_rows(conn, "attributes", "uid, name, idx, value", 4, rows)


def _insert_objects_together(conn: sqlite3.Connection, recs: list[ObjectRecord]) -> bool:
    """Inserts a batch of new objects in two statements; False (and nothing written)
    when a constraint refuses one, so the caller inserts them one by one to learn which."""
    conn.execute("SAVEPOINT together")
    try:
        objects = [row_of(r, OBJECT_FIELDS) for r in recs]
        _insert_rows(conn, "objects", OBJECT_COLUMNS, len(OBJECT_FIELDS), objects)
        _insert_attribute_rows(conn, [row for r in recs for row in _attribute_rows(r)])
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO together")
        conn.execute("RELEASE together")
        return False
    conn.execute("RELEASE together")
    return True


def _rewrite_attributes(conn: sqlite3.Connection, rec: ObjectRecord) -> None:
    """Brings the object's attribute rows to ``rec.attributes`` touching only the rows
    that differ: an AddAttribute or a state change rewrites two rows, not twenty."""
    stored = {
        (name, idx): value
        for name, idx, value in conn.execute(
            "SELECT name, idx, value FROM attributes WHERE uid = ?", (rec.uid,)
        )
    }
    wanted = {(name, idx): value for _, name, idx, value in _attribute_rows(rec)}
    gone = [(rec.uid, name, idx) for (name, idx) in stored.keys() - wanted.keys()]
    if gone:
        conn.executemany("DELETE FROM attributes WHERE uid = ? AND name = ? AND idx = ?", gone)
    changed = [
        (value, rec.uid, name, idx)
        for (name, idx), value in wanted.items()
        if (name, idx) in stored and stored[name, idx] != value
    ]
    if changed:
        conn.executemany(
            "UPDATE attributes SET value = ? WHERE uid = ? AND name = ? AND idx = ?", changed
        )
    added = [
        (rec.uid, name, idx, value)
        for (name, idx), value in wanted.items()
        if (name, idx) not in stored
    ]
    _insert_attribute_rows(conn, added)


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _create_object(rec: ObjectRecord) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[None, bool]:
        try:
            conn.execute(
                f"INSERT INTO objects ({OBJECT_COLUMNS})"
                f" VALUES ({_placeholders(len(OBJECT_FIELDS))})",
                row_of(rec, OBJECT_FIELDS),
            )
        except sqlite3.IntegrityError as exc:
            raise _constraint_error(exc, f"object {rec.uid}") from None
        _insert_attribute_rows(conn, _attribute_rows(rec))
        return None, False

    return fn


def _update_object(rec: ObjectRecord, expected_version: int) -> WriteFn:
    # uid and tenant are the row's identity, never rewritten.
    row = (*row_of(rec, OBJECT_FIELDS)[2:-1], expected_version + 1, rec.uid)

    def fn(conn: sqlite3.Connection) -> tuple[int, bool]:
        old = conn.execute(
            "SELECT version, key_blob FROM objects WHERE uid = ? AND tenant = ?",
            (rec.uid, rec.tenant),
        ).fetchone()
        if old is None:
            raise StoreConflict(f"object {rec.uid} no longer exists")
        if old[0] != expected_version:
            raise StoreConflict(
                f"object {rec.uid} changed (version {old[0]}, expected {expected_version})"
            )
        conn.execute(
            "UPDATE objects SET object_type = ?, state = ?, key_blob = ?, key_meta = ?,"
            " created = ?, updated = ?, version = ? WHERE uid = ?",
            row,
        )
        _rewrite_attributes(conn, rec)
        return expected_version + 1, old[1] is not None and old[1] != rec.key_blob

    return fn


def _delete_object(tenant: str, uid: str) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[bool, bool]:
        row = conn.execute(
            "DELETE FROM objects WHERE uid = ? AND tenant = ? RETURNING key_blob IS NOT NULL",
            (uid, tenant),
        ).fetchone()
        return row is not None, bool(row and row[0])

    return fn


def _create_tenant(rec: TenantRecord) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[None, bool]:
        try:
            conn.execute(
                f"INSERT INTO tenants ({TENANT_COLUMNS}) VALUES "
                f"({_placeholders(len(TENANT_FIELDS))})",
                row_of(rec, TENANT_FIELDS),
            )
        except sqlite3.IntegrityError as exc:
            raise _constraint_error(exc, f"tenant {rec.name}") from None
        conn.execute(_BUMP_DATA_VERSION)
        return None, False

    return fn


def _update_tenant(rec: TenantRecord) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[None, bool]:
        old = conn.execute(
            "SELECT sealed_master_key, previous_sealed_master_key FROM tenants WHERE name = ?",
            (rec.name,),
        ).fetchone()
        if old is None:
            raise StoreError(f"tenant {rec.name} does not exist")
        conn.execute(
            "UPDATE tenants SET "
            + ", ".join(f"{f} = ?" for f in TENANT_FIELDS[1:])
            + " WHERE name = ?",
            (*row_of(rec, TENANT_FIELDS)[1:], rec.name),
        )
        conn.execute(_BUMP_DATA_VERSION)
        gone = {old[0], old[1]} - {None, rec.sealed_master_key, rec.previous_sealed_master_key}
        return None, bool(gone)

    return fn


def _put_node(rec: NodeRecord) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[None, bool]:
        conn.execute(
            f"INSERT OR REPLACE INTO nodes ({', '.join(NODE_FIELDS)}) VALUES "
            f"({_placeholders(len(NODE_FIELDS))})",
            row_of(rec, NODE_FIELDS),
        )
        return None, False

    return fn


def _put_client(rec: ClientRecord) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[None, bool]:
        try:
            conn.execute(
                f"INSERT INTO clients ({CLIENT_COLUMNS})"
                f" VALUES ({_placeholders(len(CLIENT_FIELDS))})"
                " ON CONFLICT (name) DO UPDATE SET tenant = excluded.tenant,"
                " fingerprint = excluded.fingerprint, subject = excluded.subject,"
                " issuer = excluded.issuer, not_after = excluded.not_after,"
                " created = excluded.created, ca_rule = excluded.ca_rule,"
                " role = excluded.role, ca_pem = excluded.ca_pem",
                row_of(rec, CLIENT_FIELDS),
            )
        except sqlite3.IntegrityError as exc:
            raise _constraint_error(exc, f"client {rec.name}") from None
        conn.execute(_BUMP_DATA_VERSION)
        return None, False

    return fn


def _remove_client(name: str) -> WriteFn:
    def fn(conn: sqlite3.Connection) -> tuple[bool, bool]:
        if conn.execute("DELETE FROM clients WHERE name = ?", (name,)).rowcount == 0:
            return False, False
        conn.execute(_BUMP_DATA_VERSION)
        return True, False

    return fn


# -- row decoding (run on reader threads) -------------------------------------


def _attributes_of(
    conn: sqlite3.Connection, uids: Sequence[str]
) -> dict[str, dict[str, list[bytes]]]:
    out: dict[str, dict[str, list[bytes]]] = {uid: {} for uid in uids}
    if not uids:
        return out
    marks = ",".join("?" * len(uids))
    rows = conn.execute(
        f"SELECT uid, name, value FROM attributes WHERE uid IN ({marks}) ORDER BY uid, name, idx",
        tuple(uids),
    ).fetchall()
    for uid, name, value in rows:
        out[uid].setdefault(name, []).append(value)
    return out


def _objects_from_rows(conn: sqlite3.Connection, rows: list[Any]) -> list[ObjectRecord]:
    attrs = _attributes_of(conn, [row[0] for row in rows])
    return [
        ObjectRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], attrs[row[0]], row[6], row[7], row[8]
        )
        for row in rows
    ]


class SqliteStore(Store):
    def __init__(
        self,
        path: Path,
        *,
        group_commit_max: int = 256,
        readers: int = 2,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if group_commit_max < 1 or readers < 1 or busy_timeout_ms < 0:
            raise ValueError("group_commit_max and readers must be >= 1, busy_timeout_ms >= 0")
        self.path = Path(path)
        self.stats = StoreStats()
        self._group_commit_max = group_commit_max
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._read_local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._open = False
        self._closing: asyncio.Future[None] | None = None
        self._scrub_pending = False
        self._last_batch = 1  # writers in the last group commit
        self._gather_seconds = 0.0  # how long the next group may wait for them
        # Cross-process coherence (see foreign_epoch): every write transaction bumps
        # meta.objects_seq; the values this process wrote are remembered here.
        self._own_seqs: set[int] = set()
        self._mark: _CommitMark | None = None
        self._seen_mark = b""
        self._seen_seq = 0
        self._epoch = 0

    # -- connections ------------------------------------------------------------

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        # Savepoint and sort spills must not put row contents in temp files.
        conn.execute("PRAGMA temp_store = MEMORY")
        if writer:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        else:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"database schema {current} is newer than this kmipfast ({len(MIGRATIONS)})"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for stmt in _statements(MIGRATIONS[version - 1]):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _open_writer(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < (3, 37, 0):
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old (3.37+ needed for STRICT tables)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Wrapped keys live here: owner-only, and SQLite gives -wal/-shm the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = self._connect(writer=True)
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"could not put {self.path} in WAL mode (got {mode})")
            self._migrate(conn)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('objects_seq', 0)")
            self._seen_seq = int(conn.execute(_OBJECTS_SEQ).fetchone()[0])
            self._mark = _CommitMark(self.path.with_name(self.path.name + "-seq"), self._seen_seq)
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        if self._open:
            return
        loop = asyncio.get_running_loop()
        try:
            conn = await asyncio.to_thread(self._open_writer)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._writer_done = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main,
            args=(conn, loop, self._writer_done),
            name="kmipfast-store-writer",
            daemon=True,
        )
        self._writer.start()
        self._closing = None
        self._read_pool = ThreadPoolExecutor(
            self._readers, thread_name_prefix="kmipfast-store-read"
        )
        self._open = True

    async def close(self) -> None:
        if self._closing is None:
            if not self._open:
                return
            self._open = False  # refuse new work at once; queued writes still finish
            self._queue.put(_STOP)
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        assert self._writer_done is not None and self._read_pool is not None
        pool = self._read_pool
        try:
            await self._writer_done
        finally:
            await asyncio.to_thread(pool.shutdown, True)
            with self._read_conns_lock:
                for conn in self._read_conns:
                    conn.close()
                self._read_conns.clear()
            if self._mark is not None:
                self._mark.close()
                self._mark = None

    # -- the writer thread --------------------------------------------------------

    async def _write(self, fn: WriteFn, created: ObjectRecord | None = None) -> Any:
        if not self._open:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Write(fn, fut, loop, created))
        # A cancelled caller does not cancel its write: it may already be committed.
        return await asyncio.shield(fut)

    def _writer_main(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]
    ) -> None:
        try:
            stopping = False
            while True:
                try:
                    if stopping:  # close(): finish what is queued, then leave
                        item = self._queue.get_nowait()
                    else:  # a scrub blocked by a long reader is retried while idle
                        item = self._queue.get(timeout=0.1 if self._scrub_pending else None)
                except queue.Empty:
                    if stopping:
                        break
                    self._scrub(conn)
                    continue
                batch: list[_Write] = []
                # Group commit: take what is queued; if the last commit carried more
                # writers than are here yet, wait a little for the rest (they are being
                # processed on the event loop), instead of paying an fsync for one now
                # and another for the rest moments later.
                wait_until = time.monotonic() + self._gather_seconds
                while True:
                    if item is _STOP:
                        stopping = True
                    elif isinstance(item, _Write):
                        batch.append(item)
                    if len(batch) >= self._group_commit_max:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        left = wait_until - time.monotonic()
                        if stopping or len(batch) >= self._last_batch or left <= 0:
                            break
                        try:
                            item = self._queue.get(timeout=left)
                        except queue.Empty:
                            break
                if batch:
                    started = time.monotonic()
                    self._run_batch(conn, batch)
                    self._last_batch = len(batch)
                    # Waiting pays only while it is short next to a commit.
                    self._gather_seconds = min(_GATHER_MAX, (time.monotonic() - started) / 4)
            self._scrub(conn)
            conn.close()
        except BaseException as exc:  # pragma: no cover - the thread must always report
            log.exception("store writer thread died")
            self._open = False
            err = StoreError(f"store writer died: {exc}")
            pending: list[tuple[asyncio.Future[Any], BaseException]] = [(done, err)]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Write):
                    pending.append((item.future, err))
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_fail_all, pending)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, done, None)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        scrubs: list[bool] = []  # per write: did it remove wrapped key bytes?
        started = metrics.clock()
        seq = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            created = [w.created for w in batch if w.created is not None]
            together = len(created) == len(batch) > 1 and _insert_objects_together(conn, created)
            if together:
                outcomes = [(None, None)] * len(batch)
                scrubs = [False] * len(batch)
            for write in () if together else batch:
                conn.execute("SAVEPOINT op")
                try:
                    result, scrub = write.fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole transaction back (disk full, I/O)
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((None, _as_store_error(exc)))
                    scrubs.append(False)
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((result, None))
                    scrubs.append(scrub)
            seq = int(conn.execute(_BUMP_OBJECTS_SEQ).fetchone()[0])
            self._own_seqs.add(seq)  # before COMMIT: the watcher must never see it as foreign
            conn.execute("COMMIT")
        except Exception as exc:
            log.error("store transaction of %d writes failed: %s", len(batch), exc)
            if seq:
                # Not ours after all; and since another process may commit this seq now,
                # caches start over rather than mistake its write for ours.
                self._own_seqs.discard(seq)
                self._epoch += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StoreError(f"write not committed: {exc}")
            self.stats.failed_ops += len(batch)
            _deliver(batch, [(None, err)] * len(batch))
            return
        if self._mark is not None:
            self._mark.raise_to(seq)  # before anyone is answered: see foreign_epoch
        metrics.store_commit(len(batch), started)
        self.stats.commits += 1
        failed = sum(1 for _, e in outcomes if e is not None)
        self.stats.failed_ops += failed
        self.stats.ops += len(batch) - failed
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        if not any(scrubs):
            _deliver(batch, outcomes)
            return
        # Everyone else is answered now; writes that removed key bytes are
        # answered once those bytes are gone from the files.
        now = [i for i, s in enumerate(scrubs) if not s]
        later = [i for i, s in enumerate(scrubs) if s]
        _deliver([batch[i] for i in now], [outcomes[i] for i in now])
        self._scrub_pending = True
        self._scrub(conn)
        _deliver([batch[i] for i in later], [outcomes[i] for i in later])

    def _scrub(self, conn: sqlite3.Connection) -> None:
        """Copy every WAL frame into the main file and truncate the WAL, so
        older page images holding removed key bytes leave both files."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("checkpoint failed, will retry: %s", exc)
            return
        if busy:
            log.warning("checkpoint blocked by a reader, will retry")
            return
        if self._scrub_pending:
            self.stats.scrubs += 1
        self._scrub_pending = False

    # -- other processes' writes ------------------------------------------------------

    def foreign_epoch(self) -> int:
        """Moves on when another process (a ``--workers`` sibling, a CLI command, another
        node on the same file) committed since the last call; the cache calls it before
        every hit, on the event loop thread.

        Every write transaction bumps ``meta.objects_seq``; after COMMIT and before any
        of its writers is answered, the writer raises the shared mark (``<db>-seq``,
        an mmap'ed 8-byte maximum, raised under an flock so it never goes back) to that
        value.  So when a request arrives after some process answered a write, the mark
        already covers that write's seq.  Reading the mark costs a memory read; only when
        it moved are the seqs up to it compared with the ones this process wrote."""
        mark = self._mark
        if mark is None:
            return self._epoch
        raw = mark.view[0:8]
        if raw == self._seen_mark:
            return self._epoch
        self._seen_mark = raw
        value = int.from_bytes(raw, "little")
        seen, own = self._seen_seq, self._own_seqs
        if value <= seen:
            if value < seen:  # the database was replaced under us: trust nothing
                self._epoch += 1
                self._seen_seq = value
            return self._epoch
        if value - seen > _SEQ_SCAN_LIMIT or any(s not in own for s in range(seen + 1, value + 1)):
            self._epoch += 1
        if own:
            own.difference_update([s for s in own if s <= value])
        self._seen_seq = value
        return self._epoch

    # -- reads --------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._read_local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._read_local.conn = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    def _in_snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for the row and its attributes
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._open or self._read_pool is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_pool, self._in_snapshot, fn)
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    # -- objects ------------------------------------------------------------------

    async def create_object(self, rec: ObjectRecord) -> None:
        await self._write(_create_object(rec), rec)

    async def get_object(self, tenant: str, uid: str) -> ObjectRecord | None:
        def fn(conn: sqlite3.Connection) -> ObjectRecord | None:
            rows = conn.execute(
                f"SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = ? AND tenant = ?", (uid, tenant)
            ).fetchall()
            return _objects_from_rows(conn, rows)[0] if rows else None

        return await self._read(fn)

    async def update_object(self, rec: ObjectRecord, expected_version: int) -> None:
        rec.version = await self._write(_update_object(rec, expected_version))

    async def destroy_object(self, rec: ObjectRecord, expected_version: int) -> None:
        rec.key_blob = None
        await self.update_object(rec, expected_version)

    async def delete_object(self, tenant: str, uid: str) -> bool:
        return bool(await self._write(_delete_object(tenant, uid)))

    async def locate(
        self,
        tenant: str,
        *,
        object_type: int | None = None,
        states: Sequence[int] | None = None,
        attr_equals: Sequence[tuple[str, bytes]] = (),
        max_items: int | None = None,
        offset: int = 0,
    ) -> list[str]:
        if offset < 0 or (max_items is not None and max_items < 0):
            raise ValueError("max_items and offset must not be negative")
        where = ["o.tenant = ?"]
        args: list[Any] = [tenant]
        if object_type is not None:
            where.append("o.object_type = ?")
            args.append(object_type)
        if states is not None:
            if not states:
                return []
            where.append(f"o.state IN ({','.join('?' * len(states))})")
            args.extend(states)
        for name, value in attr_equals:
            where.append(
                "EXISTS (SELECT 1 FROM attributes a"
                " WHERE a.uid = o.uid AND a.name = ? AND a.value = ?)"
            )
            args.extend((name, value))
        args.extend((-1 if max_items is None else max_items, offset))
        sql = (
            f"SELECT o.uid FROM objects o WHERE {' AND '.join(where)}"
            " ORDER BY o.created DESC, o.rowid DESC LIMIT ? OFFSET ?"
        )
        return await self._read(lambda conn: [row[0] for row in conn.execute(sql, args).fetchall()])

    async def list_objects(self, tenant: str | None = None) -> AsyncIterator[ObjectRecord]:
        last = 0
        while True:

            def page(conn: sqlite3.Connection, after: int = last) -> tuple[int, list[ObjectRecord]]:
                rows = conn.execute(
                    f"SELECT rowid, {OBJECT_COLUMNS} FROM objects"
                    " WHERE rowid > ? AND (? IS NULL OR tenant = ?) ORDER BY rowid LIMIT ?",
                    (after, tenant, tenant, _PAGE),
                ).fetchall()
                end = rows[-1][0] if rows else after
                return end, _objects_from_rows(conn, [row[1:] for row in rows])

            last, recs = await self._read(page)
            for rec in recs:
                yield rec
            if len(recs) < _PAGE:
                return

    async def count_objects(self, tenant: str) -> dict[int, int]:
        def fn(conn: sqlite3.Connection) -> dict[int, int]:
            rows = conn.execute(
                "SELECT state, count(*) FROM objects WHERE tenant = ? GROUP BY state", (tenant,)
            ).fetchall()
            return {state: n for state, n in rows}

        return await self._read(fn)

    # -- tenants ------------------------------------------------------------------

    async def create_tenant(self, rec: TenantRecord) -> None:
        await self._write(_create_tenant(rec))

    async def get_tenant(self, name: str) -> TenantRecord | None:
        tenants = await self._read(
            lambda conn: conn.execute(
                f"SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?", (name,)
            ).fetchall()
        )
        return TenantRecord(*tenants[0]) if tenants else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
            ).fetchall()
        )
        return [TenantRecord(*row) for row in rows]

    async def update_tenant(self, rec: TenantRecord) -> None:
        await self._write(_update_tenant(rec))

    # -- clients ------------------------------------------------------------------

    async def put_client(self, rec: ClientRecord) -> None:
        await self._write(_put_client(rec))

    async def remove_client(self, name: str) -> bool:
        return bool(await self._write(_remove_client(name)))

    async def _clients(self, where: str, args: tuple[Any, ...]) -> list[ClientRecord]:
        sql = f"SELECT {CLIENT_COLUMNS} FROM clients {where} ORDER BY name"
        rows = await self._read(lambda conn: conn.execute(sql, args).fetchall())
        return [ClientRecord(*row) for row in rows]

    async def get_client(self, name: str) -> ClientRecord | None:
        found = await self._clients("WHERE name = ?", (name,))
        return found[0] if found else None

    async def list_clients(self, tenant: str | None = None) -> list[ClientRecord]:
        if tenant is None:
            return await self._clients("", ())
        return await self._clients("WHERE tenant = ?", (tenant,))

    async def get_client_by_fingerprint(self, fingerprint: str) -> ClientRecord | None:
        found = await self._clients("WHERE fingerprint = ?", (fingerprint,))
        return found[0] if found else None

    async def put_node(self, rec: NodeRecord) -> None:
        await self._write(_put_node(rec))

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {', '.join(NODE_FIELDS)} FROM nodes ORDER BY id"
            ).fetchall()
        )
        return [NodeRecord(*row) for row in rows]

    async def data_version(self) -> int:
        """Polled about once a second by running servers; also publishes any committed
        object write whose process died before raising the shared mark."""
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('data_version', 'objects_seq')"
            ).fetchall()
        )
        values = dict(rows)
        mark = self._mark
        if mark is not None and values.get("objects_seq", 0) > mark.value():
            mark.raise_to(int(values["objects_seq"]))
        return int(values["data_version"])

    # -- backup -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[StoreSnapshot]:
        """Copies the database into memory with SQLite's backup API in one step (one
        read transaction, as long as a file copy), then reads the copy: the writer's
        checkpoints, which wait for readers of old snapshots, never wait on a backup."""
        if not self._open:
            raise StoreError("store is not open")

        def copy() -> sqlite3.Connection:
            src = self._connect(writer=False)
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            try:
                src.backup(mem)  # pages=-1: everything in one step
            except BaseException:
                mem.close()
                raise
            finally:
                src.close()
            return mem

        def head(mem: sqlite3.Connection) -> tuple[list[TenantRecord], list[ClientRecord], int]:
            tenants = mem.execute(f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name")
            clients = mem.execute(f"SELECT {CLIENT_COLUMNS} FROM clients ORDER BY name")
            (count,) = mem.execute("SELECT count(*) FROM objects").fetchone()
            return (
                [TenantRecord(*row) for row in tenants.fetchall()],
                [ClientRecord(*row) for row in clients.fetchall()],
                int(count),
            )

        async def objects(mem: sqlite3.Connection) -> AsyncIterator[ObjectRecord]:
            def page(after: int) -> tuple[int, list[ObjectRecord]]:
                rows = mem.execute(
                    f"SELECT rowid, {OBJECT_COLUMNS} FROM objects WHERE rowid > ?"
                    " ORDER BY rowid LIMIT ?",
                    (after, _PAGE),
                ).fetchall()
                end = rows[-1][0] if rows else after
                return end, _objects_from_rows(mem, [row[1:] for row in rows])

            last = 0
            while True:
                last, recs = await asyncio.to_thread(page, last)
                for rec in recs:
                    yield rec
                if len(recs) < _PAGE:
                    return

        try:
            mem = await asyncio.to_thread(copy)
        except sqlite3.Error as exc:
            raise StoreError(f"snapshot failed: {exc}") from exc
        try:
            tenants, clients, count = await asyncio.to_thread(head, mem)
            yield StoreSnapshot(tenants, clients, count, objects(mem))
        finally:
            mem.close()


def _as_store_error(exc: Exception) -> Exception:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return StoreError(str(exc))
    log.error("store write failed", exc_info=exc)
    return exc


# -- future plumbing (the writer thread hands results to each caller's loop) ----


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def _fail_all(items: list[tuple[asyncio.Future[Any], BaseException]]) -> None:
    for fut, exc in items:
        _settle(fut, None, exc)


_Settlement = tuple[asyncio.Future[Any], Any, BaseException | None]


def _settle_many(items: list[_Settlement]) -> None:
    for fut, result, exc in items:
        _settle(fut, result, exc)


def _deliver(batch: list[_Write], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    """One wake-up per event loop for the whole batch, not one per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
    for write, (result, exc) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(write.loop, []).append((write.future, result, exc))
    for loop, items in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_many, items)
