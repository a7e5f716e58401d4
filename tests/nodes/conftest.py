"""Several ``kmipfast serve`` nodes on one data dir and one PostgreSQL (issue #8).

``nodes(n)`` initialises one data dir on a fresh database of the test cluster
(``tests/pg.py``; ``nodes(n, url)``: on that store instead), issues client ``tests``,
and starts ``n`` nodes that differ only in their port, as on one machine.  Every node
is stopped and checked at teardown (exit 0, no traceback), like the live-server fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmipfast.pgserver import PgCluster
from tests.pg import pg_cluster, pg_url
from tests.server.harness import KmipServer, server_available

__all__ = ["nodes", "pg_cluster", "pg_url"]


@pytest.fixture
def nodes(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> Iterator[Callable[[int], list[KmipServer]]]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    made: list[KmipServer] = []

    def make(n: int, store: str | None = None) -> list[KmipServer]:
        data_dir = tmp_path / "data"
        first = KmipServer(data_dir, store=store or pg_url, name="node-a")
        first.init()
        first.client = first.issue_client("tests", "default")
        started = [first]
        for i in range(1, n):
            node = KmipServer(data_dir, name=f"node-{chr(ord('a') + i)}")
            node.client = first.client
            started.append(node)
        for node in started:
            made.append(node)
            node.start()
        return started

    yield make
    errors = []
    for node in made:
        try:
            node.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)
