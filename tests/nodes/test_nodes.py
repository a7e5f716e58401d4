"""Nodes sharing one PostgreSQL (issue #8, "Nodes"): every node serves every key, and
once any node answered success to Destroy or an attribute change, no node serves the
old state, also while a node's notification connection is cut or stalled."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kmipfast.pgserver import PgCluster
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from kmipfast.store.postgres import LISTENER_NAME
from tests.server.harness import KmipServer
from tests.server.kmipclient import (
    ConnectionClosed,
    attribute,
    attributes_of,
    create_aes_payload,
    key_material,
    uid_payload,
)

pytestmark = pytest.mark.server

ALLOW_LIST_DEADLINE = 2.0  # "within a second", with room for a loaded 2-core machine
POLL = 0.05


def digest(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def create_key(node: KmipServer) -> str:
    with node.connect() as conn:
        return str(value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier))


def get_digest(node: KmipServer, uid: str) -> str:
    with node.connect() as conn:
        return digest(key_material(conn.ok(Operation.Get, uid_payload(uid))))


def get_fails(node: KmipServer, uid: str) -> bool:
    with node.connect() as conn:
        return not conn.call(Operation.Get, uid_payload(uid)).success


def listener_pids(pg: PgCluster, db: str) -> list[int]:
    out = pg.psql(
        "SELECT pid FROM pg_stat_activity"
        f" WHERE datname = '{db}' AND application_name = '{LISTENER_NAME}'"
    )
    return [int(p) for p in out.split()]


def wait_for_listeners(pg: PgCluster, db: str, n: int) -> list[int]:
    end = time.monotonic() + 30
    while len(pids := listener_pids(pg, db)) < n:
        assert time.monotonic() < end, f"{len(pids)} of {n} nodes listening"
        time.sleep(POLL)
    return pids


@contextmanager
def stalled(pids: list[int]) -> Iterator[None]:
    """The listening backends stop (SIGSTOP): nothing is delivered, nothing answered."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_a_key_made_on_one_node_is_served_by_all_and_destroy_reaches_all_at_once(
    nodes: Callable[[int], list[KmipServer]],
) -> None:
    a, b, c = nodes(3)
    uid = create_key(a)
    want = get_digest(a, uid)
    assert get_digest(b, uid) == want  # now cached on b and c
    assert get_digest(c, uid) == want
    # An attribute change on b is what a and c serve next.
    with b.connect() as conn:
        component = (int(Tag.AttributeValue), int(ItemType.TextString), "vsan")
        conn.ok(Operation.AddAttribute, [*uid_payload(uid), attribute("x-Component", component)])
    for node in (a, c):
        with node.connect() as conn:
            got = attributes_of(conn.ok(Operation.GetAttributes, uid_payload(uid)))
            assert got.get("x-Component") == ["vsan"], f"{node.port} served stale attributes"
    with a.connect() as conn:
        conn.ok(Operation.Destroy, uid_payload(uid))
    # At once: no polling, the very next request on every node is refused.
    assert get_fails(b, uid) and get_fails(c, uid) and get_fails(a, uid)


def test_destroy_reaches_a_node_whose_notifications_are_cut_or_stalled(
    nodes: Callable[[int], list[KmipServer]], pg_cluster: PgCluster, pg_url: str
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    a, b = nodes(2)
    wait_for_listeners(pg_cluster, db, 2)
    cut, hung = create_key(a), create_key(a)
    for uid in (cut, hung):
        assert get_digest(b, uid) == get_digest(a, uid)  # cached on b
    # Cut every notification connection just before the Destroy.
    pg_cluster.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{db}' AND application_name = '{LISTENER_NAME}'"
    )
    with a.connect() as conn:
        conn.ok(Operation.Destroy, uid_payload(cut))
    assert get_fails(b, cut)
    # Stall them instead (a lagging or half-dead connection: no error, no delivery).
    pids = wait_for_listeners(pg_cluster, db, 2)
    assert get_digest(b, hung)
    with stalled(pids):
        with a.connect() as conn:
            conn.ok(Operation.Destroy, uid_payload(hung))
        assert get_fails(b, hung)


def test_a_client_removed_on_one_node_is_refused_by_the_others_within_a_second(
    nodes: Callable[[int], list[KmipServer]],
) -> None:
    a, b, c = nodes(3)
    doomed = c.issue_client("doomed")
    end = time.monotonic() + ALLOW_LIST_DEADLINE * 3
    while True:  # admitted everywhere first
        try:
            with a.connect(doomed) as conn:
                if conn.call(Operation.DiscoverVersions).success:
                    break
        except (OSError, ConnectionClosed):
            pass
        assert time.monotonic() < end, "new client never admitted by node a"
        time.sleep(POLL)
    c.run_cli("client", "remove", "doomed")
    removed = time.monotonic()
    for node in (a, b):
        while True:
            try:
                with node.connect(doomed) as conn:
                    if not conn.call(Operation.DiscoverVersions).success:
                        break
            except (OSError, ConnectionClosed):
                break
            assert time.monotonic() - removed < ALLOW_LIST_DEADLINE, "removed client served"
            time.sleep(POLL)


def test_init_store_writes_the_url_and_refuses_to_switch_silently(
    tmp_path: Path, pg_url: str
) -> None:
    node = KmipServer(tmp_path / "data", store=pg_url)
    node.init()
    config = (tmp_path / "data" / "kmipfast.toml").read_text()
    assert f'url = "{pg_url}"' in config
    node.run_cli("init", "--store", pg_url)  # the same store again: fine
    other = node.run_cli("init", "--store", f"{pg_url}x", check=False)
    assert other.returncode != 0 and "already names another store" in other.stderr
    assert pg_url not in other.stderr  # a URL may carry a password: never echoed
    assert "default" in node.run_cli("tenant", "list").stdout  # the CLI works on it


def test_a_root_shred_through_one_node_takes_effect_on_all(
    nodes: Callable[..., list[KmipServer]],
) -> None:
    """Issue #8, root keys: shredding a tenant drops its held master key on every node;
    once `root shred` returned, no node serves that tenant's keys (others unaffected)."""
    a, b = nodes(2)
    a.run_cli("tenant", "create", "other")
    other = a.issue_client("other-client", "other")
    end = time.monotonic() + ALLOW_LIST_DEADLINE * 3
    uid = ""
    while not uid:  # the new client reaches both nodes' allow-lists
        try:
            with a.connect(other) as conn:
                uid = str(
                    value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
                )
        except (OSError, ConnectionClosed):
            assert time.monotonic() < end, "new client never admitted"
            time.sleep(POLL)
    kept = create_key(b)
    while True:
        try:
            with b.connect(other) as conn:  # b now holds the master key and the row
                assert key_material(conn.ok(Operation.Get, uid_payload(uid)))
                break
        except (OSError, ConnectionClosed):
            assert time.monotonic() < end, "new client never admitted by b"
            time.sleep(POLL)
    a.run_cli("root", "shred", "--tenant", "other", "--yes")
    for node in (a, b):
        with node.connect(other) as conn:
            assert not conn.call(Operation.Get, uid_payload(uid)).success
    assert get_digest(a, kept) == get_digest(b, kept)
