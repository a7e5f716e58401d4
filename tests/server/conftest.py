"""Live-server fixtures: one real ``kmipfast`` process per session, and a factory for
tests that need a store of their own (durability, TL-* cases, allow-list changes).

Every server is stopped with SIGTERM at teardown and must exit 0 without a traceback
(:meth:`tests.server.harness.KmipServer.stop`); a failure there fails the test run.
Tests that use these fixtures carry ``@pytest.mark.server``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server.harness import KmipServer, running_server, server_available, start_server
from tests.server.kmipclient import Conn

NOT_BUILT = "kmipfast.cli does not exist yet: no server to test"


@pytest.fixture(scope="session")
def kmip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipServer]:
    """A running server shared by read-mostly tests; tenant ``default``, client ``tests``."""
    if not server_available():
        pytest.skip(NOT_BUILT)
    with running_server(tmp_path_factory.mktemp("kmipfast") / "data") as server:
        yield server


@pytest.fixture
def kmip_server_factory(tmp_path: Path) -> Iterator[Callable[[], KmipServer]]:
    """``make()`` starts a fresh server (empty store); all are stopped and checked at teardown."""
    if not server_available():
        pytest.skip(NOT_BUILT)
    made: list[KmipServer] = []

    def make() -> KmipServer:
        server = start_server(tmp_path / f"data{len(made)}")
        made.append(server)
        return server

    yield make
    errors = []
    for server in made:
        try:
            server.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def conn(kmip_server: KmipServer) -> Iterator[Conn]:
    """A fresh mTLS session to the shared server as client ``tests``."""
    with kmip_server.connect() as c:
        yield c
