"""Start and stop a real ``kmipfast`` server process for live-server tests.

One way in: :func:`start_server` makes a data dir (``kmipfast init``), starts
``kmipfast serve --listen 127.0.0.1:0``, reads the port from the line
``kmipfast listening on HOST:PORT`` (deadline, no sleeps), and issues a client
bundle for tenant ``default``. The returned :class:`KmipServer` knows its host,
port, data dir and client files, runs the CLI against its data dir
(:meth:`KmipServer.run_cli`), opens sessions (:meth:`KmipServer.connect`), and can be
restarted or killed. :meth:`KmipServer.stop` is the check every test ends with:
SIGTERM must end the process with exit code 0 and nothing resembling a traceback
on stderr.

The store backend is chosen by the environment: ``KMIPFAST_TEST_STORE=postgresql``
gives every server started here a fresh database on a throwaway PostgreSQL cluster
(``tests/pg.py``, ``kmipfast init --store``); unset or ``sqlite``, the default SQLite
file in the data dir.  ``make test`` runs the live suites both ways.

The pytest fixtures built on it live in ``tests/server/conftest.py`` (and are
re-exported to ``tests/conformance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kmipfast.protocol.enums import Operation
from tests.server import kmipclient

START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
CLI_DEADLINE = 120.0
POLL_INTERVAL = 0.05  # between attempts of a poll that has its own deadline
LISTENING = re.compile(r"kmipfast listening on (\S+):(\d+)")
STORE_ENV = "KMIPFAST_TEST_STORE"  # "sqlite" (default) or "postgresql"


class ServerError(AssertionError):
    """The server could not be started, or misbehaved on the way down."""


def server_available() -> bool:
    """True once the ``kmipfast`` CLI exists in this checkout."""
    return importlib.util.find_spec("kmipfast.cli") is not None


def chosen_store_url() -> str | None:
    """None for the default SQLite store, or the URL of a new database on the test
    PostgreSQL cluster when ``KMIPFAST_TEST_STORE=postgresql``."""
    choice = os.environ.get(STORE_ENV, "sqlite")
    if choice == "sqlite":
        return None
    if choice in ("postgresql", "postgres"):
        from kmipfast.pgserver import pg_available
        from tests.pg import shared_cluster

        if not pg_available():
            raise ServerError(f"{STORE_ENV}={choice} but PostgreSQL is not installed")
        return shared_cluster().create_database()
    raise ServerError(f"{STORE_ENV} must be sqlite or postgresql, not {choice!r}")


def cli_command() -> list[str]:
    """The ``kmipfast`` entry point of the running interpreter's environment."""
    script = Path(sys.executable).with_name("kmipfast")
    if script.exists():
        return [str(script)]
    found = shutil.which("kmipfast")
    if found:
        return [found]
    return [sys.executable, "-m", "kmipfast.cli"]


@dataclass(frozen=True)
class ClientBundle:
    """What ``kmipfast client issue`` writes: certificate, key and the CA to trust."""

    name: str
    cert: str
    key: str
    ca: str


