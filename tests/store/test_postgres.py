"""PostgreSQL store specifics (issue #8): migrations under a lock, several hosts in one
URL, reconnecting after the server dropped us, and change notifications between nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kmipfast.pgserver import PgCluster, free_port
from kmipfast.store import ClientRecord, NodeRecord, StoreChange, StoreError, open_store
from kmipfast.store.postgres import LISTENER_NAME, PostgresStore
from kmipfast.store.postgres_sql import MIGRATIONS
from tests.store.test_sqlite import obj, tenant

T = TypeVar("T")
DEADLINE = 10.0


async def register(store: PostgresStore, node: str) -> None:
    """Report as a serving node (``kmipfast serve`` does this every few seconds)."""
    store.foreign_epoch()  # starts the listener
    await store.put_node(NodeRecord(node, os.getpid(), "here", 0, int(time.time()), ""))


def store_of(url: str) -> PostgresStore:
    store = open_store(url, Path("/"))
    assert isinstance(store, PostgresStore)
    return store


async def until(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def retrying(step: Callable[[], Awaitable[T]]) -> T:
    """A write right after the server dropped us may fail once; the next one reconnects."""
    end = time.monotonic() + DEADLINE
    while True:
        try:
            return await step()
        except StoreError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


def test_nodes_starting_together_migrate_once(pg_url: str, pg_cluster: PgCluster) -> None:
    async def main() -> None:
        stores = [store_of(pg_url) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))  # one migrates, the others wait
        await stores[0].create_tenant(tenant("t1"))
        await asyncio.gather(*(s.close() for s in stores))
        async with store_of(pg_url) as again:  # reopening runs nothing again
            assert [t.name for t in await again.list_tenants()] == ["t1"]

    asyncio.run(main())
    db = pg_url.rsplit("/", 1)[1]
    versions = pg_cluster.psql("SELECT version FROM schema_version ORDER BY version", db)
    assert versions.split() == [str(v) for v in range(1, len(MIGRATIONS) + 1)]


def test_url_with_several_hosts_uses_the_one_that_answers(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    dead = free_port()  # nothing listens there: as a primary that went away
    url = pg_url.replace(f":{pg_cluster.port}/", f":{dead},127.0.0.1:{pg_cluster.port}/")
    assert url != pg_url

    async def main() -> None:
        async with store_of(url) as store:
            await store.create_tenant(tenant("t1"))
            await store.create_object(obj("u1"))
            got = await store.get_object("t1", "u1")
            assert got is not None and got.key_blob == b"wrapped:u1"

    asyncio.run(main())


def test_writer_and_readers_reconnect_after_the_server_dropped_them(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    db = pg_url.rsplit("/", 1)[1]

    async def main() -> None:
        async with store_of(pg_url) as store:
            await store.create_tenant(tenant("t1"))
            await store.create_object(obj("u1"))
            pg_cluster.psql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            )
            await retrying(lambda: store.create_object(obj("u2")))
            assert await retrying(lambda: store.get_object("t1", "u1")) is not None
            assert sorted(await store.locate("t1")) == ["u1", "u2"]

    asyncio.run(main())


def test_other_nodes_hear_changes_and_a_lost_listener_reports_it(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    db = pg_url.rsplit("/", 1)[1]

    async def main() -> None:
        heard: list[StoreChange] = []
        async with store_of(pg_url) as a, store_of(pg_url) as b:
            await a.create_tenant(tenant("t1"))
            await a.create_object(obj("u1"))
            b.subscribe(heard.append)
            await until(lambda: StoreChange(lost=True) in heard, "the listener to start")
            heard.clear()
            rec = await a.get_object("t1", "u1")
            assert rec is not None
            await a.destroy_object(rec, expected_version=1)
            await until(lambda: StoreChange("t1", "u1") in heard, "the destroy notice")
            await a.put_client(ClientRecord("vc", "t1", "ab:cd", None, None, None, 1))
            await until(lambda: StoreChange() in heard, "the allow-list notice")
            assert await a.delete_object("t1", "u1")
            await until(lambda: heard.count(StoreChange("t1", "u1")) == 2, "the delete notice")
            # Cut the listening connection: b must say it may have missed changes
            # (once when it notices, once listening again), then hear the next ones.
            heard.clear()
            pg_cluster.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{db}' AND application_name = '{LISTENER_NAME}'"
            )
            await until(lambda: heard.count(StoreChange(lost=True)) >= 2, "the lost reports")
            await a.remove_client("vc")
            await until(lambda: StoreChange() in heard, "a notice after reconnecting")
            # Creates announce nothing (no node can hold a new object).
            heard.clear()
            await a.create_object(obj("u3"))
            await a.put_client(ClientRecord("vc2", "t1", "ef:01", None, None, None, 1))
            await until(lambda: StoreChange() in heard, "the notice after the create")
            assert heard == [StoreChange()]

    asyncio.run(main())


def test_snapshot_sees_one_instant_while_writers_go_on(pg_url: str) -> None:
    async def main() -> None:
        async with store_of(pg_url) as store:
            await store.create_tenant(tenant("t1"))
            for i in range(3):
                await store.create_object(obj(f"u{i}", attributes={"n": [bytes([i])]}))
            async with store.snapshot() as snap:
                await store.create_object(obj("later"))  # not held up, not seen
                assert snap.object_count == 3
                assert [t.name for t in snap.tenants] == ["t1"]
                got = [rec async for rec in snap.objects]
            assert [r.uid for r in got] == ["u0", "u1", "u2"]
            assert got[2].attributes == {"n": [b"\x02"]}

    asyncio.run(main())


def _listener_pids(pg_cluster: PgCluster, db: str) -> list[int]:
    out = pg_cluster.psql(
        "SELECT pid FROM pg_stat_activity"
        f" WHERE datname = '{db}' AND application_name = '{LISTENER_NAME}'"
    )
    return [int(p) for p in out.split()]


def test_foreign_epoch_moves_on_foreign_changes_only(pg_url: str) -> None:
    async def main() -> None:
        async with store_of(pg_url) as a, store_of(pg_url) as b:
            await a.create_tenant(tenant("t1"))
            await a.create_object(obj("u1"))
            await register(b, "b")  # a serving node: b may trust its cache
            await until(lambda: b.foreign_epoch() == b.foreign_epoch(), "b to hear reliably")
            quiet = b.foreign_epoch()
            await b.create_object(obj("u2"))  # b's own writes do not move b's epoch
            rec = await b.get_object("t1", "u2")
            assert rec is not None
            await b.update_object(rec, expected_version=1)
            await a.create_object(obj("u3"))  # creates announce nothing
            await asyncio.sleep(b.lease)
            assert b.foreign_epoch() == quiet
            rec = await a.get_object("t1", "u1")
            assert rec is not None
            await a.destroy_object(rec, expected_version=1)
            # Answered only after the lease: b has heard it by now.
            assert b.foreign_epoch() != quiet

    asyncio.run(main())


def test_a_stalled_listener_stops_cache_use_before_a_destroy_is_answered(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    """Issue #8: no node serves the old state after Destroy answered, even while its
    notification connection hangs (its backend is stopped, so nothing is delivered
    and no probe is answered: a lagging or half-dead connection)."""
    db = pg_url.rsplit("/", 1)[1]

    async def main() -> None:
        async with store_of(pg_url) as a, store_of(pg_url) as b:
            await a.create_tenant(tenant("t1"))
            await a.create_object(obj("u1"))
            await register(b, "b")
            await until(lambda: b.foreign_epoch() == b.foreign_epoch(), "b to hear reliably")
            cached_at = b.foreign_epoch()  # a cache filled now is valid under this epoch
            (pid,) = _listener_pids(pg_cluster, db)
            os.kill(pid, signal.SIGSTOP)
            try:
                rec = await a.get_object("t1", "u1")
                assert rec is not None
                started = time.monotonic()
                await a.destroy_object(rec, expected_version=1)
                assert time.monotonic() - started >= a.lease
                assert b.foreign_epoch() != cached_at
                assert b.foreign_epoch() != b.foreign_epoch()  # no cache use at all
            finally:
                os.kill(pid, signal.SIGCONT)
            # Once the listener answers again (or reconnects), caching resumes.
            await until(lambda: b.foreign_epoch() == b.foreign_epoch(), "b to recover")

    asyncio.run(main())


def test_a_lone_node_answers_at_once_and_waits_the_lease_once_it_has_a_peer(
    pg_url: str,
) -> None:
    async def destroy_takes(store: PostgresStore, uid: str) -> float:
        await store.create_object(obj(uid))
        rec = await store.get_object("t1", uid)
        assert rec is not None
        started = time.monotonic()
        await store.destroy_object(rec, expected_version=1)
        return time.monotonic() - started

    async def main() -> None:
        async with store_of(pg_url) as a:
            await a.create_tenant(tenant("t1"))
            assert await destroy_takes(a, "u0") >= a.lease  # unregistered: assumes peers
            await register(a, "a")
            await until(lambda: not a.peers_may_cache(), "a to see it is alone")
            assert await destroy_takes(a, "u1") < a.lease
            async with store_of(pg_url) as b:
                await register(b, "b")
                await until(lambda: a.peers_may_cache(), "a to see b")
                assert await destroy_takes(a, "u2") >= a.lease
                # b trusts its cache only after the discovery delay.
                assert b.foreign_epoch() != b.foreign_epoch()
                await until(lambda: b.foreign_epoch() == b.foreign_epoch(), "b to trust")

    asyncio.run(main())
