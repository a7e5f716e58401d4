"""A PostgreSQL server of our own: Debian's ``postgresql`` binaries, initdb'd into a
directory, started on a loopback port.  The test fixtures (``tests/pg.py``) and
``kmipfast cluster up`` use it.

PostgreSQL refuses to run as root: as root, the server process runs as the ``postgres``
system user the Debian package creates (through ``setpriv``, which execs, so the pid we
hold is the postmaster's; it also asks for SIGINT when its parent dies, so no server
outlives a killed parent).  As any other user it runs as that user.  Authentication is
``trust`` on loopback only: this is a server for one machine's tests and local
clusters, not for production.

Databases are owned by the unprivileged role ``kmipfast`` (created at start), so the
store runs without superuser rights.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
    "port_free",
]

START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
POLL_INTERVAL = 0.05
ROLE = "kmipfast"
RUN_AS = "postgres"  # the system user of Debian's package


def pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb and postgres, or None."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "initdb").exists() and (d / "postgres").exists() and d.parent.name.isdigit():
            found.append((int(d.parent.name), d))
    return max(found)[1] if found else None


def pg_available() -> bool:
    if pg_bin_dir() is None or not (shutil.which("psql") and shutil.which("setpriv")):
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` (as PostgreSQL does, SO_REUSEADDR:
    connections in TIME_WAIT from a previous run do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PgError(Exception):
    """The server could not be set up or misbehaved (one line, or a line and its log)."""


class PgCluster:
    """One PostgreSQL server process on ``127.0.0.1:port`` over ``directory/data``."""

    def __init__(self, directory: Path | None = None) -> None:
        """``directory``: kept (created if missing, never deleted); None: a new temporary
        one that :meth:`destroy` deletes."""
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise PgError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self._own_dir = directory is None
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kmipfast-pg-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        # A parent killed outright must not leave a postmaster behind: it gets SIGINT
        # (fast shutdown) when its parent dies.
        self._prefix: list[str] = ["setpriv", "--pdeathsig", "INT", "--"]
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._prefix = ["setpriv", "--pdeathsig", "INT", f"--reuid={RUN_AS}",
                            f"--regid={RUN_AS}", "--init-groups", "--"]  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------

    def _as_server_user(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._prefix, *cmd],
            capture_output=True,
            text=True,
            check=False,
            **kw,  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            raise PgError(f"{cmd[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done  # type: ignore[no-any-return]

    def writable(self) -> bool:
        """Whether the server's user can write :attr:`directory` (as root, ``postgres``
        needs search permission on every parent directory)."""
        done = subprocess.run([*self._prefix, "test", "-w", str(self.directory)], check=False)
        return done.returncode == 0

    def initdb(self) -> None:
        self._as_server_user(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @classmethod
    def started(cls) -> PgCluster:
        """A new cluster in a temporary directory, running; nothing is left behind when
        it fails to start."""
        cluster = cls()
        try:
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def start(self, port: int | None = None, **settings: str) -> None:
        """Start the postmaster (initdb first if needed) and wait until it accepts queries."""
        if self.running:
            raise PgError("already running")
        if not self.writable():
            raise PgError(f"the server's user cannot write {self.directory}")
        if not (self.data / "PG_VERSION").exists():
            self.initdb()
        self.port = port or self.port or free_port()
        options = {
            "port": str(self.port),
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.directory),
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            **settings,
        }
        args = [a for k, v in options.items() for a in ("-c", f"{k}={v}")]
        if not port_free(self.host, self.port):
            raise PgError(f"port {self.port} on {self.host} is in use")
        log = open(self.log_path, "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [*self._prefix, str(self.bin / "postgres"), "-D", str(self.data), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session: a terminal's Ctrl-C reaches the parent only, which
                # stops its clients first and then this server.
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise PgError(f"postgres exited {self.proc.returncode}:\n{self.log()}")
            ready = subprocess.run(
                ["pg_isready", "-q", "-h", self.host, "-p", str(self.port)], check=False
            )
            # Ready, and ours: not another server on this data dir (lock file) or port.
            if ready.returncode == 0 and self._postmaster_pid() == self.proc.pid:
                break
            if time.monotonic() > deadline:
                self.kill9()
                raise PgError(f"postgres not ready within {START_DEADLINE:.0f} s:\n{self.log()}")
            time.sleep(POLL_INTERVAL)
        if not self.in_recovery():  # a standby has its primary's roles
            self.psql(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')"
                f" THEN CREATE ROLE {ROLE} LOGIN; END IF; END $$"
            )

    def _postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``: whichever server holds the data dir."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def start_standby(self) -> PgCluster:
        """A streaming standby of this (running) cluster: pg_basebackup -R into a new
        directory, started on a port of its own.  With ``synchronous_standby_names``
        set on this primary, a commit returns only once the standby has flushed it."""
        standby = PgCluster()
        self._as_server_user(
            str(self.bin / "pg_basebackup"), "-h", self.host, "-p", str(self.port),
            "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        standby.start()
        return standby

    def promote(self) -> None:
        """Make this standby a primary (waits until it accepts writes)."""
        self.psql("SELECT pg_promote(true, 60)")
        if self.in_recovery():
            raise PgError("standby did not leave recovery")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): rolls back open transactions, checkpoints, exits."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill9(self) -> None:
        """SIGKILL the postmaster: what a crashed database host looks like to its clients.
        (Its backends notice the postmaster is gone and exit by themselves.)"""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def destroy(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # -- databases ----------------------------------------------------------------

    def url(self, database: str = "postgres", user: str = ROLE) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser; returns unaligned, tuples-only output."""
        done = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise PgError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by role ``kmipfast``; returns its URL."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
