"""TLS engines (DESIGN §1): the native rustls engine, OpenSSL for legacy clients, and
``auto`` choosing per connection from the ClientHello.

A client that offers only the RSA-key-exchange CBC suite vCenter 7.0.3 negotiated
(AES128-SHA256, TLS 1.2) is refused by ``rustls`` with a logged reason and served by
``openssl`` and ``auto``; a modern client gets TLS 1.3 from ``rustls`` and ``auto``.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kmipfast import _native
from tests.server.harness import KmipServer
from tests.server.kmipclient import Conn, ConnectionClosed

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "captures"
DISCOVER = bytes.fromhex(json.loads((CAPTURES / "vmware.json").read_text())["discover_versions_1"])

pytestmark = pytest.mark.server


def _connect(server: KmipServer, ciphers: str | None, max_version: ssl.TLSVersion | None) -> Conn:
    import socket

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if max_version is not None and max_version < ssl.TLSVersion.TLSv1_2:
        ctx.minimum_version = max_version  # a client of the TLS 1.0 era: nothing newer
        ciphers = (ciphers or "DEFAULT") + ":@SECLEVEL=0"
    ctx.load_verify_locations(server.ca_cert)
    ctx.load_cert_chain(server.client_cert, server.client_key)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if max_version:
        ctx.maximum_version = max_version
    raw = socket.create_connection((server.host, server.port), timeout=10)
    return Conn(ctx.wrap_socket(raw, server_hostname="localhost"))


def _discover(conn: Conn) -> int:
    response = _native.decode(conn.roundtrip(DISCOVER))
    item = response[2][1]
    status: int = next(c[2] for c in item[2] if c[0] == 0x42007F)
    return status


LEGACY = ("AES128-SHA256", ssl.TLSVersion.TLSv1_2)  # RSA key exchange, CBC, like vCenter 7


@pytest.mark.parametrize(
    ("engine", "legacy_served", "modern_version"),
    [("auto", True, "TLSv1.3"), ("rustls", False, "TLSv1.3"), ("openssl", True, "TLSv1.3")],
)
def test_engine_serves_modern_and_legacy_clients_as_designed(
    engine: str,
    legacy_served: bool,
    modern_version: str,
    kmip_server_factory: Callable[[], KmipServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_ENGINE", engine)
    server = kmip_server_factory()
    with _connect(server, None, None) as conn:
        assert conn.sock.version() == modern_version  # type: ignore[union-attr]
        assert _discover(conn) == 0
    if legacy_served:
        with _connect(server, *LEGACY) as conn:
            assert conn.sock.cipher()[0] == "AES128-SHA256"  # type: ignore[union-attr]
            assert _discover(conn) == 0
    else:
        with pytest.raises(ssl.SSLError):
            _connect(server, *LEGACY)
        # The refusal is logged just after the alert is sent: poll with a deadline.
        deadline = time.monotonic() + 5.0
        while "no_shared_cipher" not in server.stderr():
            assert time.monotonic() < deadline, "refusal reason not logged"
            time.sleep(0.05)


TLS10 = ("AES128-SHA", ssl.TLSVersion.TLSv1)  # a client that speaks only TLS 1.0


@pytest.mark.parametrize(
    ("engine", "min_version", "served"),
    [
        ("auto", "1.0", True),
        ("openssl", "1.0", True),
        ("rustls", "1.0", False),
        ("auto", "1.2", False),
        ("openssl", "1.2", False),
    ],
)
def test_tls10_client_served_only_when_legacy_tls_is_enabled(
    engine: str,
    min_version: str,
    served: bool,
    kmip_server_factory: Callable[[], KmipServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_ENGINE", engine)
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_MIN_VERSION", min_version)
    server = kmip_server_factory()
    if served:
        with _connect(server, *TLS10) as conn:
            assert conn.sock.version() == "TLSv1"  # type: ignore[union-attr]
            assert _discover(conn) == 0
        assert "legacy TLS is accepted" in server.stderr()
        # Modern clients still get TLS 1.3 from the same server.
        with _connect(server, None, None) as conn:
            assert conn.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
    else:
        with pytest.raises((ssl.SSLError, ConnectionError)), _connect(server, *TLS10) as conn:
            _discover(conn)
        deadline = time.monotonic() + 5.0
        words = ("TLS version too old", "no_shared_cipher", "protocol_version", "peer_incompatible")
        while not any(w in server.stderr() for w in words):
            assert time.monotonic() < deadline, f"refusal not logged: {server.stderr()[-800:]}"
            time.sleep(0.05)


def _session_conn(
    server: KmipServer, cert: str, key: str, session: ssl.SSLSession | None
) -> ssl.SSLSocket:
    import socket

    ctx = _resumption_contexts.setdefault((cert, key), _client_context(server, cert, key))
    raw = socket.create_connection((server.host, server.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


_resumption_contexts: dict[tuple[str, str], ssl.SSLContext] = {}


def _client_context(server: KmipServer, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.ca_cert)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.mark.parametrize("engine", ["auto", "rustls", "openssl"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumed_session_serves_and_a_removed_client_cannot_resume(
    engine: str,
    version: ssl.TLSVersion,
    kmip_server_factory: Callable[[], KmipServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resumption (tickets/session cache) works on every engine, and a client removed from
    the allow-list is refused even when it resumes an earlier session (DESIGN §4)."""
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_ENGINE", engine)
    server = kmip_server_factory()
    bundle = server.issue_client(f"resume-{engine}-{version.name}")
    ctx = _client_context(server, bundle.cert, bundle.key)
    ctx.maximum_version = version
    _resumption_contexts[(bundle.cert, bundle.key)] = ctx

    deadline = time.monotonic() + 5.0
    while True:  # the new client reaches the running server's allow-list within a second
        try:
            first = Conn(_session_conn(server, bundle.cert, bundle.key, None))
            # TLS 1.3 tickets arrive with the first application data.
            assert _discover(first) == 0
            break
        except (OSError, EOFError, ConnectionClosed):
            assert time.monotonic() < deadline, "a newly issued client was not admitted"
            time.sleep(0.1)
    session = first.sock.session  # type: ignore[union-attr]
    first.close()
    assert session is not None

    again = Conn(_session_conn(server, bundle.cert, bundle.key, session))
    assert again.sock.session_reused  # type: ignore[union-attr]
    assert _discover(again) == 0
    session = again.sock.session  # type: ignore[union-attr]
    again.close()

    server.run_cli("client", "remove", bundle.name)
    deadline = time.monotonic() + 5.0
    while True:  # the allow-list reaches the server within a second
        try:
            conn = Conn(_session_conn(server, bundle.cert, bundle.key, session))
            _discover(conn)
        except (OSError, ConnectionError, ssl.SSLError, EOFError, ConnectionClosed):
            break
        conn.close()
        assert time.monotonic() < deadline, "a removed client still resumes its session"
        time.sleep(0.1)


def _rustls_client() -> Path:
    """The rustls-based client of native/examples/rustls_client.rs (built on demand)."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is needed to build the rustls interop client")
    subprocess.run(
        [cargo, "build", "--quiet", "--example", "rustls_client"],
        cwd=root,
        check=True,
        timeout=900,
    )
    return root / "target" / "debug" / "examples" / "rustls_client"


@pytest.mark.parametrize("engine", ["auto", "rustls", "openssl"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_rustls_based_client_is_served(
    engine: str,
    version: str,
    kmip_server_factory: Callable[[], KmipServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interop: a client built on rustls (not OpenSSL) connects to every engine."""
    import subprocess

    client = _rustls_client()
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_ENGINE", engine)
    server = kmip_server_factory()
    done = subprocess.run(
        [str(client), f"{server.host}:{server.port}", server.client_cert, server.client_key,
         server.ca_cert, DISCOVER.hex(), version],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    negotiated, response_hex = done.stdout.split()
    assert negotiated == f"Some(TLSv1_{version[-1]})"
    item = _native.decode(bytes.fromhex(response_hex))[2][1]
    assert next(c[2] for c in item[2] if c[0] == 0x42007F) == 0  # Result Status: Success