class KmipServer:
    """A ``kmipfast serve`` process on a private data dir."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        store: str | None = None,
        name: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.store = store  # URL given to `init --store`; None: the default SQLite file
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.client: ClientBundle | None = None
        # `name` tells apart several nodes serving one data dir.
        self._stderr_path = self.data_dir.parent / f"{name or self.data_dir.name}-serve.stderr"
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._starts = 0

    # -- CLI --------------------------------------------------------------------

    def run_cli(
        self, *args: str, check: bool = True, timeout: float = CLI_DEADLINE
    ) -> subprocess.CompletedProcess[str]:
        """``kmipfast --data-dir D ARGS...``; raises (with its output) if ``check`` and it fails."""
        cmd = [*cli_command(), "--data-dir", str(self.data_dir), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise ServerError(
                f"`kmipfast {' '.join(args)}` exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        if "Traceback (most recent call last)" in done.stderr:
            raise ServerError(f"`kmipfast {' '.join(args)}` printed a traceback:\n{done.stderr}")
        return done

    def init(self) -> None:
        self.run_cli("init", *(["--store", self.store] if self.store else []))

    def issue_client(self, name: str, tenant: str = "default") -> ClientBundle:
        out = self.data_dir.parent / f"{self.data_dir.name}-clients" / name
        out.mkdir(parents=True, exist_ok=True)
        self.run_cli("client", "issue", name, "--tenant", tenant, "--out", str(out))
        bundle = ClientBundle(
            name=name,
            cert=str(out / f"{name}.crt"),
            key=str(out / f"{name}.key"),
            ca=str(out / "ca.crt"),
        )
        for path in (bundle.cert, bundle.key, bundle.ca):
            if not Path(path).is_file():
                raise ServerError(f"`client issue` did not write {path}")
        return bundle

    def store_sql(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Run one SQL statement (``?`` placeholders) directly on this server's store,
        SQLite file or PostgreSQL database, in its own transaction: for tests that
        tamper with rows behind the server's back.  Returns the rows, or for a
        statement without rows ``[(rowcount,)]``."""
        if self.store is None:
            import sqlite3

            db = sqlite3.connect(self.data_dir / "store.sqlite3")
            try:
                with db:
                    cur = db.execute(sql, params)
                    rows = cur.fetchall()
                    return rows if cur.description else [(cur.rowcount,)]
            finally:
                db.close()
        return asyncio.run(_pg_sql(self.store, sql, params))

    @property
    def ca_cert(self) -> str:
        return str(self.data_dir / "tls" / "ca.crt")

    @property
    def client_cert(self) -> str:
        assert self.client is not None
        return self.client.cert

    @property
    def client_key(self) -> str:
        assert self.client is not None
        return self.client.key

    # -- process ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start ``serve`` (on the previous port after the first start) and wait until it
        announces itself."""
        if self.running:
            raise ServerError("already running")
        listen = f"{self.host}:{self.port}"
        self._starts += 1
        stderr = open(self._stderr_path, "a", encoding="utf-8")  # noqa: SIM115
        stderr.write(f"=== start {self._starts} ===\n")
        stderr.flush()
        self._stderr_offset = self._stderr_path.stat().st_size
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*cli_command(), "--data-dir", str(self.data_dir), "serve", "--listen", listen],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        stderr.close()
        lines: queue.Queue[str | None] = queue.Queue()
        self._stdout_lines = lines
        threading.Thread(target=_pump, args=(self.proc, lines), daemon=True).start()
        deadline = time.monotonic() + START_DEADLINE
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill9()
                raise ServerError(
                    f"no 'kmipfast listening on' line within {START_DEADLINE:.0f} s; "
                    f"stdout so far: {seen!r}\nstderr:\n{self.stderr()}"
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise ServerError(
                    f"serve exited with {code} before listening; stdout: {seen!r}\n"
                    f"stderr:\n{self.stderr()}"
                )
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                self.host = match.group(1).strip("[]")
                self.port = int(match.group(2))
                return

    def stderr(self) -> str:
        """What the current (or last) serve process wrote to stderr."""
        try:
            text = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[getattr(self, "_stderr_offset", 0) :]

    def stop(self) -> None:
        """SIGTERM; the process must exit 0 within the deadline and print no traceback."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ServerError(
                    f"serve did not exit within {STOP_DEADLINE:.0f} s of SIGTERM\n"
                    f"stderr:\n{self.stderr()}"
                ) from None
        else:
            code = proc.returncode
        err = self.stderr()
        if code != 0:
            raise ServerError(f"serve exited with {code} after SIGTERM\nstderr:\n{err}")
        if "Traceback" in err:
            raise ServerError(f"serve printed a traceback:\n{err}")

    def kill9(self) -> None:
        """SIGKILL, no cleanup: what a power cut looks like to the store."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self) -> None:
        """Stop gracefully (if running) and start again on the same port."""
        self.stop()
        self.start()

    # -- sessions -----------------------------------------------------------------

    def connect(
        self, bundle: ClientBundle | None = None, *, timeout: float = 15.0
    ) -> kmipclient.Conn:
        b = bundle or self.client
        assert b is not None
        return kmipclient.connect(self.host, self.port, b.cert, b.key, b.ca, timeout=timeout)


def connect_when_admitted(
    server: KmipServer, bundle: ClientBundle, deadline: float = 5.0
) -> kmipclient.Conn:
    """Connect with a certificate just added on a running server: the allow-list reaches
    the server within about a second, so retry refusals until ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        try:
            conn = server.connect(bundle)
            # A refused certificate may surface only at the first read (TLS 1.3).
            conn.ok(Operation.DiscoverVersions)
            return conn
        except (OSError, kmipclient.ConnectionClosed) as exc:
            if time.monotonic() >= end:
                raise ServerError(
                    f"{bundle.name} not admitted within {deadline} s: {exc!r}"
                ) from None
            time.sleep(POLL_INTERVAL)


async def _pg_sql(url: str, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    import asyncpg

    parts = sql.split("?")
    numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
    conn = await asyncpg.connect(url)
    try:
        stmt = await conn.prepare(numbered)
        if stmt.get_attributes():
            return [tuple(row) for row in await stmt.fetch(*params)]
        status = await conn.execute(numbered, *params)
        return [(int(status.rsplit(" ", 1)[1]),)]
    finally:
        await conn.close()


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Move the server's stdout into a queue (keeps the pipe drained while it runs)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def start_server(data_dir: Path, store: str | None = None) -> KmipServer:
    """init + serve + a client bundle ``tests`` for tenant ``default``, on ``store`` (a
    store URL) or else on the backend :func:`chosen_store_url` picks."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = KmipServer(data_dir, store=store or chosen_store_url())
    server.init()
    # Issued before serve starts, so the first connection never races the allow-list reload.
    server.client = server.issue_client("tests", "default")
    server.start()
    return server


@contextlib.contextmanager
def running_server(data_dir: Path) -> Iterator[KmipServer]:
    """A started server, stopped (and checked) on exit."""
    server = start_server(data_dir)
    try:
        yield server
    except BaseException:
        # The test already failed: still stop, but do not mask its error.
        with contextlib.suppress(ServerError):
            server.stop()
        raise
    server.stop()


def self_signed_client(directory: Path, name: str) -> ClientBundle:
    """A self-signed EC P-256 client certificate (``ca`` is left empty: set it to the
    server's CA to verify the server), as a vCenter with its own certificate presents."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ClientBundle(name=name, cert=str(cert_path), key=str(key_path), ca="")
