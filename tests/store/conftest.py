"""Store backends under test: every test taking ``store_url`` runs on SQLite and on
PostgreSQL (a throwaway cluster, see tests/pg.py; skipped where it is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg import pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url", "store_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.sqlite3"
    return str(request.getfixturevalue("pg_url"))
