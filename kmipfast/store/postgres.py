"""PostgreSQL store (asyncpg): the SQLite store's contract for several nodes at once.

Theory of operation
-------------------
Same schema as SQLite (``bytea`` where SQLite has BLOB, a ``seq`` column where it
has the rowid) and the same numbered migrations (schema, statements and the write
closures live in postgres_sql.py), applied at open inside one
transaction that first takes a transaction-level advisory lock, so nodes starting
together migrate one after the other.

Writes: one writer task per store owns one connection and does group commit.
Callers queue a closure ``fn(conn) -> (result, notice)``; the writer takes
whatever is queued (up to ``group_commit_max``), runs it all in one transaction,
each write inside its own savepoint so a failing write (a conflict, say) is rolled
back alone, and answers every caller only after COMMIT returned.  Durability is
PostgreSQL's ``synchronous_commit`` (forced to ``on`` when the server has it
``off``; a synchronous standby makes it wait for the standby as configured).  If
the connection breaks, the callers of that batch get StoreError (their writes may
or may not have committed: an answered write is durable, not the converse) and
the next batch reconnects.

Coherence between nodes (caches hold rows; DESIGN §5's guarantee): each write
that changes what another process may cache (an object changed or removed, a
client or tenant changed) returns a ``notice``; the batch sends them with
``pg_notify`` inside its transaction, tagged with this store's random token, so
they reach listeners exactly when the change commits.  Each store keeps one
listening connection (started by the first :meth:`foreign_epoch` or
:meth:`subscribe`, reconnecting with back-off) and probes it every
``lease / 4`` seconds with a round trip.  Staleness is bounded by design, not by
luck, with a lease of ``lease`` seconds:

- Reader side: :meth:`foreign_epoch` (checked by the cache before every hit) moves on
  with every foreign notice, on every (re)connect of the listener, and on every call
  while the listener's last successful probe was *sent* more than ``lease`` ago.  A
  node whose notification connection is down, cut or lagging therefore stops serving
  from its cache within ``lease`` of the last proof that it was hearing everything.
- Writer side: a write that sent a notice is answered only ``lease`` seconds after
  its COMMIT returned.  PostgreSQL signals listeners during COMMIT and a listening
  session sends pending notifications before answering its next query, so any probe
  sent after the commit returns only after the notice was delivered (and processed:
  asyncpg runs the listener callback before the probe's caller resumes).  At answer
  time every other node either has a probe younger than ``lease`` (sent after the
  commit: it has heard the notice) or no longer serves from its cache.  Only
  durations on each machine's monotonic clock are compared, never wall clocks.

So once Revoke, Destroy or an attribute change has answered success on any node, no
node serves the old state, at the cost of ``lease`` added to those writes' latency
(not to their throughput: the writer goes on meanwhile).  Creates announce nothing:
no node can hold an object that did not exist.

The wait is skipped when no other node can be trusting a cache.  A server registers
itself through :meth:`put_node` (the nodes table, reported every few seconds) and its
store then reads that table every ``PEER_REFRESH`` seconds: if no other node reported
within ``NODE_LIVENESS`` seconds (as measured by the reader's clock: the table's wall
clock times are only compared with themselves), answers are not held back.  In
exchange a node trusts its own cache only from ``DISCOVERY`` seconds after its first
report (longer than any other node's view of the table can be stale) and only while
its own last report is younger than ``NODE_LIVENESS - REPORT_MARGIN``, so no writer
can miss a node that serves from its cache.  A store that never registered (the CLI) or whose view
is stale assumes there are peers, and never trusts a cache itself.

Connection strings follow libpq: several hosts (``postgresql://h1:5432,h2:5432/db``)
and ``target_session_attrs``; when the URL does not say, every connection asks for
``read-write``, so nodes follow a promoted standby and never read a lagging one.

Destroy on PostgreSQL: the row's key bytes are replaced in the same transaction,
but PostgreSQL keeps old row versions until VACUUM reuses their space and its WAL
(and any archive or standby) holds them too.  "Gone from the files" is therefore
SQLite's guarantee only; on PostgreSQL it rests on crypto-shredding (``root shred``,
or rotation with re-encryption), which makes such leftovers unreadable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from kmipfast.store import postgres_sql as sql
from kmipfast.store.base import (
    NODE_FIELDS,
    TENANT_COLUMNS,
    ClientRecord,
    NodeRecord,
    ObjectRecord,
    Store,
    StoreChange,
    StoreConflict,
    StoreError,
    StoreSnapshot,
    StoreStats,
    TenantRecord,
)

log = logging.getLogger(__name__)

CHANNEL = "kmipfast"
LISTENER_NAME = "kmipfast-listen"  # application_name of listening connections
# Transaction-level advisory lock key held while migrating ("kmipfast" in ASCII).
_MIGRATION_LOCK = 0x6B6D6970666173
_PAGE = 500  # rows per page in list_objects and snapshots
LEASE = 0.2  # seconds; see "Coherence between nodes" above
_RECONNECT_MAX = 5.0  # back-off ceiling, seconds
_COMMAND_TIMEOUT = 30.0  # seconds
_PROBE_TIMEOUT = 5.0  # seconds before a silent listening connection is replaced
PEER_REFRESH = 1.0  # seconds between reads of the nodes table
DISCOVERY = 2.5  # seconds after its first report before a node trusts its cache
NODE_LIVENESS = 15.0  # a node whose report changed within this many seconds is alive
REPORT_MARGIN = 5.0  # a node trusts its cache only while its own last report is younger

# Errors after which the connection (or the server behind it) cannot go on: the
# batch fails as a whole and the next one reconnects.  A read-only error means the
# host became a standby (the primary failed over elsewhere).
_CONNECTION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.InsufficientResourcesError,
    OSError,
    TimeoutError,
)


@dataclass(slots=True)
class _Write:
    fn: sql.WriteFn
    future: asyncio.Future[Any]
    # Set for a plain object insert, which a batch of them does in two statements.
    created: ObjectRecord | None = None


_STOP = object()  # queue sentinel: finish what is queued, then exit


class _Begun:
    """COMMIT or ROLLBACK of the transaction :meth:`PostgresStore._begin` started."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.conn.execute("COMMIT")
        elif not self.conn.is_closed():
            with contextlib.suppress(Exception):
                await self.conn.execute("ROLLBACK")


