"""The object store interface, backend-neutral (SQLite, PostgreSQL).

The store never sees plaintext key material: ``key_blob`` is the object key
wrapped by the tenant master key and ``sealed_master_key`` is the tenant
master key wrapped by the HSM root key.  Attribute values are the canonical
TTLV bytes of each AttributeValue; the store compares them byte for byte
(Locate) and never decodes them.

Contract shared by every backend:

- Every write is durable (committed and flushed to stable storage) before its
  coroutine returns.  Backends may group concurrent writes into one
  transaction, but a failing write fails only its own caller.
- Reads never run on the event loop thread.
- Objects are scoped by tenant: asking for another tenant's uid answers
  ``None``, exactly as if it did not exist (no existence oracle).
- When a write removes or replaces wrapped key bytes (Destroy, delete,
  re-wrap, shred), the old bytes are overwritten on disk, not just unlinked,
  before that write's coroutine returns.
- ``data_version()`` is a cheap counter that grows with every change to
  clients or tenants, made in the same transaction, so that a server (or
  another node) can poll it to reload its allow-list.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any


class StoreError(Exception):
    """The store could not do what was asked (I/O, closed store, bad input)."""


class StoreConflict(StoreError):
    """A uniqueness or optimistic-concurrency check failed; re-read and retry."""


@dataclass(slots=True)
class ObjectRecord:
    """One managed object as stored: wrapped material, opaque metadata, attributes."""

    uid: str
    tenant: str
    object_type: int
    state: int
    # Wrapped key material (opaque); None for objects without material and
    # after Destroy.  Kept out of repr so it never reaches a log line.
    key_blob: bytes | None = field(repr=False)
    # Opaque TTLV bytes describing the key block minus the material.
    key_meta: bytes = field(repr=False)
    # Attribute name -> instances (canonical TTLV of each AttributeValue);
    # list order is the KMIP attribute index.
    attributes: dict[str, list[bytes]] = field(repr=False)
    created: int  # POSIX seconds
    updated: int  # POSIX seconds
    # Optimistic concurrency counter; the store sets it to expected+1 on update.
    version: int


@dataclass(slots=True)
class TenantRecord:
    name: str
    root_label: str  # label of the tenant's root key in the HSM
    sealed_master_key: bytes | None = field(repr=False)  # TMK wrapped by the root key
    master_key_version: int
    created: int
    rotated: int | None
    # While a re-encryption moves objects to the current master key, the one they move
    # away from (sealed by the same root key); None otherwise.
    previous_sealed_master_key: bytes | None = field(default=None, repr=False)
    previous_master_key_version: int | None = None


@dataclass(slots=True)
class NodeRecord:
    """A running server process and the data version it has acted on."""

    id: str
    pid: int
    host: str
    data_version: int
    seen: int  # POSIX seconds of its last report
    held: str  # comma-separated tenants whose master keys it holds


@dataclass(slots=True)
class ClientRecord:
    name: str
    tenant: str
    fingerprint: str | None  # certificate fingerprint, for per-certificate rules
    subject: str | None
    issuer: str | None
    not_after: int | None
    created: int
    # A CA + subject rule (``fingerprint`` None): the shell-style pattern the subject's
    # common name must match, and the PEM of the CA that must have issued the certificate.
    ca_rule: str | None = None
    # What the client may do: "full", "vcenter", "array" or "readonly" (kmipfast.auth.ROLES).
    role: str = "full"
    ca_pem: str | None = None


def _fields(record: type, leave_out: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record) if f.name not in leave_out)


# Table columns in record field order, for the SQL stores (an object's attributes live in
# a table of their own).
OBJECT_FIELDS = _fields(ObjectRecord, leave_out=("attributes",))
TENANT_FIELDS = _fields(TenantRecord)
NODE_FIELDS = _fields(NodeRecord)
CLIENT_FIELDS = _fields(ClientRecord)
OBJECT_COLUMNS = ", ".join(OBJECT_FIELDS)
TENANT_COLUMNS = ", ".join(TENANT_FIELDS)
CLIENT_COLUMNS = ", ".join(CLIENT_FIELDS)


def row_of(rec: object, names: Sequence[str]) -> tuple[Any, ...]:
    """The values of ``names`` on ``rec``, in that order: one row's parameters."""
    return tuple(getattr(rec, name) for name in names)


