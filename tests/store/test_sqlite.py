"""The store contract (DESIGN §5) on every backend: durability, group commit, tenants,
Locate, data version; and SQLite's own: destroy means gone from the files, WAL, migrations.

Tests taking ``store_url`` run on SQLite and PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kmipfast.store import (
    ClientRecord,
    ObjectRecord,
    Store,
    StoreConflict,
    StoreError,
    TenantRecord,
    open_store,
)
from kmipfast.store.postgres import PostgresStore
from kmipfast.store.sqlite import MIGRATIONS, SqliteStore

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SYMMETRIC_KEY, SECRET_DATA = 2, 7
PRE_ACTIVE, ACTIVE, DESTROYED = 1, 2, 6


def obj(uid: str, tenant: str = "t1", **kw: object) -> ObjectRecord:
    fields: dict[str, object] = {
        "uid": uid,
        "tenant": tenant,
        "object_type": SYMMETRIC_KEY,
        "state": PRE_ACTIVE,
        "key_blob": b"wrapped:" + uid.encode(),
        "key_meta": b"meta",
        "attributes": {},
        "created": 1_700_000_000,
        "updated": 1_700_000_000,
        "version": 1,
    }
    fields.update(kw)
    return ObjectRecord(**fields)  # type: ignore[arg-type]


def tenant(name: str, sealed: bytes | None = b"sealed-tmk") -> TenantRecord:
    return TenantRecord(name, f"root-{name}", sealed, 1, 1_700_000_000, None)


def with_store(
    where: Path | str, body: Callable[[Store], Awaitable[T]], *, tenants: bool = True
) -> T:
    """Open the store at ``where`` (a SQLite file or a store URL), creating tenants t1
    and t2 once, run ``body``, close."""

    async def main() -> T:
        store = SqliteStore(where) if isinstance(where, Path) else open_store(where, Path("/"))
        async with store:
            if tenants and await store.get_tenant("t1") is None:
                await store.create_tenant(tenant("t1"))
                await store.create_tenant(tenant("t2"))
            return await body(store)

    return asyncio.run(main())


def test_create_get_round_trip(store_url: str) -> None:
    attrs = {"Name": [b"\x42first", b"\x42second"], "x-Component": [b"c"], "Empty": []}
    rec = obj("u1", attributes=attrs, key_blob=os.urandom(40), key_meta=b"\x01\x02")

    async def body(store: Store) -> ObjectRecord | None:
        await store.create_object(rec)
        return await store.get_object("t1", "u1")

    got = with_store(store_url, body)
    # An attribute with no instances has no rows; index order is kept.
    assert got == obj(
        "u1",
        attributes={k: v for k, v in attrs.items() if v},
        key_blob=rec.key_blob,
        key_meta=b"\x01\x02",
    )
    assert rec.key_blob is not None and repr(rec.key_blob) not in repr(got)


def test_another_tenants_uid_is_not_found(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_object(obj("u1", tenant="t1"))
        assert await store.get_object("t2", "u1") is None
        assert await store.get_object("t1", "missing") is None
        with pytest.raises(StoreConflict):
            await store.update_object(obj("u1", tenant="t2"), expected_version=1)
        assert await store.delete_object("t2", "u1") is False
        assert await store.locate("t2") == []
        got = await store.get_object("t1", "u1")
        assert got is not None and got.version == 1

    with_store(store_url, body)


def test_create_conflicts_and_unknown_tenant(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_object(obj("u1"))
        with pytest.raises(StoreConflict):
            await store.create_object(obj("u1", tenant="t2"))
        with pytest.raises(StoreError) as err:
            await store.create_object(obj("u2", tenant="nobody"))
        assert not isinstance(err.value, StoreConflict)
        with pytest.raises(StoreConflict):
            await store.create_tenant(tenant("t1"))

    with_store(store_url, body)


def test_update_checks_version_and_replaces_attributes(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_object(obj("u1", attributes={"a": [b"1", b"2"], "b": [b"x"]}))
        rec = await store.get_object("t1", "u1")
        assert rec is not None
        rec.state = ACTIVE
        rec.attributes = {"a": [b"3"], "c": [b"y", b"z"]}
        await store.update_object(rec, expected_version=1)
        assert rec.version == 2
        assert await store.get_object("t1", "u1") == rec
        with pytest.raises(StoreConflict):
            await store.update_object(rec, expected_version=1)  # stale
        assert await store.delete_object("t1", "u1") is True
        with pytest.raises(StoreConflict):
            await store.update_object(rec, expected_version=2)  # gone

    with_store(store_url, body)


# A child process that creates objects from 8 concurrent writers and prints
# each uid only after its create returned; the parent kill -9s it mid-stream.
_CHILD = """
import asyncio, os, sys
from pathlib import Path
from kmipfast.store import ObjectRecord, TenantRecord
from kmipfast.store import open_store

