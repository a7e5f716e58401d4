"""The PostgreSQL store's schema, statements and write operations (see postgres.py).

Each write is a closure ``fn(conn) -> (result, notice)`` that the store's writer runs
inside its group-commit transaction, in a savepoint of its own; ``notice`` is what
other nodes must hear once it commits (see postgres.py, "Coherence between nodes").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

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
    StoreChange,
    StoreConflict,
    StoreError,
    TenantRecord,
    row_of,
)

NOTIFY_MAX = 7000  # bytes per pg_notify payload (the server's limit is 8000)

# A write: runs inside the writer's transaction (in its own savepoint) and returns
# (result, notice): what to tell other nodes once committed, or None.
WriteFn = Callable[[asyncpg.Connection], Awaitable[tuple[Any, str | None]]]


# Versioned migrations, the same numbering as SQLite's.  Never edit a released
# entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        root_label TEXT NOT NULL,
        sealed_master_key BYTEA,
        master_key_version BIGINT NOT NULL,
        created BIGINT NOT NULL,
        rotated BIGINT
    );
    CREATE TABLE clients (
        name TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        fingerprint TEXT UNIQUE,
        subject TEXT,
        issuer TEXT,
        not_after BIGINT,
        created BIGINT NOT NULL,
        ca_rule TEXT
    );
    CREATE INDEX clients_tenant ON clients(tenant);
    CREATE TABLE objects (
        seq BIGSERIAL UNIQUE,
        uid TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        object_type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        key_blob BYTEA,
        key_meta BYTEA NOT NULL,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        version BIGINT NOT NULL
    );
    CREATE INDEX objects_tenant_created ON objects(tenant, created, seq);
    CREATE TABLE attributes (
        uid TEXT NOT NULL REFERENCES objects(uid) ON DELETE CASCADE,
        name TEXT NOT NULL,
        idx INTEGER NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (uid, name, idx)
    );
    -- A hash index: a B-tree entry cannot exceed ~2.7 kB, an attribute value can.
    CREATE INDEX attributes_value ON attributes USING hash (value);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('data_version', 0);
    """,
    """
    ALTER TABLE tenants ADD COLUMN previous_sealed_master_key BYTEA;
    ALTER TABLE tenants ADD COLUMN previous_master_key_version BIGINT;
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        data_version BIGINT NOT NULL,
        seen BIGINT NOT NULL,
        held TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE clients ADD COLUMN role TEXT NOT NULL DEFAULT 'full';
    ALTER TABLE clients ADD COLUMN ca_pem TEXT;
    """,
)

# An object row with its attributes, in one statement (one snapshot).
OBJECT_SELECT = (
    "SELECT o.seq, " + ", ".join(f"o.{f}" for f in OBJECT_FIELDS) + ","
    ' coalesce((SELECT array_agg(a.name ORDER BY a.name COLLATE "C", a.idx)'
    " FROM attributes a WHERE a.uid = o.uid), '{}') AS names,"
    ' coalesce((SELECT array_agg(a.value ORDER BY a.name COLLATE "C", a.idx)'
    " FROM attributes a"
    " WHERE a.uid = o.uid), '{}') AS vals"
    " FROM objects o"
)
# Names sort as SQLite sorts them (bytewise), whatever the database's collation.
BYTEWISE = 'COLLATE "C"'
BY_NAME = f"ORDER BY name {BYTEWISE}"
ALL_TENANTS = f"SELECT {TENANT_COLUMNS} FROM tenants {BY_NAME}"
CLIENTS_SELECT = f"SELECT {CLIENT_COLUMNS} FROM clients"
BUMP_DATA_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'data_version' RETURNING value"
INSERT_ATTRIBUTES = (
    "INSERT INTO attributes (uid, name, idx, value)"
    " SELECT $1, a.name, a.idx, a.value FROM unnest($2::text[], $3::int[], $4::bytea[])"
    " AS a(name, idx, value)"
)
INSERT_OBJECTS_WITH_ATTRIBUTES = (
    f"WITH new_objects AS (INSERT INTO objects ({OBJECT_COLUMNS})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::bytea[],"
    " $6::bytea[], $7::bigint[], $8::bigint[], $9::bigint[]))"
    " INSERT INTO attributes (uid, name, idx, value)"
    " SELECT * FROM unnest($10::text[], $11::text[], $12::int[], $13::bytea[])"
)