@dataclass(frozen=True, slots=True)
class StoreChange:
    """What another process changed, as a shared store (PostgreSQL) announces it.

    ``uid`` set: that object of ``tenant`` changed or went away.  Neither set: clients
    or tenants changed (the data version moved).  ``lost``: changes may have been
    missed (the notification connection was down), so every cache must be dropped.
    """

    tenant: str | None = None
    uid: str | None = None
    lost: bool = False


@dataclass(slots=True)
class StoreStats:
    """Counters for metrics and tests; only the store's writer updates them."""

    commits: int = 0  # write transactions committed
    ops: int = 0  # write operations that succeeded
    failed_ops: int = 0  # write operations that failed (conflicts included)
    max_batch: int = 0  # most operations seen in one transaction
    scrubs: int = 0  # checkpoints run to overwrite removed key bytes


@dataclass(slots=True)
class StoreSnapshot:
    """Every row a backup holds, as of one instant (see :meth:`Store.snapshot`)."""

    tenants: list[TenantRecord]  # root-key records and sealed master keys
    clients: list[ClientRecord]
    object_count: int
    # The objects with their attributes, oldest first (insertion order), fetched in
    # pages from the same snapshot; iterate once, inside the ``async with``.
    objects: AsyncIterator[ObjectRecord]


