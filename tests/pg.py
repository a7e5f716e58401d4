"""The pytest side of :mod:`kmipfast.pgserver`: one throwaway PostgreSQL cluster per
test process (:func:`shared_cluster`, in a temporary directory, stopped at exit), one
fresh database per test (:meth:`PgCluster.create_database`), owned by the unprivileged
role ``kmipfast``, so the store is tested without superuser rights.  Fixtures for
pytest: :func:`pg_cluster` and :func:`pg_url` (import them into a conftest).
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator

import pytest

from kmipfast.pgserver import (
    POLL_INTERVAL,
    ROLE,
    RUN_AS,
    START_DEADLINE,
    STOP_DEADLINE,
    PgCluster,
    PgError,
    free_port,
    pg_available,
    pg_bin_dir,
)

__all__ = [
    "POLL_INTERVAL",
    "ROLE",
    "RUN_AS",
    "START_DEADLINE",
    "STOP_DEADLINE",
    "PgCluster",
    "PgError",
    "free_port",
    "pg_available",
    "pg_bin_dir",
    "pg_cluster",
    "pg_url",
    "shared_cluster",
]


_shared: PgCluster | None = None


def shared_cluster() -> PgCluster:
    """The test process's cluster, started on first use and stopped at exit."""
    global _shared
    if _shared is None or not _shared.running:
        if _shared is not None:
            _shared.destroy()
        cluster = PgCluster()
        try:
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        _shared = cluster
        atexit.register(cluster.destroy)
    return _shared


@pytest.fixture
def pg_cluster() -> PgCluster:
    """The shared cluster (skips the test when PostgreSQL is not installed)."""
    if not pg_available():
        pytest.skip("PostgreSQL is not installed (make sysdeps installs it)")
    return shared_cluster()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    with contextlib.suppress(PgError):
        pg_cluster.drop_database(url.rsplit("/", 1)[1])