VERSION_NOTICE = json.dumps(["v"])


def params(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


def attribute_arrays(rec: ObjectRecord) -> tuple[list[str], list[int], list[bytes]]:
    names: list[str] = []
    idxs: list[int] = []
    values: list[bytes] = []
    for name, instances in rec.attributes.items():
        for idx, value in enumerate(instances):
            names.append(name)
            idxs.append(idx)
            values.append(value)
    return names, idxs, values


def object_notice(tenant: str, uid: str) -> str:
    return json.dumps(["o", tenant, uid])


def object_from_row(row: Any) -> ObjectRecord:
    attrs: dict[str, list[bytes]] = {}
    for name, value in zip(row["names"], row["vals"], strict=True):
        attrs.setdefault(name, []).append(bytes(value))
    blob = row["key_blob"]
    return ObjectRecord(
        uid=row["uid"],
        tenant=row["tenant"],
        object_type=row["object_type"],
        state=row["state"],
        key_blob=None if blob is None else bytes(blob),
        key_meta=bytes(row["key_meta"]),
        attributes=attrs,
        created=row["created"],
        updated=row["updated"],
        version=row["version"],
    )


def constraint_error(exc: asyncpg.IntegrityConstraintViolationError, what: str) -> StoreError:
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return StoreError(f"{what}: unknown tenant")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return StoreConflict(f"{what}: already exists")
    return StoreError(f"{what}: {exc}")


# -- write operations (run by the writer, inside its transaction) ---------------


def create_object(rec: ObjectRecord) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[None, None]:
        try:
            await conn.execute(
                f"INSERT INTO objects ({OBJECT_COLUMNS}) VALUES ({params(len(OBJECT_FIELDS))})",
                *row_of(rec, OBJECT_FIELDS),
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise constraint_error(exc, f"object {rec.uid}") from None
        if rec.attributes:
            await conn.execute(INSERT_ATTRIBUTES, rec.uid, *attribute_arrays(rec))
        # Nobody can hold a new object in a cache: nothing to announce.
        return None, None

    return fn


async def create_objects_together(conn: asyncpg.Connection, recs: list[ObjectRecord]) -> None:
    """Inserts new objects and their attributes in one statement, which outside a
    transaction block commits or fails as a whole (the attributes' foreign key is
    checked at the end of the statement, after the objects are in)."""
    uids: list[str] = []
    names: list[str] = []
    idxs: list[int] = []
    values: list[bytes] = []
    for rec in recs:
        n, i, v = attribute_arrays(rec)
        uids += [rec.uid] * len(n)
        names += n
        idxs += i
        values += v
    columns = [[getattr(r, name) for r in recs] for name in OBJECT_FIELDS]
    await conn.execute(INSERT_OBJECTS_WITH_ATTRIBUTES, *columns, uids, names, idxs, values)


def update_object(rec: ObjectRecord, expected_version: int) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[int, str]:
        # The version check and the write are one statement: a concurrent writer on
        # another node makes this one wait, then re-check against its result.
        done = await conn.fetchval(
            "UPDATE objects SET object_type = $3, state = $4, key_blob = $5, key_meta = $6,"
            " created = $7, updated = $8, version = $9"
            " WHERE uid = $1 AND tenant = $2 AND version = $10 RETURNING version",
            *row_of(rec, OBJECT_FIELDS[:8]),
            expected_version + 1,
            expected_version,
        )
        if done is None:
            found = await conn.fetchval(
                "SELECT version FROM objects WHERE uid = $1 AND tenant = $2", rec.uid, rec.tenant
            )
            if found is None:
                raise StoreConflict(f"object {rec.uid} no longer exists")
            raise StoreConflict(
                f"object {rec.uid} changed (version {found}, expected {expected_version})"
            )
        await conn.execute("DELETE FROM attributes WHERE uid = $1", rec.uid)
        if rec.attributes:
            await conn.execute(INSERT_ATTRIBUTES, rec.uid, *attribute_arrays(rec))
        return expected_version + 1, object_notice(rec.tenant, rec.uid)

    return fn


def delete_object(tenant: str, uid: str) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[bool, str | None]:
        gone = await conn.fetchval(
            "DELETE FROM objects WHERE uid = $1 AND tenant = $2 RETURNING true", uid, tenant
        )
        return bool(gone), object_notice(tenant, uid) if gone else None

    return fn


def create_tenant(rec: TenantRecord) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[None, str]:
        try:
            await conn.execute(
                f"INSERT INTO tenants ({TENANT_COLUMNS}) VALUES ({params(len(TENANT_FIELDS))})",
                *row_of(rec, TENANT_FIELDS),
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise constraint_error(exc, f"tenant {rec.name}") from None
        await conn.execute(BUMP_DATA_VERSION)
        return None, VERSION_NOTICE

    return fn


def update_tenant(rec: TenantRecord) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[None, str]:
        sets = ", ".join(f"{f} = ${i}" for i, f in enumerate(TENANT_FIELDS[1:], start=2))
        found = await conn.fetchval(
            f"UPDATE tenants SET {sets} WHERE name = $1 RETURNING true", *row_of(rec, TENANT_FIELDS)
        )
        if not found:
            raise StoreError(f"tenant {rec.name} does not exist")
        await conn.execute(BUMP_DATA_VERSION)
        return None, VERSION_NOTICE

    return fn


def put_node(rec: NodeRecord) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[None, None]:
        await conn.execute(
            f"INSERT INTO nodes ({', '.join(NODE_FIELDS)}) VALUES ({params(len(NODE_FIELDS))})"
            " ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host,"
            " data_version = excluded.data_version, seen = excluded.seen, held = excluded.held",
            *row_of(rec, NODE_FIELDS),
        )
        return None, None

    return fn


def put_client(rec: ClientRecord) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[None, str]:
        updates = ", ".join(f"{f} = excluded.{f}" for f in CLIENT_FIELDS[1:])
        try:
            await conn.execute(
                f"INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ({params(len(CLIENT_FIELDS))})"
                f" ON CONFLICT (name) DO UPDATE SET {updates}",
                *row_of(rec, CLIENT_FIELDS),
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise constraint_error(exc, f"client {rec.name}") from None
        await conn.execute(BUMP_DATA_VERSION)
        return None, VERSION_NOTICE

    return fn


def remove_client(name: str) -> WriteFn:
    async def fn(conn: asyncpg.Connection) -> tuple[bool, str | None]:
        if not await conn.fetchval("DELETE FROM clients WHERE name = $1 RETURNING true", name):
            return False, None
        await conn.execute(BUMP_DATA_VERSION)
        return True, VERSION_NOTICE

    return fn


def chunks(notices: list[str]) -> list[str]:
    """Notices joined by newlines into payloads under the server's size limit."""
    out: list[str] = []
    buf = ""
    for notice in notices:
        if buf and len(buf) + 1 + len(notice) > NOTIFY_MAX:
            out.append(buf)
            buf = ""
        buf = f"{buf}\n{notice}" if buf else notice
    if buf:
        out.append(buf)
    return out


def parse_notice(line: str) -> StoreChange | None:
    try:
        parts = json.loads(line)
    except ValueError:
        return None
    if parts == ["v"]:
        return StoreChange()
    if isinstance(parts, list) and len(parts) == 3 and parts[0] == "o":
        return StoreChange(tenant=str(parts[1]), uid=str(parts[2]))
    return None


def tenant(row: Any) -> TenantRecord:
    rec = TenantRecord(*row)
    for name in ("sealed_master_key", "previous_sealed_master_key"):
        value = getattr(rec, name)
        if value is not None:
            setattr(rec, name, bytes(value))
    return rec