class Store(abc.ABC):
    """Async object, tenant and client store.  Use ``async with store:`` or open()/close()."""

    stats: StoreStats

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish every queued write, make removed bytes unrecoverable, disconnect."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- objects --------------------------------------------------------------

    @abc.abstractmethod
    async def create_object(self, rec: ObjectRecord) -> None:
        """Insert a new object; durable on return.  Existing uid -> StoreConflict,
        unknown tenant -> StoreError."""

    @abc.abstractmethod
    async def get_object(self, tenant: str, uid: str) -> ObjectRecord | None:
        """The object, or None if it does not exist or belongs to another tenant."""

    @abc.abstractmethod
    async def update_object(self, rec: ObjectRecord, expected_version: int) -> None:
        """Overwrite every column and the attribute set of ``rec.uid``.

        Fails with StoreConflict unless the stored row belongs to ``rec.tenant``
        and has version ``expected_version``.  On success the stored version
        (and ``rec.version``) becomes ``expected_version + 1``.  If the stored
        key_blob is cleared or replaced, the old bytes are overwritten on disk
        before this returns.
        """

    @abc.abstractmethod
    async def destroy_object(self, rec: ObjectRecord, expected_version: int) -> None:
        """``update_object`` with the key material removed (``rec.key_blob`` is set
        to None): the row and its attributes stay, the wrapped bytes are gone from
        the database files when this returns."""

    @abc.abstractmethod
    async def delete_object(self, tenant: str, uid: str) -> bool:
        """Remove the row and its attributes; False if there was no such object."""

    @abc.abstractmethod
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
        """Uids of the tenant's objects matching every filter, newest first.

        ``attr_equals`` pairs match when the object has an instance of that
        attribute whose canonical bytes are equal.  Filtering is done by the
        database, not in Python.
        """

    @abc.abstractmethod
    def list_objects(self, tenant: str | None = None) -> AsyncIterator[ObjectRecord]:
        """Every object (of one tenant, or all), oldest first, fetched in pages."""

    @abc.abstractmethod
    async def count_objects(self, tenant: str) -> dict[int, int]:
        """State -> number of the tenant's objects in that state."""

    # -- tenants --------------------------------------------------------------

    @abc.abstractmethod
    async def create_tenant(self, rec: TenantRecord) -> None:
        """Existing name -> StoreConflict."""

    @abc.abstractmethod
    async def get_tenant(self, name: str) -> TenantRecord | None: ...

    @abc.abstractmethod
    async def list_tenants(self) -> list[TenantRecord]: ...

    @abc.abstractmethod
    async def update_tenant(self, rec: TenantRecord) -> None:
        """Overwrite the tenant row; unknown name -> StoreError.  A replaced or
        cleared sealed master key is overwritten on disk before this returns."""

    # -- clients (the allow-list) ----------------------------------------------

    @abc.abstractmethod
    async def put_client(self, rec: ClientRecord) -> None:
        """Insert or replace by name.  Fingerprint already used by another
        client -> StoreConflict; unknown tenant -> StoreError."""

    @abc.abstractmethod
    async def remove_client(self, name: str) -> bool:
        """False if there was no such client."""

    @abc.abstractmethod
    async def get_client(self, name: str) -> ClientRecord | None: ...

    @abc.abstractmethod
    async def list_clients(self, tenant: str | None = None) -> list[ClientRecord]: ...

    @abc.abstractmethod
    async def get_client_by_fingerprint(self, fingerprint: str) -> ClientRecord | None: ...

    # -- nodes ------------------------------------------------------------------
    @abc.abstractmethod
    async def put_node(self, rec: NodeRecord) -> None:
        """Insert or replace a node's report (does not bump the data version)."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeRecord]: ...

    def foreign_epoch(self) -> int:
        """A number that moves on whenever another process may have changed objects
        (see ``SqliteStore.foreign_epoch``); caches drop everything when it does.  Cheap
        and synchronous: called before every cache hit.  A backend that no other process
        writes may keep the default."""
        return 0

    @abc.abstractmethod
    async def data_version(self) -> int:
        """Counter bumped in the same transaction as every client or tenant change."""

    # -- change notifications (shared stores) -------------------------------------

    def subscribe(self, on_change: Callable[[StoreChange], None]) -> None:  # noqa: B027
        """Call ``on_change`` (on the event loop) for each change other processes make,
        until close().  A store only one process writes (SQLite) announces nothing:
        its users poll ``data_version()`` as before."""

    # -- backup -----------------------------------------------------------------
    def snapshot(self) -> contextlib.AbstractAsyncContextManager[StoreSnapshot]:
        """``async with store.snapshot() as snap:`` every tenant, client and object as
        of one instant (one read transaction), nodes excluded; writers are not held up
        for the duration (kmipfast.backup).  Backends that cannot do this raise."""
        raise StoreError(f"{type(self).__name__} cannot take a consistent snapshot")


def open_store(url: str, data_dir: Path, **options: int) -> Store:
    """Build (not open) the store named by ``url``.

    ``sqlite:///name.sqlite3`` is relative to ``data_dir``;
    ``sqlite:////abs/path.sqlite3`` is absolute.  ``postgresql://...`` is a libpq-style
    URL (several ``host:port`` pairs and ``target_session_attrs`` allowed).  ``options``
    go to the backend (SQLite: ``group_commit_max``, ``readers``, ``busy_timeout_ms``;
    PostgreSQL: ``group_commit_max``, ``readers``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"store url {url!r} has no scheme (expected sqlite:///file)")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"sqlite url {url!r} must look like sqlite:///file.sqlite3")
        if rest[1:].startswith(":memory:"):
            raise StoreError("an in-memory SQLite store cannot be durable")
        path = Path(rest[1:])
        if not path.is_absolute():
            path = data_dir / path
        from kmipfast.store.sqlite import SqliteStore

        return SqliteStore(path, **options)
    if scheme in ("postgres", "postgresql"):
        from kmipfast.store.postgres import PostgresStore

        pg_options = {k: v for k, v in options.items() if k in ("group_commit_max", "readers")}
        return PostgresStore(url, **pg_options)
    raise StoreError(f"unknown store scheme {scheme!r}")
