"""Backends for the backup tests: ``new_store(backend)`` gives the URL of a new, empty
store of that backend (PostgreSQL: a fresh database of the throwaway cluster in
tests/pg.py, skipped where PostgreSQL is not installed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmipfast.pgserver import PgCluster, PgError
from tests.pg import pg_cluster, pg_url

__all__ = ["BACKENDS", "new_store", "pg_cluster", "pg_url"]

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    made: list[str] = []
    databases: list[tuple[PgCluster, str]] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            made.append(f"sqlite:///{tmp_path}/store{len(made)}.sqlite3")
            return made[-1]
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        made.append(cluster.create_database())
        databases.append((cluster, made[-1].rsplit("/", 1)[1]))
        return made[-1]

    yield make
    for cluster, name in databases:
        with contextlib.suppress(PgError):
            cluster.drop_database(name)
