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

from kmipfast.pgserver import PgCluster, PgError, pg_available

__all__ = ["pg_cluster", "pg_url", "shared_cluster"]


_shared: PgCluster | None = None


def shared_cluster() -> PgCluster:
    """The test process's cluster, started on first use and stopped at exit."""
    global _shared
    if _shared is None or not _shared.running:
        if _shared is not None:
            _shared.destroy()
        _shared = PgCluster.started()
        atexit.register(_shared.destroy)
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