async def writer(store, w):
    n = 0
    while True:
        uid = f"w{w}-{n}"
        await store.create_object(ObjectRecord(uid, "t1", 2, 1, os.urandom(40), b"m",
                                               {"x-n": [str(n).encode()]}, 1, 1, 1))
        os.write(1, (uid + "\\n").encode())
        n += 1

async def main():
    store = open_store(sys.argv[1], Path("/"))
    await store.open()
    await store.create_tenant(TenantRecord("t1", "r", None, 1, 1, None))
    os.write(1, b"ready\\n")
    await asyncio.gather(*(writer(store, w) for w in range(8)))

asyncio.run(main())
"""


def test_acknowledged_creates_survive_kill_9(store_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, store_url], stdout=subprocess.PIPE, env=env
    ) as proc:
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 60
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while out.count(b"\n") < 400:
                    assert time.monotonic() < deadline, f"child too slow: {out[-200:]!r}"
                    assert proc.poll() is None, "child exited early"
                    if sel.select(timeout=1):
                        out += os.read(proc.stdout.fileno(), 65536)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
        out += proc.stdout.read()  # lines written before it died were acknowledged too
    lines = out.split(b"\n")[:-1]  # drop a possibly partial last line
    assert lines[0] == b"ready"
    acked = [line.decode() for line in lines[1:]]
    assert len(acked) >= 399

    async def body(store: Store) -> list[str]:
        return [uid for uid in acked if await store.get_object("t1", uid) is None]

    assert with_store(store_url, body, tenants=False) == []


def test_group_commit_batches_concurrent_creates(store_url: str) -> None:
    async def body(store: Store) -> tuple[int, int]:
        before = store.stats.commits
        await asyncio.gather(*(store.create_object(obj(f"u{i}")) for i in range(200)))
        return store.stats.commits - before, len(await store.locate("t1"))

    commits, found = with_store(store_url, body)
    assert found == 200
    assert commits <= 50, f"200 concurrent creates took {commits} transactions"


def test_failing_write_fails_only_itself_within_a_batch(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_object(obj("existing"))
        stale = await store.get_object("t1", "existing")
        assert stale is not None
        # SQLite: another connection (as a CLI process would) holds the write lock,
        # so every write below queues up behind the writer's BEGIN; the lock is
        # released only after all of them are queued.  (PostgreSQL's writer is a task
        # on this loop: writes queued in one turn of the loop reach it together.)
        other = sqlite3.connect(":memory:", isolation_level=None)
        if store_url.startswith("sqlite:"):
            other = sqlite3.connect(store_url[len("sqlite:///") :], isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
        before = store.stats.commits
        writes = [
            store.update_object(stale, expected_version=7)
            if i == 150
            else store.create_object(obj("existing" if i == 100 else f"u{i}"))
            for i in range(200)
        ]
        tasks = [asyncio.ensure_future(w) for w in writes]
        if other.in_transaction:
            asyncio.get_running_loop().call_soon(other.execute, "ROLLBACK")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        other.close()
        # At most two transactions for 200 writes, so each failure shared its
        # transaction with successful writes.
        assert store.stats.commits - before <= 2
        assert isinstance(results[100], StoreConflict)
        assert isinstance(results[150], StoreConflict)
        assert [i for i, r in enumerate(results) if r is not None] == [100, 150]
        assert len(await store.locate("t1")) == 199  # 198 new + existing
        got = await store.get_object("t1", "existing")
        assert got is not None and got.version == 1

    with_store(store_url, body)


def test_creates_committed_together_keep_attributes_and_isolate_a_duplicate(
    store_url: str,
) -> None:
    """SQLite inserts a batch of pure creates in two statements; a duplicate among them
    falls back to one by one, so only the duplicate fails and nothing is half-written."""

    async def body(store: Store) -> None:
        await store.create_object(obj("dup", attributes={"x-old": [b"kept"]}))
        other = sqlite3.connect(":memory:", isolation_level=None)
        if store_url.startswith("sqlite:"):  # hold the lock so all 50 queue up together
            other = sqlite3.connect(store_url[len("sqlite:///") :], isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
        attrs = lambda i: {"Name": [f"n{i}".encode()], "x-i": [b"a", str(i).encode()]}  # noqa: E731
        before = store.stats.commits
        tasks = [
            asyncio.ensure_future(
                store.create_object(obj("dup" if i == 20 else f"c{i}", attributes=attrs(i)))
            )
            for i in range(50)
        ]
        if other.in_transaction:
            asyncio.get_running_loop().call_soon(other.execute, "ROLLBACK")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        other.close()
        assert store.stats.commits - before <= 2
        assert [i for i, r in enumerate(results) if r is not None] == [20]
        assert isinstance(results[20], StoreConflict)
        for i in (0, 19, 21, 49):
            got = await store.get_object("t1", f"c{i}")
            assert got is not None and got.attributes == attrs(i)
        dup = await store.get_object("t1", "dup")
        assert dup is not None and dup.attributes == {"x-old": [b"kept"]}
        assert await store.locate("t1", attr_equals=[("x-i", b"33")]) == ["c33"]

    with_store(store_url, body)


def test_locate_filters_in_sql_newest_first(store_url: str) -> None:
    alg, aes, hmac = "Cryptographic Algorithm", b"\x05AES", b"\x05HMAC"
    specs = [  # uid, type, state, algorithm, x-Component
        ("k1", SYMMETRIC_KEY, ACTIVE, aes, b"vsan"),
        ("k2", SYMMETRIC_KEY, PRE_ACTIVE, aes, b"vsan"),
        ("k3", SYMMETRIC_KEY, ACTIVE, hmac, b"vsan"),
        ("k4", SECRET_DATA, ACTIVE, aes, b"vm"),
        ("k5", SYMMETRIC_KEY, ACTIVE, aes, b"vm"),
        ("k6", SYMMETRIC_KEY, ACTIVE, aes, b"vsan"),
    ]

    async def body(store: Store) -> None:
        for n, (uid, kind, state, a, comp) in enumerate(specs):
            attrs = {alg: [a], "x-Component": [b"other", comp]}
            await store.create_object(
                obj(uid, object_type=kind, state=state, attributes=attrs, created=1000 + n // 2)
            )
        await store.create_object(
            obj(
                "other-tenant",
                tenant="t2",
                state=ACTIVE,
                attributes={alg: [aes], "x-Component": [b"vsan"]},
            )
        )
        # Newest first; objects created in the same second, last inserted first.
        assert await store.locate("t1") == ["k6", "k5", "k4", "k3", "k2", "k1"]
        assert await store.locate("t1", object_type=SECRET_DATA) == ["k4"]
        assert await store.locate("t1", states=[PRE_ACTIVE]) == ["k2"]
        assert await store.locate("t1", states=[PRE_ACTIVE, DESTROYED]) == ["k2"]
        assert await store.locate("t1", states=[]) == []
        both = [(alg, aes), ("x-Component", b"vsan")]
        assert await store.locate("t1", attr_equals=both) == ["k6", "k2", "k1"]
        assert await store.locate("t1", attr_equals=[(alg, b"\x05AE")]) == []
        assert await store.locate("t1", attr_equals=[("x-Component", aes)]) == []
        assert await store.locate(
            "t1", object_type=SYMMETRIC_KEY, states=[ACTIVE], attr_equals=both
        ) == ["k6", "k1"]
        assert await store.locate("t1", attr_equals=both, max_items=2) == ["k6", "k2"]
        assert await store.locate("t1", attr_equals=both, offset=1) == ["k2", "k1"]
        assert await store.locate("t1", attr_equals=both, max_items=1, offset=2) == ["k1"]
        assert await store.locate("t1", attr_equals=both, offset=3) == []
        assert await store.locate("t2", attr_equals=both) == ["other-tenant"]
        with pytest.raises(ValueError):
            await store.locate("t1", offset=-1)

    with_store(store_url, body)


def _in_files(path: Path, needle: bytes) -> list[str]:
    found = []
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(path) + suffix)
        if f.exists() and needle in f.read_bytes():
            found.append(f.name)
    return found


def test_destroy_overwrites_key_bytes_in_db_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    secret, kept, shredded = os.urandom(32), os.urandom(32), os.urandom(32)

    async def body(store: SqliteStore) -> None:
        await store.update_tenant(tenant("t1", sealed=shredded))
        await store.create_object(obj("kept", key_blob=kept))
        await store.create_object(obj("doomed", key_blob=secret, attributes={"Name": [b"n"]}))
        await store.create_object(obj("deleted", key_blob=secret[::-1]))
        assert _in_files(path, secret), "the scan must see the blob before destroy"
        assert _in_files(path, secret[::-1])
        rec = await store.get_object("t1", "doomed")
        assert rec is not None
        rec.state = DESTROYED
        await store.destroy_object(rec, expected_version=1)
        assert _in_files(path, secret) == []
        assert await store.delete_object("t1", "deleted")
        assert _in_files(path, secret[::-1]) == []
        await store.update_tenant(tenant("t1", sealed=None))  # crypto-shred
        assert _in_files(path, shredded) == []
        assert _in_files(path, kept)  # untouched
        got = await store.get_object("t1", "doomed")
        assert got is not None
        assert (got.state, got.key_blob, got.attributes, got.version) == (
            DESTROYED,
            None,
            {"Name": [b"n"]},
            2,
        )

    with_store(path, body)
    assert _in_files(path, secret) == []


def test_data_version_bumps_on_client_and_tenant_changes(store_url: str) -> None:
    async def body(store: Store) -> None:
        v0 = await store.data_version()
        vc = ClientRecord("vc1", "t1", "ab:cd", "CN=vc", "CN=vc", 1_900_000_000, 1)
        await store.put_client(vc)
        v1 = await store.data_version()
        assert v1 > v0
        assert await store.get_client_by_fingerprint("ab:cd") == vc
        assert await store.get_client("vc1") == vc
        with pytest.raises(StoreConflict):  # a certificate maps to one client
            await store.put_client(ClientRecord("vc2", "t2", "ab:cd", None, None, None, 1))
        with pytest.raises(StoreError):
            await store.put_client(ClientRecord("x", "nobody", None, None, None, None, 1))
        assert await store.data_version() == v1  # failed writes change nothing
        rule = ClientRecord("hosts", "t2", None, None, "CN=CA", None, 1, ca_rule="CN=esx-*")
        await store.put_client(rule)
        await store.put_client(ClientRecord("vc1", "t1", "ef:01", None, None, None, 2))  # replace
        v2 = await store.data_version()
        assert v2 > v1
        assert await store.get_client_by_fingerprint("ab:cd") is None
        assert [c.name for c in await store.list_clients()] == ["hosts", "vc1"]
        assert await store.list_clients("t2") == [rule]
        assert await store.remove_client("vc1") is True
        v3 = await store.data_version()
        assert v3 > v2
        assert await store.remove_client("vc1") is False
        assert await store.data_version() == v3
        await store.update_tenant(tenant("t2", sealed=b"new"))
        assert await store.data_version() > v3
        with pytest.raises(StoreError):
            await store.update_tenant(tenant("nobody"))

    with_store(store_url, body)


def test_reopen_keeps_data_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"

    async def create(store: SqliteStore) -> None:
        await store.create_object(obj("u1"))

    async def check(store: SqliteStore) -> None:
        assert await store.get_object("t1", "u1") is not None
        assert [t.name for t in await store.list_tenants()] == ["t1", "t2"]

    with_store(path, create)
    with_store(path, check)
    with_store(path, check)
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_list_and_count_objects(store_url: str) -> None:
    async def body(store: Store) -> None:
        for i in range(1203):  # more than two pages
            await store.create_object(
                obj(
                    f"u{i}",
                    state=ACTIVE if i % 3 else PRE_ACTIVE,
                    attributes={"i": [str(i).encode()]},
                )
            )
        await store.create_object(obj("x", tenant="t2"))
        listed = [rec async for rec in store.list_objects("t1")]
        assert [r.uid for r in listed] == [f"u{i}" for i in range(1203)]
        assert listed[7].attributes == {"i": [b"7"]}
        assert len([rec async for rec in store.list_objects()]) == 1204
        assert await store.count_objects("t1") == {PRE_ACTIVE: 401, ACTIVE: 802}

    with_store(store_url, body)


def test_close_finishes_queued_writes(store_url: str) -> None:
    async def body(store: Store) -> None:
        tasks = [asyncio.ensure_future(store.create_object(obj(f"u{i}"))) for i in range(50)]
        closing = asyncio.ensure_future(store.close())  # queued behind the creates
        await asyncio.gather(*tasks)
        await closing
        with pytest.raises(StoreError):
            await store.create_object(obj("late"))

    with_store(store_url, body)

    async def count(store: Store) -> int:
        return len(await store.locate("t1"))

    assert with_store(store_url, count) == 50


def test_open_store_urls(tmp_path: Path) -> None:
    store = open_store("sqlite:///sub/kms.sqlite3", tmp_path)
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "sub" / "kms.sqlite3"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.sqlite3", Path("/elsewhere"))
    assert isinstance(absolute, SqliteStore) and absolute.path == tmp_path / "abs.sqlite3"
    pg = open_store("postgresql://kms:pw@db1:5432,db2:5432/kms", tmp_path)  # not connected
    assert isinstance(pg, PostgresStore)
    assert "pw" not in repr(pg)  # a URL may carry a password
    for bad in ("kms.sqlite3", "sqlite://kms", "sqlite:///:memory:", "x://y"):
        with pytest.raises(StoreError):
            open_store(bad, tmp_path)