class PostgresStore(Store):
    def __init__(
        self,
        url: str,
        *,
        group_commit_max: int = 256,
        readers: int = 4,
        connect_timeout: float = 10.0,
        lease: float = LEASE,
        discovery: float = DISCOVERY,
    ) -> None:
        if group_commit_max < 1 or readers < 1 or lease <= 0:
            raise ValueError("group_commit_max and readers must be >= 1, lease > 0")
        self.url = url
        self.stats = StoreStats()
        self._group_commit_max = group_commit_max
        self._readers = readers
        # A statement that takes longer than command_timeout means a dead or partitioned
        # server (no TCP reset): fail those callers and reconnect rather than hang.
        self._connect_kw: dict[str, Any] = {
            "timeout": connect_timeout,
            "command_timeout": _COMMAND_TIMEOUT,
        }
        if "target_session_attrs" not in parse_qs(urlsplit(url).query):
            self._connect_kw["target_session_attrs"] = "read-write"
        self._queue: asyncio.Queue[_Write | object] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._wconn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self.lease = lease
        self._token = secrets.token_hex(8)  # tags this store's notices
        self._listener: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[StoreChange], None]] = []
        self._epoch = 0
        self._hearing_until = 0.0  # monotonic: the last good probe's send time + lease
        self.discovery = discovery
        self._node: str | None = None  # this process's node id, once it reported
        self._trust_from = float("inf")  # monotonic: first report + discovery
        self._reported = 0.0  # monotonic time of this node's last report
        self._peers = True  # another node may be trusting its cache
        self._peers_seen = 0.0  # monotonic time the last good read of the nodes table began
        # Another node's id -> (its last `seen`, our monotonic time it last changed): a
        # node is alive while its reports keep changing, judged by our clock alone.
        self._peer_reports: dict[str, tuple[int, float]] = {}
        self._peer_watch: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()  # writes waiting out the lease
        self._open = False
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return f"PostgresStore({urlsplit(self.url).hostname or '?'})"

    # -- connections ------------------------------------------------------------

    async def _setup(self, conn: asyncpg.Connection) -> None:
        # Acknowledged means durable: never run with synchronous_commit off.
        if await conn.fetchval("SHOW synchronous_commit") == "off":
            await conn.execute("SET synchronous_commit = on")

    async def _connect(self, role: str = "kmipfast") -> asyncpg.Connection:
        kw = {**self._connect_kw, "server_settings": {"application_name": role}}
        try:
            conn = await asyncpg.connect(self.url, **kw)
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None
        await self._setup(conn)
        return conn

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > len(sql.MIGRATIONS):
                raise StoreError(
                    f"database schema {current} is newer than this kmipfast ({len(sql.MIGRATIONS)})"
                )
            for version in range(current + 1, len(sql.MIGRATIONS) + 1):
                await conn.execute(sql.MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def open(self) -> None:
        if self._open:
            return
        conn = await self._connect()
        try:
            await self._migrate(conn)
            self._pool = await asyncpg.create_pool(
                self.url,
                # No floor: asyncpg would refill it with tracebacks while the database
                # is away; readers connect on demand (and reconnect after a failover).
                min_size=0,
                max_size=self._readers,
                init=self._setup,
                server_settings={"application_name": "kmipfast"},
                **self._connect_kw,
            )
        except BaseException:
            await conn.close()
            raise
        self._wconn = conn
        self._queue = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._writer_main())
        self._closing = None
        self._open = True

    async def close(self) -> None:
        if self._closing is None:
            if not self._open:
                return
            self._open = False  # refuse new work at once; queued writes still finish
            self._queue.put_nowait(_STOP)
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        assert self._writer is not None and self._pool is not None
        try:
            await self._writer
        finally:
            await asyncio.gather(*self._answers, return_exceptions=True)
            if self._peer_watch is not None:
                self._peer_watch.cancel()
                await asyncio.gather(self._peer_watch, return_exceptions=True)
                self._peer_watch = None
            if self._listener is not None:
                self._listener.cancel()
                await asyncio.gather(self._listener, return_exceptions=True)
                self._listener = None
            if self._wconn is not None:
                with contextlib.suppress(Exception):
                    await self._wconn.close(timeout=5)
                self._wconn = None
            await self._pool.close()

    # -- the writer -----------------------------------------------------------------

    async def _write(self, fn: sql.WriteFn, created: ObjectRecord | None = None) -> Any:
        if not self._open:
            raise StoreError("store is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, fut, created))
        # A cancelled caller does not cancel its write: it may already be committed.
        return await asyncio.shield(fut)

    async def _writer_main(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[_Write] = []
            while True:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, _Write):
                    batch.append(item)
                if len(batch) >= self._group_commit_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if batch:
                try:
                    await self._run_batch(batch)
                except Exception as exc:  # pragma: no cover - every caller must hear back
                    log.exception("store writer failed")
                    _deliver(batch, [(None, StoreError(f"write failed: {exc}"))] * len(batch))

    async def _begin(self) -> asyncpg.Connection:
        """The writer's connection inside a new transaction.  A connection found broken
        at BEGIN (the server restarted or failed over since the last batch) is replaced
        once: nothing of this batch was sent yet, so its callers need not fail."""
        conn = await self._writer_conn()
        try:
            await conn.execute("BEGIN")
        except _CONNECTION_ERRORS as exc:
            log.info("store writer connection lost (%s); reconnecting", exc)
            conn.terminate()
            self._wconn = None
            conn = await self._writer_conn()
            await conn.execute("BEGIN")
        return conn

    async def _writer_conn(self) -> asyncpg.Connection:
        if self._wconn is not None and not self._wconn.is_closed():
            return self._wconn
        self._wconn = None
        self._wconn = await self._connect()
        log.info("store writer reconnected to PostgreSQL")
        return self._wconn

    async def _create_together(self, recs: list[ObjectRecord]) -> bool:
        """A batch of new objects in one statement, its own transaction: one round trip
        to the database (and its commit) for the whole batch.  False when it did not
        commit: the database refused it (nothing was written) or the connection failed
        (then the one-by-one path reconnects, and reports a uid that did commit as a
        conflict)."""
        try:
            conn = await self._writer_conn()
            await sql.create_objects_together(conn, recs)
        except _CONNECTION_ERRORS as exc:
            log.info("store writer connection lost (%s); reconnecting", exc)
            if self._wconn is not None:
                self._wconn.terminate()
                self._wconn = None
            return False
        except asyncpg.PostgresError:
            return False  # a constraint (or any refusal): one by one tells whose it is
        return True

    async def _run_batch(self, batch: list[_Write]) -> None:
        created = [w.created for w in batch if w.created is not None]
        if len(created) == len(batch) and await self._create_together(created):
            # Nobody can hold a new object in a cache: nothing to announce or wait for.
            self.stats.commits += 1
            self.stats.ops += len(batch)
            self.stats.max_batch = max(self.stats.max_batch, len(batch))
            _deliver(batch, [(None, None)] * len(batch))
            return
        outcomes: list[tuple[Any, BaseException | None]] = []
        noticed: list[bool] = []  # per write: did it tell other nodes something?
        try:
            conn = await self._begin()
            async with _Begun(conn):
                notices: list[str] = []
                for write in batch:
                    # A savepoint per write: a failing write is rolled back alone.
                    await conn.execute("SAVEPOINT op")
                    try:
                        result, notice = await write.fn(conn)
                    except _CONNECTION_ERRORS:
                        raise
                    except (StoreError, asyncpg.PostgresError) as exc:
                        await conn.execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
                        outcomes.append((None, _as_store_error(exc)))
                        noticed.append(False)
                    else:
                        await conn.execute("RELEASE SAVEPOINT op")
                        outcomes.append((result, None))
                        noticed.append(notice is not None)
                        if notice is not None:
                            notices.append(notice)
                for payload in sql.chunks(notices):
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CHANNEL, f"{self._token}\n{payload}"
                    )
        except (StoreError, asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
            log.error("store transaction of %d writes failed: %s", len(batch), exc)
            if self._wconn is not None and isinstance(exc, _CONNECTION_ERRORS):
                self._wconn.terminate()
                self._wconn = None
            self.stats.failed_ops += len(batch)
            _deliver(batch, [(None, StoreError(f"write not confirmed: {exc}"))] * len(batch))
            return
        self.stats.commits += 1
        failed = sum(1 for _, e in outcomes if e is not None)
        self.stats.failed_ops += failed
        self.stats.ops += len(batch) - failed
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        if not any(noticed) or not self.peers_may_cache():
            _deliver(batch, outcomes)
            return
        now = [i for i, n in enumerate(noticed) if not n]
        later = [i for i, n in enumerate(noticed) if n]
        _deliver([batch[i] for i in now], [outcomes[i] for i in now])
        task = asyncio.ensure_future(
            self._answer_after_lease([batch[i] for i in later], [outcomes[i] for i in later])
        )
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer_after_lease(
        self, batch: list[_Write], outcomes: list[tuple[Any, BaseException | None]]
    ) -> None:
        """Every other node has heard the change, or stopped trusting its cache, by now."""
        await asyncio.sleep(self.lease)
        _deliver(batch, outcomes)

    # -- reads --------------------------------------------------------------------

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        if not self._open or self._pool is None:
            raise StoreError("store is not open")
        if asyncio.current_task() is None:
            # A caller driving the coroutine outside any Task: asyncpg's connect needs
            # one (asyncio.timeout).
            return await asyncio.ensure_future(self._read(fn))
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    return await fn(conn)
            except _CONNECTION_ERRORS as exc:
                # A pooled connection that broke while idle (restart, failover): reads
                # are idempotent, so try once more on a fresh one.
                if attempt == 2:
                    raise StoreError(str(exc)) from exc
            except asyncpg.PostgresError as exc:
                raise StoreError(str(exc)) from exc
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._read(lambda conn: conn.fetch(sql, *args)))

    # -- objects ------------------------------------------------------------------

    async def create_object(self, rec: ObjectRecord) -> None:
        await self._write(sql.create_object(rec), rec)

    async def get_object(self, tenant: str, uid: str) -> ObjectRecord | None:
        rows = await self._fetch(
            f"{sql.OBJECT_SELECT} WHERE o.uid = $1 AND o.tenant = $2", uid, tenant
        )
        return sql.object_from_row(rows[0]) if rows else None

    async def update_object(self, rec: ObjectRecord, expected_version: int) -> None:
        rec.version = await self._write(sql.update_object(rec, expected_version))

    async def destroy_object(self, rec: ObjectRecord, expected_version: int) -> None:
        rec.key_blob = None
        await self.update_object(rec, expected_version)

    async def delete_object(self, tenant: str, uid: str) -> bool:
        return bool(await self._write(sql.delete_object(tenant, uid)))

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
        args: list[Any] = [tenant]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where = ["o.tenant = $1"]
        if object_type is not None:
            where.append(f"o.object_type = {arg(object_type)}")
        if states is not None:
            if not states:
                return []
            where.append(f"o.state = ANY({arg(list(states))}::int[])")
        for name, value in attr_equals:
            where.append(
                "EXISTS (SELECT 1 FROM attributes a"
                f" WHERE a.uid = o.uid AND a.name = {arg(name)} AND a.value = {arg(value)})"
            )
        sql = (
            f"SELECT o.uid FROM objects o WHERE {' AND '.join(where)}"
            f" ORDER BY o.created DESC, o.seq DESC LIMIT {arg(max_items)} OFFSET {arg(offset)}"
        )
        return [row[0] for row in await self._fetch(sql, *args)]

    async def list_objects(self, tenant: str | None = None) -> AsyncIterator[ObjectRecord]:
        async for rec in _paged(
            lambda last: self._fetch(
                f"{sql.OBJECT_SELECT} WHERE o.seq > $1 AND ($2::text IS NULL OR o.tenant = $2)"
                " ORDER BY o.seq LIMIT $3",
                last,
                tenant,
                _PAGE,
            )
        ):
            yield rec

    async def count_objects(self, tenant: str) -> dict[int, int]:
        rows = await self._fetch(
            "SELECT state, count(*) FROM objects WHERE tenant = $1 GROUP BY state", tenant
        )
        return {row[0]: int(row[1]) for row in rows}

    # -- tenants ------------------------------------------------------------------

    async def create_tenant(self, rec: TenantRecord) -> None:
        await self._write(sql.create_tenant(rec))

    async def get_tenant(self, name: str) -> TenantRecord | None:
        rows = await self._fetch(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1", name)
        return sql.tenant(rows[0]) if rows else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self._fetch(sql.ALL_TENANTS)
        return [sql.tenant(row) for row in rows]

    async def update_tenant(self, rec: TenantRecord) -> None:
        await self._write(sql.update_tenant(rec))

    # -- clients ------------------------------------------------------------------

    async def put_client(self, rec: ClientRecord) -> None:
        await self._write(sql.put_client(rec))

    async def remove_client(self, name: str) -> bool:
        return bool(await self._write(sql.remove_client(name)))

    async def _clients(self, where: str, *args: Any) -> list[ClientRecord]:
        rows = await self._fetch(f"{sql.CLIENTS_SELECT} {where} {sql.BY_NAME}", *args)
        return [ClientRecord(*row) for row in rows]

    async def get_client(self, name: str) -> ClientRecord | None:
        found = await self._clients("WHERE name = $1", name)
        return found[0] if found else None

    async def list_clients(self, tenant: str | None = None) -> list[ClientRecord]:
        if tenant is None:
            return await self._clients("")
        return await self._clients("WHERE tenant = $1", tenant)

    async def get_client_by_fingerprint(self, fingerprint: str) -> ClientRecord | None:
        found = await self._clients("WHERE fingerprint = $1", fingerprint)
        return found[0] if found else None

    # -- nodes and the data version ---------------------------------------------------

    async def put_node(self, rec: NodeRecord) -> None:
        await self._write(sql.put_node(rec))
        if rec.seen:
            self._reported = time.monotonic()
        if rec.seen and self._node is None:  # this process serves: watch for peers
            self._node = rec.id
            self._trust_from = time.monotonic() + self.discovery
            self._peer_watch = asyncio.ensure_future(self._watch_peers())

    def peers_may_cache(self) -> bool:
        """Whether another node may be serving from its cache (writes then wait out the
        lease before answering); True until the nodes table says otherwise."""
        stale = time.monotonic() - self._peers_seen > PEER_REFRESH * 1.5
        return self._peers or stale

    async def _watch_peers(self) -> None:
        while self._open:
            started = time.monotonic()
            try:
                nodes = await self.list_nodes()
            except StoreError:
                self._peers = True
            else:
                reports = self._peer_reports
                for n in nodes:
                    if n.id != self._node and reports.get(n.id, (None,))[0] != n.seen:
                        reports[n.id] = (n.seen, started)
                self._peers = any(
                    seen and started - changed < NODE_LIVENESS for seen, changed in reports.values()
                )
                self._peers_seen = started
            await asyncio.sleep(PEER_REFRESH)

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._fetch(
            f"SELECT {', '.join(NODE_FIELDS)} FROM nodes ORDER BY id {sql.BYTEWISE}"
        )
        return [NodeRecord(*row) for row in rows]

    async def data_version(self) -> int:
        rows = await self._fetch("SELECT value FROM meta WHERE key = 'data_version'")
        return int(rows[0][0])

    # -- change notifications -------------------------------------------------------

    def foreign_epoch(self) -> int:
        if self._listener is None and self._open:
            self._start_listener()
        now = time.monotonic()
        if (
            now >= self._hearing_until
            or now < self._trust_from
            or now - self._reported > NODE_LIVENESS - REPORT_MARGIN
        ):
            self._epoch += 1  # not provably hearing every change, or unknown to writers

        return self._epoch

    def subscribe(self, on_change: Callable[[StoreChange], None]) -> None:
        if not self._open:
            raise StoreError("store is not open")
        self._subscribers.append(on_change)
        if self._listener is None:
            self._start_listener()

    def _start_listener(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the event loop: the next call from it starts the listener
        self._listener = asyncio.ensure_future(self._listen())

    def _changed(self, change: StoreChange) -> None:
        if change.lost:
            self._hearing_until = 0.0
        self._epoch += 1
        for on_change in self._subscribers:
            try:
                on_change(change)
            except Exception:
                log.exception("store change subscriber failed")

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        token, _, lines = str(payload).partition("\n")
        if token == self._token:
            return  # this store's own write: its caller updated its cache itself
        for line in lines.split("\n"):
            change = sql.parse_notice(line)
            if change is not None:
                self._changed(change)

    async def _listen(self) -> None:
        """One listening connection, kept up and probed for as long as the store is open."""
        delay = 0.1
        probe_every = self.lease / 4
        while self._open:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect(LISTENER_NAME)
                await conn.add_listener(CHANNEL, self._heard)
                # Whatever changed while nobody listened was not heard: start clean.
                self._changed(StoreChange(lost=True))
                delay = 0.1
                while self._open:
                    sent = time.monotonic()
                    # A slow answer only ends the lease; a dead connection ends here.
                    await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT)
                    # Every notice committed before `sent` has been processed by now.
                    self._hearing_until = sent + self.lease
                    await asyncio.sleep(probe_every)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store notifications interrupted (%s); reconnecting", exc)
                self._changed(StoreChange(lost=True))
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, _RECONNECT_MAX)

    # -- backup -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[StoreSnapshot]:
        """One REPEATABLE READ, read-only transaction on a connection of its own:
        PostgreSQL's MVCC serves the old rows, writers are never held up."""
        if not self._open:
            raise StoreError("store is not open")
        conn = await self._connect("kmipfast-snapshot")
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                tenant_rows = await conn.fetch(sql.ALL_TENANTS)
                client_rows = await conn.fetch(f"{sql.CLIENTS_SELECT} {sql.BY_NAME}")
                tenants = [sql.tenant(row) for row in tenant_rows]
                clients = [ClientRecord(*row) for row in client_rows]
                count = int(await conn.fetchval("SELECT count(*) FROM objects"))

                objects = _paged(
                    lambda last: conn.fetch(
                        f"{sql.OBJECT_SELECT} WHERE o.seq > $1 ORDER BY o.seq LIMIT $2",
                        last,
                        _PAGE,
                    )
                )
                yield StoreSnapshot(tenants, clients, count, objects)
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
            raise StoreError(f"snapshot failed: {exc}") from exc
        finally:
            await conn.close()


async def _paged(
    fetch: Callable[[int], Awaitable[list[Any]]],
) -> AsyncIterator[ObjectRecord]:
    """Objects page by page in ``seq`` order: ``fetch(last)`` returns up to ``_PAGE``
    rows after seq ``last``."""
    last = 0
    while True:
        rows = await fetch(last)
        for row in rows:
            yield sql.object_from_row(row)
        if len(rows) < _PAGE:
            return
        last = rows[-1]["seq"]


def _as_store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.TransactionRollbackError):  # deadlock, serialization
        return StoreConflict(str(exc))
    return StoreError(str(exc))


def _deliver(batch: list[_Write], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    for write, (result, exc) in zip(batch, outcomes, strict=True):
        if write.future.done():
            continue
        if exc is None:
            write.future.set_result(result)
        else:
            write.future.set_exception(exc)
