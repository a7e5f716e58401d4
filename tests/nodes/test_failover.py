"""Failover (issue #8): a vCenter-like client keeps working through the loss of a node,
and nodes follow a promoted PostgreSQL standby; no acknowledged key is lost."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from kmipfast.pgserver import PgCluster
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from tests.server.harness import KmipServer
from tests.server.kmipclient import (
    ConnectionClosed,
    attribute,
    create_aes_payload,
    key_material,
    uid_payload,
)

pytestmark = pytest.mark.server

DEADLINE = 60.0


def digest(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


@dataclass
class VcenterLike:
    """A list of key servers, the first that answers; per task Create + AddAttribute +
    Get over one session, the whole task again on the next server if a request fails."""

    servers: list[KmipServer]
    acked: dict[str, str | None] = field(default_factory=dict)  # uid -> digest once fetched
    failed_requests: int = 0
    refused_connects: int = 0

    def task(self) -> None:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            for node in self.servers:
                try:
                    conn = node.connect(timeout=10)
                except (OSError, ConnectionClosed):
                    self.refused_connects += 1
                    continue
                try:
                    with conn:
                        created = conn.ok(Operation.Create, create_aes_payload())
                        uid = str(value(created, Tag.UniqueIdentifier))
                        self.acked[uid] = None
                        name = (int(Tag.AttributeValue), int(ItemType.TextString), uid[:8])
                        conn.ok(Operation.AddAttribute, [*uid_payload(uid),
                                                         attribute("x-Name", name)])  # fmt: skip
                        got = conn.ok(Operation.Get, uid_payload(uid))
                        self.acked[uid] = digest(key_material(got))
                        return
                except (OSError, ConnectionClosed, AssertionError):
                    self.failed_requests += 1
            time.sleep(0.05)
        raise AssertionError("no server completed a task within the deadline")


def check_all_readable(client: VcenterLike, nodes: list[KmipServer]) -> None:
    for node in nodes:
        with node.connect() as conn:
            for uid, want in client.acked.items():
                got = digest(key_material(conn.ok(Operation.Get, uid_payload(uid))))
                assert want is None or got == want, f"{uid} changed"


def test_killing_a_node_fails_only_its_in_flight_requests(
    nodes: Callable[..., list[KmipServer]],
) -> None:
    a, b, c = nodes(3)
    client = VcenterLike([a, b, c])
    for _ in range(5):
        client.task()
    killer = threading.Timer(0.05, a.kill9)
    killer.start()
    for _ in range(15):
        client.task()
    killer.join()
    assert not a.running
    # One client, one request at a time: at most the one in flight on a failed.
    assert client.failed_requests <= 1, client.failed_requests
    assert len(client.acked) >= 20
    check_all_readable(client, [b, c])


def test_nodes_follow_a_promoted_standby_and_lose_no_acknowledged_key(
    nodes: Callable[..., list[KmipServer]],
) -> None:
    primary = PgCluster()
    standby: PgCluster | None = None
    started: list[KmipServer] = []
    try:
        primary.start()
        standby = primary.start_standby()
        # Synchronous replication: a commit (so every acknowledged write) is on both.
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.psql("SELECT pg_reload_conf()")
        db = primary.create_database().rsplit("/", 1)[1]
        url = (
            f"postgresql://kmipfast@{primary.host}:{primary.port},{standby.host}:{standby.port}"
            f"/{db}?target_session_attrs=read-write"
        )
        started = nodes(2, url)
        a, b = started
        client = VcenterLike([a, b])
        for _ in range(5):
            client.task()
        primary.kill9()
        standby.promote()
        for _ in range(5):  # the nodes reconnect by themselves
            client.task()
        assert len(client.acked) >= 10
        check_all_readable(client, [a, b])
        for node in started:  # while the database is still there to say goodbye to
            node.stop()
    finally:
        for node in started:
            node.kill9()
        if standby is not None:
            standby.destroy()
        primary.destroy()
