"""Live servers for the trust tests: one per TLS engine (rustls, openssl), forced with
``KMIPFAST_SERVER_TLS_ENGINE`` while it starts (the variable is not left set, so the
default-engine server beside it stays on auto), and one on auto."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.server.harness import (
    KmipServer,
    ServerError,
    server_available,
    start_server,
)


@pytest.fixture(scope="module", params=["rustls", "openssl"])
def engine_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KmipServer]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet")
    engine = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KMIPFAST_SERVER_TLS_ENGINE", engine)
        server = start_server(tmp_path_factory.mktemp(f"trust-{engine}") / "data")
    try:
        yield server
    except BaseException:
        with contextlib.suppress(ServerError):
            server.stop()
        raise
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipServer]:
    """On tls_engine auto even when the suite runs with the engine forced: the legacy
    client test needs OpenSSL behind auto's choice."""
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KMIPFAST_SERVER_TLS_ENGINE", "auto")
        server = start_server(tmp_path_factory.mktemp("trust") / "data")
    try:
        yield server
    except BaseException:
        with contextlib.suppress(ServerError):
            server.stop()
        raise
    server.stop()
