"""``kmipfast serve --workers N``: N processes on one port (SO_REUSEPORT), one store.

The guarantee under test: once one worker has answered success to Destroy (or an
attribute change), no worker serves the old state afterwards, even one that had the
key cached.  Every request below opens a new TLS session (as vCenter does), so the
kernel spreads them over the workers; the key is first fetched through many sessions
so that every worker holds it in its cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from kmipfast.store.sqlite import SqliteStore
from kmipfast.vault import ManagedObject, Vault
from tests.server.harness import KmipServer

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
]

WORKERS = 2
SESSIONS = 12  # new sessions per round: with 2 workers, each sees some (SO_REUSEPORT hash)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _listening_inodes(pid: int) -> set[str]:
    """Socket inodes of ``pid`` (to tell which processes hold the listening port)."""
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.fixture
def workers_server(
    kmip_server_factory: Callable[[], KmipServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[KmipServer]:
    monkeypatch.setenv("KMIPFAST_SERVER_WORKERS", str(WORKERS))
    yield kmip_server_factory()


def _client(server: KmipServer) -> ProxyKmipClient:
    c = ProxyKmipClient(
        hostname=server.host,
        port=server.port,
        cert=server.client_cert,
        key=server.client_key,
        ca=server.ca_cert,
        ssl_version="PROTOCOL_TLS",
        config_file=None,
    )
    c.open()
    return c


def _in_new_session(server: KmipServer, fn: Callable[[ProxyKmipClient], object]) -> object:
    c = _client(server)
    try:
        return fn(c)
    finally:
        c.close()


def _digest(server: KmipServer, uid: str) -> str:
    key = _in_new_session(server, lambda c: c.get(uid))
    return hashlib.sha256(key.value).hexdigest()  # type: ignore[attr-defined]


def test_workers_share_one_port_and_serve_keys(workers_server: KmipServer) -> None:
    server = workers_server
    assert server.proc is not None
    kids = _children(server.proc.pid)
    assert len(kids) == WORKERS, f"expected {WORKERS} workers, found {kids}"
    assert all(_listening_inodes(k) for k in kids)
    uid = str(_in_new_session(server, lambda c: c.create(enums.CryptographicAlgorithm.AES, 256)))
    digests = {_digest(server, uid) for _ in range(SESSIONS)}
    assert len(digests) == 1  # the same bytes, whichever worker answered


def test_destroy_on_one_worker_is_never_followed_by_a_get_from_another(
    workers_server: KmipServer,
) -> None:
    server = workers_server
    for _round in range(3):
        uid = str(
            _in_new_session(server, lambda c: c.create(enums.CryptographicAlgorithm.AES, 256))
        )
        for _ in range(SESSIONS):  # every worker now has the key in its cache
            _digest(server, uid)
        _in_new_session(server, lambda c, uid=uid: c.destroy(uid))  # type: ignore[misc]
        for _ in range(SESSIONS):
            with pytest.raises(KmipOperationFailure) as failed:
                _digest(server, uid)
            assert failed.value.reason == enums.ResultReason.ITEM_NOT_FOUND


def test_a_worker_that_dies_is_replaced(workers_server: KmipServer) -> None:
    server = workers_server
    assert server.proc is not None
    victim = _children(server.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        kids = _children(server.proc.pid)
        if len(kids) == WORKERS and victim not in kids and all(map(_listening_inodes, kids)):
            break
        assert time.monotonic() < deadline, f"worker not replaced: {kids}"
        time.sleep(0.1)
    uid = str(_in_new_session(server, lambda c: c.create(enums.CryptographicAlgorithm.AES, 256)))
    assert len({_digest(server, uid) for _ in range(SESSIONS)}) == 1
    assert "restarting it" in server.stderr()


def test_workers_zero_is_a_one_line_error(kmip_server: KmipServer) -> None:
    done = kmip_server.run_cli("serve", "--workers", "0", check=False)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "--workers" in done.stderr


def test_cache_drops_what_another_process_changed(tmp_path: Path) -> None:
    """The mechanism itself, on one SQLite file with two stores (two processes' worth):
    a cached object changed through the other store is re-read, not served stale."""
    asyncio.run(_two_stores(tmp_path / "kmipfast.sqlite3"))


def _object(uid: str) -> ManagedObject:
    return ManagedObject(
        uid=uid,
        tenant="t",
        object_type=2,
        state=1,
        key_blob=b"k" * 40,
        meta={},
        attributes={},
        created=1,
        updated=1,
    )


async def _two_stores(path: Path) -> None:
    async with SqliteStore(path) as a, SqliteStore(path) as b:
        from kmipfast.store.base import TenantRecord

        await a.create_tenant(
            TenantRecord(
                name="t",
                root_label="r",
                sealed_master_key=b"x" * 40,
                master_key_version=1,
                created=1,
                rotated=None,
            )
        )
        va, vb = Vault(a), Vault(b)
        await va.insert(_object("u1"))
        assert (await va.fetch("t", "u1")).state == 1
        assert (await vb.fetch("t", "u1")).state == 1
        await vb.update("t", "u1", lambda o: setattr(o, "state", 2))
        # a's own writes alone do not empty its cache ...
        await va.insert(_object("u2"))
        # ... but b's write is seen by a's next read.
        assert (await va.fetch("t", "u1")).state == 2
        hits = va.hits
        await va.fetch("t", "u1")
        assert va.hits == hits + 1  # nothing changed since: a cache hit again


def test_read_in_flight_across_a_foreign_change_is_not_cached(tmp_path: Path) -> None:
    """A cache miss whose row was read before another process's change committed, and
    which returns after that change was noticed, must not leave the old row cached
    (it would be served until the next change: a Destroy elsewhere not honoured)."""
    asyncio.run(_read_across_change(tmp_path / "kmipfast.sqlite3"))


async def _read_across_change(path: Path) -> None:
    async with SqliteStore(path) as a, SqliteStore(path) as b:
        from kmipfast.store.base import TenantRecord

        await a.create_tenant(TenantRecord("t", "r", b"x" * 40, 1, 1, None))
        va, vb = Vault(a), Vault(b)
        await va.insert(_object("u1"))
        await va.insert(_object("u2"))
        va.clear()
        real_get = a.get_object

        async def get_then_change(tenant: str, uid: str) -> object:
            a.get_object = real_get  # type: ignore[method-assign]
            old = await real_get(tenant, uid)  # the row as it was
            await vb.update("t", "u1", lambda o: setattr(o, "state", 2))  # commits
            await va.fetch("t", "u2")  # another request notices the change meanwhile
            return old

        a.get_object = get_then_change  # type: ignore[method-assign]
        assert (await va.fetch("t", "u1")).state == 1  # concurrent with the change
        assert (await va.fetch("t", "u1")).state == 2


def test_read_in_flight_across_a_local_write_is_not_cached(tmp_path: Path) -> None:
    asyncio.run(_read_across_local_write(tmp_path / "kmipfast.sqlite3"))


async def _read_across_local_write(path: Path) -> None:
    async with SqliteStore(path) as a:
        from kmipfast.store.base import TenantRecord

        await a.create_tenant(TenantRecord("t", "r", b"x" * 40, 1, 1, None))
        va = Vault(a)
        await va.insert(_object("u1"))
        va.clear()
        real_get = a.get_object
        other = Vault(a)  # a second path to the same store, e.g. the admin API

        async def get_then_write(tenant: str, uid: str) -> object:
            a.get_object = real_get  # type: ignore[method-assign]
            old = await real_get(tenant, uid)
            fresh = (await other.fetch("t", "u1")).copy()
            fresh.state = 2
            await other.save(fresh)
            va.forget("t", "u1")  # what a local writer does to this cache
            return old

        a.get_object = get_then_write  # type: ignore[method-assign]
        assert (await va.fetch("t", "u1")).state == 1
        assert (await va.fetch("t", "u1")).state == 2
