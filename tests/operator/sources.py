"""Import sources for the migration tests: a real ``pykmip-server`` (PyKMIP 0.11, mTLS,
SQLite) and a TCP relay in front of it that drops the connection mid-way."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kmipfast import pki

BIN = Path(sys.executable).parent
START_DEADLINE = 60.0


@dataclass
class PykmipServer:
    """A running reference server; ``db`` is its SQLite file, ``client`` its mTLS files."""

    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    cert: str
    key: str
    ca: str
    log: Path

    def client(self) -> object:
        from kmip.pie.client import ProxyKmipClient

        c = ProxyKmipClient(
            hostname="127.0.0.1", port=self.port, cert=self.cert, key=self.key, ca=self.ca,
            config_file=os.devnull,
        )  # fmt: skip
        c.open()
        return c

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pykmip_server(d: Path) -> Iterator[PykmipServer]:
    """``pykmip-server`` with mutual TLS and its SQLite database under ``d``."""
    (d / "policies").mkdir(parents=True, exist_ok=True)
    ca, ca_key = pki.create_ca("pykmip source CA")
    srv, srv_key = pki.issue_server_cert(ca, ca_key, ["IP:127.0.0.1", "DNS:localhost"])
    cli, cli_key = pki.issue_client_cert(ca, ca_key, "migration")
    pki.write_certs(d / "ca.crt", ca)
    pki.write_certs(d / "server.crt", [srv, ca])
    pki.write_private_key(d / "server.key", srv_key)
    pki.write_certs(d / "client.crt", cli)
    pki.write_private_key(d / "client.key", cli_key)
    port = free_port()
    conf = d / "server.conf"
    conf.write_text(
        "[server]\n"
        f"hostname=127.0.0.1\nport={port}\n"
        f"certificate_path={d / 'server.crt'}\nkey_path={d / 'server.key'}\n"
        f"ca_path={d / 'ca.crt'}\nauth_suite=TLS1.2\npolicy_path={d / 'policies'}\n"
        f"enable_tls_client_auth=True\nlogging_level=INFO\n"
        f"database_path={d / 'pykmip.sqlite3'}\n"
    )
    log = d / "stdout.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "pykmip-server"), "-f", str(conf), "-l", str(d / "server.log")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = PykmipServer(proc, port, d / "pykmip.sqlite3", str(d / "client.crt"),
                          str(d / "client.key"), str(d / "ca.crt"), log)  # fmt: skip
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"pykmip-server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise AssertionError("pykmip-server did not listen in time")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


class DroppingRelay:
    """Forwards TCP to ``upstream`` until the client has sent ``budget`` chunks, then
    cuts every connection and stops listening: a source that goes away mid-import."""

    def __init__(self, upstream: int, budget: int) -> None:
        self.upstream = upstream
        self.budget = budget
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.dropped = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dropped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if counted:
                with self._lock:
                    self.budget -= 1
                    over = self.budget < 0
                if over:
                    self.drop()
                    return
            try:
                dst.sendall(data)
            except OSError:
                return

    def drop(self) -> None:
        self.dropped.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
