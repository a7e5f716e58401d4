"""Side-by-side server benchmark: kmipfast against the reference PyKMIP server.

    python loadtests/bench_server.py [--quick] [--seconds 5] [--storm 2000]
        [--servers reference,kmipfast,canned] [--workloads get-8,task-8,...]

The servers: ``kmipfast`` (TLS engine auto), ``kmipfast-rustls`` and
``kmipfast-openssl`` (engine forced, for the engine comparison), ``kmipfast-w2``
(``serve --workers 2``), ``kmipfast-pg`` (one node on PostgreSQL) and ``kmipfast-pg2``
(two nodes sharing one data dir and one PostgreSQL database; sessions alternate
between them), ``reference`` (PyKMIP) and ``canned`` (the transport ceiling).  The
PostgreSQL cluster (``kmipfast.pgserver``) is started only when a ``-pg`` server is
asked for, and destroyed at the end.

Starts, one after the other on 127.0.0.1 with equivalent settings (mTLS with ECDSA
P-256 certificates from ``kmipfast.pki``, TLS 1.2, SQLite store, each server's default
logging): the reference ``pykmip-server`` (PyKMIP 0.11), ``kmipfast serve``, and the
"canned" ceiling server (``loadtests/canned_server.py``).  Drives each with the same
workloads from a load generator of 2 worker processes (asyncio + uvloop, closed loop,
persistent TLS sessions, requests pre-encoded from real vCenter captures) and prints
one table.  See loadtests/README.md for the columns and a recorded run.

Workloads (DESIGN §8):
  get-N      Get of existing AES-256 keys over N = 1, 8, 64 persistent sessions
  create-8   Create (durable), 8 sessions
  vcenter-8  Create + AddAttribute batch of three x- attributes + Get, 8 sessions
             (ops = whole three-message tasks)
  hello-8    new session per task: full mTLS handshake + empty DiscoverVersions,
             then close, 8 in flight (ops = sessions)
  task-8     a vCenter key task: new mTLS session, DiscoverVersions, Get, close;
             8 in flight (ops = tasks)
  idle-N     N idle admitted sessions held open (RSS growth per session reported),
             while Get runs over 8 other persistent sessions (p99 is of those Gets)
  storm-N    N sessions opened at once, each DiscoverVersions + Get, 30 s deadline
  invalidate two nodes only (two rows): per key, Create on node A, Get on node B (B
             caches it), Destroy on A; the delay from Destroy's success to B's first
             refusal, with B's next Get sent after the success (``invalidate``) or B
             polling throughout (``invalidate-poll``); a success from B to a Get sent
             after Destroy's success is a STALE READ (ops = keys, --invalidate of them,
             8 at a time)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing as mp
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kmipmsgs as msgs

from kmipfast import pki

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKERS = 2
CLIENT_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256"  # the same suite with every server
INVALIDATE_PIPELINES = 8  # keys in flight in the invalidate workloads (4 per worker)
INVALIDATE_DEADLINE = 10.0  # seconds node B may keep serving a destroyed key

# A task is a generator: it yields request bytes, receives each response, and returns
# True (success) or a short failure description.
Task = Generator[bytes, bytes, "bool | str"]


# ---------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the reference runs a Manager process too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (sum(parts[:8]) - parts[3] - parts[4]) / CLK_TCK  # all but idle, iowait


# ---------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------
@dataclass
class Creds:
    cert: str
    key: str
    ca: str


@dataclass
class Server:
    """One server under test; several nodes when ``nodes`` is set (the first is
    ``proc`` at ``host:port``): sessions are spread over all addresses, CPU and RSS
    summed over all processes."""

    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    creds: Creds
    log: Path
    uids: list[str] = field(default_factory=list)
    tls: str = ""
    nodes: list[tuple[subprocess.Popen[bytes], str, int]] = field(default_factory=list)
    admin_ports: list[int] = field(default_factory=list)  # /metrics of each node
    db_pid: int | None = None  # the PostgreSQL postmaster the server uses

    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [self.proc, *(proc for proc, _, _ in self.nodes)]

    def addresses(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *((host, port) for _, host, port in self.nodes)]

    def pids(self) -> list[int]:
        return [pid for proc in self.procs() for pid in tree(proc.pid)]

    def db_pids(self) -> list[int]:
        return tree(self.db_pid) if self.db_pid is not None else []


def make_pki(d: Path) -> tuple[Creds, Creds]:
    """A CA, a server certificate (127.0.0.1) and a client certificate, all P-256."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = pki.create_ca("loadtest CA")
    srv, srv_key = pki.issue_server_cert(ca, ca_key, ["IP:127.0.0.1", "DNS:localhost"])
    cli, cli_key = pki.issue_client_cert(ca, ca_key, "bench")
    pki.write_certs(d / "ca.crt", ca)
    pki.write_certs(d / "server.crt", [srv, ca])
    pki.write_private_key(d / "server.key", srv_key)
    pki.write_certs(d / "client.crt", cli)
    pki.write_private_key(d / "client.key", cli_key)
    server = Creds(str(d / "server.crt"), str(d / "server.key"), str(d / "ca.crt"))
    client = Creds(str(d / "client.crt"), str(d / "client.key"), str(d / "ca.crt"))
    return server, client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[bytes], out: Path, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not print {prefix!r}; see {out}")


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s; see {log}")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def start_reference(tmp: Path, server_creds: Creds, client: Creds) -> Server:
    d = tmp / "pykmip"
    (d / "policies").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = d / "server.conf"
    conf.write_text(
        "[server]\n"
        f"hostname=127.0.0.1\nport={port}\n"
        f"certificate_path={server_creds.cert}\nkey_path={server_creds.key}\n"
        f"ca_path={server_creds.ca}\n"
        "auth_suite=TLS1.2\n"
        f"policy_path={d / 'policies'}\n"
        "enable_tls_client_auth=True\n"
        "logging_level=INFO\n"
        f"database_path={d / 'pykmip.sqlite3'}\n"
    )
    log = d / "stdout.log"
    proc = _spawn([str(BIN / "pykmip-server"), "-f", str(conf), "-l", str(d / "server.log")], log)
    _wait_for_port(proc, port, log, 30)
    return Server("reference", proc, "127.0.0.1", port, client, log)


def _init_kmipfast(tmp: Path, name: str, store: str | None = None) -> tuple[Path, Creds]:
    """``kmipfast init`` (on ``store``, a store URL, when given) and a client ``bench``."""
    d = tmp / name
    kf = str(BIN / "kmipfast")
    bench = Path(tmp / f"bench-{name}")
    issue = ["client", "issue", "bench", "--tenant", "default", "--out", str(bench)]
    for args in (["init", *(["--store", store] if store else [])], issue):
        subprocess.run(
            [kf, "--data-dir", str(d), *args], check=True, cwd=tmp, stdout=subprocess.DEVNULL
        )
    return d, Creds(str(bench / "bench.crt"), str(bench / "bench.key"), str(bench / "ca.crt"))


def _serve_kmipfast(
    d: Path, log: Path, admin_port: int, *options: str
) -> tuple[subprocess.Popen[bytes], str, int]:
    """``kmipfast serve`` on a free port, its admin listener on ``admin_port``."""
    serve = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{admin_port}"]
    proc = _spawn([str(BIN / "kmipfast"), "--data-dir", str(d), *serve, *options], log)
    host, _, port = _wait_for_line(proc, log, "kmipfast listening on ", 60).rpartition(":")
    return proc, host, int(port)


def start_kmipfast(tmp: Path, engine: str = "auto", workers: int = 1) -> Server:
    """``kmipfast serve`` with its TLS engine forced (``auto`` is the default)."""
    name = "kmipfast" if engine == "auto" else f"kmipfast-{engine}"
    if workers > 1:
        name += f"-w{workers}"
    d, creds = _init_kmipfast(tmp, name)
    log = tmp / f"{name}.log"
    admin = free_port()
    options = ["--tls-engine", engine, "--workers", str(workers)]
    proc, host, port = _serve_kmipfast(d, log, admin, *options)
    # With --workers N only worker 0 serves /metrics: its cache counts are not the server's.
    return Server(name, proc, host, port, creds, log, admin_ports=[admin] if workers == 1 else [])


def start_kmipfast_pg(tmp: Path, pg: PgDatabases, nodes: int) -> Server:
    """``nodes`` ``kmipfast serve`` processes sharing one data dir whose store is a fresh
    PostgreSQL database (README "Several nodes on PostgreSQL"), each with its own port
    and admin port; defaults of ``init`` otherwise (1 worker, SoftHSM root key)."""
    name = "kmipfast-pg" if nodes == 1 else f"kmipfast-pg{nodes}"
    d, creds = _init_kmipfast(tmp, name, pg.new_database())
    started = []
    admin_ports = []
    for i in range(nodes):
        admin_ports.append(free_port())
        started.append(_serve_kmipfast(d, tmp / f"{name}-{i}.log", admin_ports[-1]))
    (proc, host, port), *others = started
    server = Server(name, proc, host, port, creds, tmp / f"{name}-0.log")
    server.nodes, server.admin_ports, server.db_pid = others, admin_ports, pg.pid()
    return server


def start_canned(tmp: Path, server_creds: Creds, client: Creds) -> Server:
    log = tmp / "canned.log"
    cmd = [
        sys.executable,
        str(HERE / "canned_server.py"),
        "--cert",
        server_creds.cert,
        "--key",
        server_creds.key,
        "--ca",
        server_creds.ca,
        "--listen",
        "127.0.0.1:0",
    ]
    proc = _spawn(cmd, log)
    host, _, port = _wait_for_line(proc, log, "canned listening on ", 30).rpartition(":")
    return Server("canned", proc, host, int(port), client, log)


def stop(server: Server) -> None:
    """SIGINT, then SIGKILL of the process groups this script created for the server."""
    procs = server.procs()  # start_new_session: each group is ours alone
    for sig in (signal.SIGINT, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


class PgDatabases:
    """The PostgreSQL cluster of the ``kmipfast-pg*`` servers (``kmipfast.pgserver``),
    started on the first database asked for and destroyed by :meth:`close`."""

    def __init__(self) -> None:
        self.cluster: Any = None

    def new_database(self) -> str:
        if self.cluster is None:
            from kmipfast.pgserver import PgCluster

            self.cluster = PgCluster.started()
        return str(self.cluster.create_database())

    def pid(self) -> int | None:
        proc = self.cluster.proc if self.cluster is not None else None
        return proc.pid if proc is not None else None  # setpriv execs: the postmaster

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.destroy()
            self.cluster = None


def node_lookups(admin_port: int) -> tuple[float, float]:
    """(hits, misses) of one node's object cache, from its ``/metrics``; NaN when it
    does not answer."""
    try:
        url = f"http://127.0.0.1:{admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return math.nan, math.nan
    hits = misses = 0.0
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if name in ("kmipfast_cache_hits", "kmipfast_cache_hits_total"):
            hits += float(number)
        elif name in ("kmipfast_cache_misses", "kmipfast_cache_misses_total"):
            misses += float(number)
    return hits, misses


def cache_lookups(server: Server) -> tuple[float, float]:
    """(hits, misses) of the object cache summed over the server's nodes."""
    counts = [node_lookups(port) for port in server.admin_ports]
    return sum(h for h, _ in counts), sum(m for _, m in counts)


# ---------------------------------------------------------------------------------
# Load generator (runs in the worker processes)
# ---------------------------------------------------------------------------------
def client_context(creds: Creds, tls13: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(creds.ca)
    ctx.load_cert_chain(creds.cert, creds.key)
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # as vCenter; the reference has no 1.3
        ctx.set_ciphers(CLIENT_CIPHERS)
    return ctx


def _check(resp: bytes, items: int, what: str) -> bool | str:
    if msgs.succeeded(resp, items):
        return True
    return f"{what}: {msgs.failure_reason(resp)}"


def task_factory(workload: str, uids: list[str], offset: int) -> Callable[[], Task]:
    """A function making one task of ``workload`` (a generator, see ``Task``)."""
    if workload == "get":
        gets = [msgs.get(u) for u in uids]
        gets = gets[offset % len(gets) :] + gets[: offset % len(gets)]
        cycle = itertools.cycle(gets)

        def get_task() -> Task:
            return _check((yield next(cycle)), 1, "get")

        return get_task

    if workload == "create":

        def create_task() -> Task:
            return _check((yield msgs.CREATE), 1, "create")

        return create_task

    if workload == "vcenter":

        def vcenter_task() -> Task:
            resp = yield msgs.CREATE
            if not msgs.succeeded(resp):
                return f"create: {msgs.failure_reason(resp)}"
            uid = msgs.uid_of(resp)
            if uid is None:
                return "create: no unique identifier"
            checked = _check((yield msgs.add_attributes(uid)), 3, "add_attribute")
            if checked is not True:
                return checked
            return _check((yield msgs.get(uid)), 1, "get")

        return vcenter_task

    if workload == "hello":

        def hello_task() -> Task:
            return _check((yield msgs.DISCOVER_VERSIONS), 1, "discover_versions")

        return hello_task

    if workload in ("storm", "task"):  # a vCenter key task: DiscoverVersions + Get
        cycle = itertools.cycle([msgs.get(u) for u in uids])

        def storm_task() -> Task:
            checked = _check((yield msgs.DISCOVER_VERSIONS), 1, "discover_versions")
            if checked is not True:
                return checked
            return _check((yield next(cycle)), 1, "get")

        return storm_task

    raise ValueError(workload)


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:70]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Stats:
    """Per-worker results; only completions inside [t_start, t_end] count."""

    def __init__(self) -> None:
        self.t_start = math.inf
        self.t_end = math.inf
        self.latencies = array("d")
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()  # every failure, in window or not
        self.last_done = 0.0
        self.ready_sent = False
        self.aux = array("d")  # a second latency of the workload (invalidate: Destroy's)

    def record(self, t0: float, t1: float, result: bool | str, force: bool = False) -> None:
        inside = self.t_start <= t1 <= self.t_end or force
        if result is True:
            if inside:
                self.ok += 1
                self.latencies.append(t1 - t0)
                self.last_done = max(self.last_done, t1)
        else:
            self.errors[str(result) if inside else f"(outside window) {result}"] += 1
            if inside:
                self.failed += 1
                self.last_done = max(self.last_done, t1)

    def result(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
            "latencies": self.latencies.tobytes(),
            "aux": self.aux.tobytes(),
            "last_done": self.last_done,
        }


class Session(asyncio.Protocol):
    """One TLS session running tasks one after another (closed loop)."""

    def __init__(self, stats: Stats, factory: Callable[[], Task], repeat: bool) -> None:
        self.stats = stats
        self.factory = factory
        self.repeat = repeat
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.gen: Task | None = None
        self.t0 = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, t0: float | None = None) -> None:
        self.gen = self.factory()
        self.t0 = time.monotonic() if t0 is None else t0
        assert self.transport is not None
        self.transport.write(next(self.gen))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if not buf and len(data) >= 8 and len(data) == 8 + int.from_bytes(data[4:8], "big"):
            self._message(data)  # the usual case: exactly one whole response
            return
        buf += data
        while len(buf) >= 8:
            n = 8 + int.from_bytes(buf[4:8], "big")
            if len(buf) < n:
                return
            message = bytes(buf[:n])
            del buf[:n]
            self._message(message)

    def _message(self, message: bytes) -> None:
        gen = self.gen
        if gen is None:
            self.stats.record(self.t0, time.monotonic(), "unexpected message")
            return
        try:
            request = gen.send(message)
        except StopIteration as stop:
            self._finish(stop.value)
            return
        except Exception as e:
            self._finish(f"task error {_short(e)}")
            return
        assert self.transport is not None
        self.transport.write(request)

    def _finish(self, result: bool | str) -> None:
        now = time.monotonic()
        self.gen = None
        self.stats.record(self.t0, now, result)
        if self.repeat and now < self.stats.t_end and self.transport is not None:
            self.start(now)
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.gen is not None:
            self.gen = None
            self.stats.record(
                self.t0,
                time.monotonic(),
                f"connection lost {_short(exc) if exc else '(closed by server)'}",
            )
        if not self.done.done():
            self.done.set_result(None)


def _address(job: dict[str, Any], i: int) -> tuple[str, int]:
    """Session ``i``'s server address: round robin over the nodes (even sessions on the
    first node, odd ones on the second of two)."""
    host, port = job["addrs"][i % len(job["addrs"])]
    return host, port


async def _connect(
    job: dict[str, Any], ctx: ssl.SSLContext, session: Session, timeout: float, i: int
) -> None:
    loop = asyncio.get_running_loop()
    host, port = _address(job, i)
    await asyncio.wait_for(
        loop.create_connection(
            lambda: session,
            host,
            port,
            ssl=ctx,
            server_hostname="127.0.0.1",
            ssl_handshake_timeout=timeout,
        ),
        timeout,
    )


async def _times(conn: Connection, stats: Stats) -> None:
    """Wait for the parent's (t_start, t_end) without blocking the loop."""
    loop = asyncio.get_running_loop()
    stats.t_start, stats.t_end = await loop.run_in_executor(None, conn.recv)


async def run_persistent(job: dict[str, Any], conn: Connection, stats: Stats) -> None:
    ctx = client_context(Creds(*job["creds"]), job["tls13"])
    gate = asyncio.Semaphore(8)  # open sessions a few at a time (the reference's backlog is 5)

    async def open_one(i: int) -> Session | None:
        session = Session(stats, task_factory(job["workload"], job["uids"], i * 7), True)
        async with gate:
            try:
                await _connect(job, ctx, session, 30.0, i)
            except Exception as e:
                stats.record(0.0, time.monotonic(), f"connect {_short(e)}")
                return None
        session.start()  # warm-up starts at once
        return session

    opened = await asyncio.gather(*(open_one(i) for i in job["session_ids"]))
    sessions = [s for s in opened if s is not None]
    conn.send(("ready", len(sessions)))
    stats.ready_sent = True
    await _times(conn, stats)
    if sessions:
        wait = max(1.0, stats.t_end - time.monotonic() + 15.0)
        await asyncio.wait([s.done for s in sessions], timeout=wait)
    for s in sessions:
        if s.transport is not None:
            s.transport.close()
        if s.gen is not None:
            s.gen = None
            stats.errors["no answer before the end"] += 1


async def run_idle(job: dict[str, Any], conn: Connection, stats: Stats) -> None:
    """Hold ``job["idle"]`` admitted sessions open (each did one DiscoverVersions), then
    run the persistent workload beside them; the idle ones close at the end."""
    ctx = client_context(Creds(*job["creds"]), job["tls13"])
    idle_stats = Stats()
    idle_stats.t_start, idle_stats.t_end = 0.0, math.inf
    gate = asyncio.Semaphore(64)
    factory = task_factory("hello", job["uids"], 0)

    async def open_one(i: int) -> Session | None:
        session = Session(idle_stats, factory, False)
        async with gate:
            try:
                await _connect(job, ctx, session, 60.0, i)
                session.start()
                await asyncio.wait_for(session.done, 60.0)
            except Exception as e:
                idle_stats.record(0.0, 0.0, f"idle session: {_short(e)}")
                if session.transport is not None:
                    session.transport.close()
                return None
        return session

    opened = await asyncio.gather(*(open_one(i) for i in range(job["idle"])))
    held = [s for s in opened if s is not None and s.transport is not None]
    for err, n in idle_stats.errors.items():
        stats.errors[err] += n
    conn.send(("idle", len(held)))
    try:
        await run_persistent(job, conn, stats)
    finally:
        for s in held:
            if s.transport is not None:
                s.transport.close()


async def _one_shot(
    job: dict[str, Any],
    ctx: ssl.SSLContext,
    stats: Stats,
    factory: Callable[[], Task],
    timeout: float,
    i: int,
) -> None:
    """New session, one task, close; the latency includes connect and handshake."""
    t0 = time.monotonic()
    session = Session(stats, factory, False)
    try:
        await _connect(job, ctx, session, timeout, i)
    except asyncio.CancelledError:
        stats.record(t0, time.monotonic(), "deadline: not connected", force=True)
        raise
    except Exception as e:
        stats.record(t0, time.monotonic(), f"connect {_short(e)}")
        return
    try:
        session.start(t0)
        await session.done
    except asyncio.CancelledError:
        stats.record(t0, time.monotonic(), "deadline: no answer", force=True)
        raise
    finally:
        if session.transport is not None:
            session.transport.close()


async def run_churn(job: dict[str, Any], conn: Connection, stats: Stats) -> None:
    ctx = client_context(Creds(*job["creds"]), job["tls13"])
    factory = task_factory(job["workload"], job["uids"], 0)

    async def runner(i: int) -> None:
        while time.monotonic() < stats.t_end:
            await _one_shot(job, ctx, stats, factory, 30.0, i)

    runners = [asyncio.ensure_future(runner(i)) for i in job["session_ids"]]
    conn.send(("ready", len(runners)))
    stats.ready_sent = True
    await _times(conn, stats)
    if runners:
        await asyncio.wait(runners, timeout=max(1.0, stats.t_end - time.monotonic() + 35.0))


async def run_storm(job: dict[str, Any], conn: Connection, stats: Stats) -> None:
    ctx = client_context(Creds(*job["creds"]), job["tls13"])
    factory = task_factory("storm", job["uids"], 0)
    conn.send(("ready", len(job["session_ids"])))
    stats.ready_sent = True
    await _times(conn, stats)
    await asyncio.sleep(max(0.0, stats.t_start - time.monotonic()))
    deadline = stats.t_end - stats.t_start
    tasks = [
        asyncio.ensure_future(_one_shot(job, ctx, stats, factory, deadline, i))
        for i in job["session_ids"]
    ]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, stats.t_end - time.monotonic()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class Caller:
    """A client session for scripted exchanges: one request at a time, each answer
    returned with the monotonic time its last byte was read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: tuple[str, int], ctx: ssl.SSLContext) -> Caller:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, ssl=ctx, server_hostname="127.0.0.1"), 30.0
        )
        return cls(reader, writer)

    async def call(self, request: bytes) -> tuple[bytes, float]:
        self.writer.write(request)
        head = await self.reader.readexactly(8)
        body = await self.reader.readexactly(int.from_bytes(head[4:8], "big"))
        return head + body, time.monotonic()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


STALE = "STALE READ: node B served a key after Destroy had succeeded on node A"


async def invalidate_key(a: Caller, b: Caller, poll: bool, stats: Stats) -> None:
    """One key: Create on A, Get on B (B caches it), Destroy on A, then see when B
    refuses it.  ``poll``: B Gets it in a tight loop from before the Destroy is sent;
    else B's first Get is sent once Destroy's success has been read.  Records the delay
    from Destroy's success to B's first refusal (negative: refused before success was
    read) and, in ``stats.aux``, Destroy's latency on A."""
    resp, _ = await a.call(msgs.CREATE)
    uid = msgs.uid_of(resp) if msgs.succeeded(resp) else None
    if uid is None:
        stats.record(0.0, 0.0, f"create on A: {msgs.failure_reason(resp)}", force=True)
        return
    get = msgs.get(uid)
    resp, _ = await b.call(get)
    if not msgs.succeeded(resp):
        stats.record(0.0, 0.0, f"get on B: {msgs.failure_reason(resp)}", force=True)
        return
    destroyed = math.inf  # when Destroy's success was read on A
    stale = False

    async def poll_b() -> float:
        nonlocal stale
        deadline = time.monotonic() + INVALIDATE_DEADLINE
        while True:
            sent = time.monotonic()
            resp, t = await b.call(get)
            if not msgs.succeeded(resp):
                return t
            stale = stale or sent > destroyed
            if t > deadline:
                return math.nan

    poller = asyncio.ensure_future(poll_b()) if poll else None
    t0 = time.monotonic()
    resp, destroyed = await a.call(msgs.destroy(uid))
    if not msgs.succeeded(resp):
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        stats.record(t0, destroyed, f"destroy on A: {msgs.failure_reason(resp)}", force=True)
        return
    stats.aux.append(destroyed - t0)
    refused = await (poller if poller is not None else poll_b())
    if math.isnan(refused):  # served all along: stale, and no delay to report
        stats.failed += 1
        stats.errors[STALE] += 1
        stats.errors[f"B still served it {INVALIDATE_DEADLINE:g} s after Destroy"] += 1
        return
    stats.last_done = max(stats.last_done, refused)
    stats.latencies.append(refused - destroyed)
    if stale:
        stats.failed += 1
        stats.errors[STALE] += 1
    else:
        stats.ok += 1


async def run_invalidate(job: dict[str, Any], conn: Connection, stats: Stats) -> None:
    """``job["count"]`` keys through :func:`invalidate_key`, one pipeline per session
    id, each with its own sessions to node A and node B (``job["workload"]``: ``next``
    or ``poll``)."""
    ctx = client_context(Creds(*job["creds"]), job["tls13"])
    a_address, b_address = job["addrs"][:2]
    pipelines = [
        (await Caller.open(a_address, ctx), await Caller.open(b_address, ctx))
        for _ in job["session_ids"]
    ]
    keys = iter(range(job["count"]))
    conn.send(("ready", len(pipelines)))
    stats.ready_sent = True
    await _times(conn, stats)
    await asyncio.sleep(max(0.0, stats.t_start - time.monotonic()))

    async def pipeline(a: Caller, b: Caller) -> None:
        for _ in keys:
            try:
                await invalidate_key(a, b, job["workload"] == "poll", stats)
            except Exception as e:  # a broken session ends its pipeline
                stats.record(0.0, 0.0, f"task error {_short(e)}", force=True)
                return

    try:
        await asyncio.gather(*(pipeline(a, b) for a, b in pipelines))
    finally:
        await asyncio.gather(*(c.close() for pair in pipelines for c in pair))


RUNNERS = {
    "persistent": run_persistent,
    "churn": run_churn,
    "storm": run_storm,
    "idle": run_idle,
    "invalidate": run_invalidate,
}


def worker_main(conn: Connection) -> None:
    import uvloop

    with contextlib.suppress(ValueError, OSError):  # 2,000 storm sessions need fds
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    while True:
        job = conn.recv()
        if job is None:
            return
        if not isinstance(job, dict):
            continue  # start times of a phase this worker already gave up on
        stats = Stats()
        try:
            uvloop.run(RUNNERS[job["kind"]](job, conn, stats))
        except Exception as e:
            stats.errors[f"load generator error {_short(e)}"] += 1
            if not stats.ready_sent:
                conn.send(("ready", 0))
        conn.send(("result", stats.result()))


# ---------------------------------------------------------------------------------
# Parent: phases, sampling, table
# ---------------------------------------------------------------------------------
@dataclass
class Row:
    workload: str
    server: str
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    rss_kib: int = 0
    gen_cpu: float = 0.0
    other_cpu: float = 0.0
    db_cpu: float = math.nan  # PostgreSQL's CPU in cores, for servers using it
    nodes: int = 1
    errors: Counter[str] = field(default_factory=Counter)
    note: str = ""
    aux: list[float] = field(default_factory=list)  # sorted; invalidate: Destroy latencies

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float, of: list[float] | None = None) -> float:
        values = self.latencies if of is None else of
        if not values:
            return math.nan
        return values[min(len(values) - 1, int(q * len(values)))]


class LoadGen:
    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(WORKERS):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child,), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(None)
        for p in self.procs:
            p.join(5)

    def _recv(self, conn: Connection, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.poll(0.1):
                tag, value = conn.recv()
                if tag == kind:
                    return value
        raise RuntimeError(f"load generator: no {kind} within {timeout} s")

    def run(
        self,
        server: Server,
        workload: str,
        kind: str,
        sessions: int,
        warmup: float,
        seconds: float,
        tls13: bool,
        idle: int = 0,
        count: int = 0,
    ) -> Row:
        """One phase; ``kind`` storm and invalidate end when their work is done (within
        ``seconds``), the others after ``seconds``.  ``idle``, ``count``: idle sessions
        to hold, keys to invalidate, split over the workers."""
        ids = list(range(sessions))
        spids = server.pids()
        rss_before = rss_kib(spids)
        open_ended = kind in ("storm", "invalidate")
        for i, conn in enumerate(self.conns):
            conn.send(
                {
                    "idle": idle // WORKERS + (1 if i < idle % WORKERS else 0),
                    "count": count // WORKERS + (1 if i < count % WORKERS else 0),
                    "kind": kind,
                    "workload": workload,
                    "addrs": server.addresses(),
                    "uids": server.uids,
                    "tls13": tls13,
                    "creds": (server.creds.cert, server.creds.key, server.creds.ca),
                    "session_ids": ids[i::WORKERS],
                }
            )
        held = 0
        if kind == "idle":
            held = sum(int(self._recv(conn, "idle", 900)) for conn in self.conns)
            time.sleep(1.0)  # let the server settle before its RSS is read
            rss_idle = rss_kib(spids)
        for conn in self.conns:
            self._recv(conn, "ready", 120)
        t_start = time.monotonic() + warmup
        t_end = t_start + seconds
        for conn in self.conns:
            conn.send((t_start, t_end))
        time.sleep(max(0.0, t_start - time.monotonic()))

        def sample() -> tuple[float, float, float, float, float]:
            return (
                cpu_seconds(spids),
                cpu_seconds(self.pids()),
                machine_busy_seconds(),
                time.monotonic(),
                cpu_seconds(server.db_pids()),  # its backends come and go: look again
            )

        s0 = sample()
        rss = rss_kib(spids)
        results: list[dict[str, Any] | None] = [None] * WORKERS
        limit = t_end + (40.0 if kind != "persistent" else 20.0)
        sampled_end = None
        while any(r is None for r in results) and time.monotonic() < limit:
            if not open_ended and sampled_end is None and time.monotonic() >= t_end:
                sampled_end = sample()
            rss = max(rss, rss_kib(spids))
            for i, conn in enumerate(self.conns):
                if results[i] is None and conn.poll(0):
                    tag, value = conn.recv()
                    if tag == "result":
                        results[i] = value
            wait = 0.2 if sampled_end is not None or open_ended else t_end - time.monotonic()
            time.sleep(min(0.2, max(0.0, wait)))
        s1 = sampled_end or sample()
        row = Row(workload, server.name, rss_kib=rss)
        if kind == "idle":
            each = (rss_idle - rss_before) / held if held else math.nan
            row.note = f"{held} of {idle} idle sessions held, {fmt(each)} KiB RSS each"
        lat: list[float] = []
        aux: list[float] = []
        last_done = 0.0
        for r in results:
            if r is None:
                row.errors["load generator worker gave no result"] += 1
                continue
            row.ok += r["ok"]
            row.failed += r["failed"]
            row.errors.update(r["errors"])
            a = array("d")
            a.frombytes(r["latencies"])
            lat.extend(a)
            a = array("d")
            a.frombytes(r["aux"])
            aux.extend(a)
            last_done = max(last_done, r["last_done"])
        row.latencies, row.aux = sorted(lat), sorted(aux)
        wall = s1[3] - s0[3]
        if open_ended:
            row.seconds = max(1e-9, (last_done or s1[3]) - t_start)
        else:
            row.seconds = seconds
        row.server_cpu = s1[0] - s0[0]
        row.gen_cpu = (s1[1] - s0[1]) / wall
        db = max(0.0, s1[4] - s0[4])
        if server.db_pid is not None:
            row.db_cpu = db / wall
        busy = s1[2] - s0[2]
        row.other_cpu = max(0.0, busy - (s1[0] - s0[0]) - (s1[1] - s0[1]) - db) / wall
        return row


def blocking_call(sock: ssl.SSLSocket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while True:
        n = msgs.frame_length(data)
        if n is not None and len(data) >= n:
            return data[:n]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by server")
        data += chunk


def prepare(server: Server, keys: int, tls13: bool) -> None:
    """Check the server answers, note the negotiated TLS, create the keys to Get and
    Get each once."""
    ctx = client_context(server.creds, tls13)
    with (
        socket.create_connection((server.host, server.port), 30) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        cipher = sock.cipher()
        server.tls = f"{sock.version()} {cipher[0] if cipher else '?'}"
        resp = blocking_call(sock, msgs.DISCOVER_VERSIONS)
        if not msgs.succeeded(resp):
            raise RuntimeError(
                f"{server.name}: DiscoverVersions failed: {msgs.failure_reason(resp)}"
            )
        if server.name == "canned":
            server.uids = [f"canned-{i}" for i in range(keys)]
            return
        for _ in range(keys):
            resp = blocking_call(sock, msgs.CREATE)
            uid = msgs.uid_of(resp) if msgs.succeeded(resp) else None
            if uid is None:
                raise RuntimeError(f"{server.name}: Create failed: {msgs.failure_reason(resp)}")
            server.uids.append(uid)
    asyncio.run(first_gets(server, ctx))


async def first_gets(server: Server, ctx: ssl.SSLContext, sessions: int = 8) -> None:
    """Get every prepared key once, over ``sessions`` sessions alternating between the
    nodes.  The first Get of a key turns its Fresh attribute False (KMIP §3.34): a
    durable write, which with another node live is answered only after the store's
    lease and empties the other nodes' caches.  The Get phases measure what follows."""
    addresses = server.addresses()
    callers = [await Caller.open(addresses[i % len(addresses)], ctx) for i in range(sessions)]
    todo = iter(server.uids)

    async def get_each(caller: Caller) -> None:
        for uid in todo:
            resp, _ = await caller.call(msgs.get(uid))
            if not msgs.succeeded(resp):
                raise RuntimeError(f"{server.name}: Get failed: {msgs.failure_reason(resp)}")

    try:
        await asyncio.gather(*(get_each(caller) for caller in callers))
    finally:
        await asyncio.gather(*(caller.close() for caller in callers))


def wait_for_cache(server: Server, timeout: float = 30.0) -> None:
    """Poll every node until a Get of a prepared key is a cache hit: a node on
    PostgreSQL trusts its cache only once it has seen the nodes table for a while
    (``kmipfast/store/postgres.py``), and the phases measure the steady state."""
    ctx = client_context(server.creds, False)
    for address, admin in zip(server.addresses(), server.admin_ports, strict=True):
        deadline = time.monotonic() + timeout
        with (
            socket.create_connection(address, 30) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            while True:
                hits, _ = node_lookups(admin)
                resp = blocking_call(sock, msgs.get(server.uids[0]))
                if not msgs.succeeded(resp):
                    raise RuntimeError(f"{server.name} {address}: {msgs.failure_reason(resp)}")
                if node_lookups(admin)[0] > hits:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} {address}: no cache hit in {timeout} s")
                time.sleep(0.1)


# workload name -> (kind, workload, sessions); the storm's N comes from --storm
PHASES: list[tuple[str, str, str, int]] = [
    ("get-1", "persistent", "get", 1),
    ("get-8", "persistent", "get", 8),
    ("get-64", "persistent", "get", 64),
    ("create-8", "persistent", "create", 8),
    ("vcenter-8", "persistent", "vcenter", 8),
    ("hello-8", "churn", "hello", 8),
    ("task-8", "churn", "task", 8),
    ("idle-1000", "idle", "get", 8),
    ("idle-10000", "idle", "get", 8),
    ("storm", "storm", "storm", 0),
    # two nodes only; both rows are asked for with `invalidate`
    ("invalidate", "invalidate", "next", INVALIDATE_PIPELINES),
    ("invalidate-poll", "invalidate", "poll", INVALIDATE_PIPELINES),
]
CANNED_PHASES = {
    "get-1",
    "get-8",
    "get-64",
    "hello-8",
    "task-8",
    "idle-1000",
    "idle-10000",
    "storm",
}


def fmt(x: float, digits: int = 1) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:,.{digits}f}"


def print_table(rows: list[Row], args: argparse.Namespace, servers: dict[str, str]) -> None:
    by = {(r.workload, r.server): r for r in rows}
    header = [
        "workload",
        "server",
        "ok",
        "failed",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "srv CPU s/1k",
        "srv RSS MiB",
        "gen CPU",
        "other CPU",
        "kf/ref",
        "note",
    ]
    table = []
    for r in rows:
        ops = r.ok + r.failed
        ratio = ""
        ref = by.get((r.workload, "reference"))
        ours = r.server.startswith("kmipfast")
        if ours and ref is not None:
            ratio = f"{r.rate / ref.rate:,.1f}x" if ref.rate > 0 else "ref 0 ok"
            if r.failed or ref.failed:
                ratio += " (failures!)"
        notes = [f"{r.nodes} nodes"] if r.nodes > 1 else []
        sqlite = by.get((r.workload, "kmipfast"))
        if r.server.startswith("kmipfast-pg") and sqlite is not None and sqlite.rate > 0:
            notes.append(f"{100 * r.rate / sqlite.rate:.0f}% of one SQLite node")
        if not math.isnan(r.db_cpu):
            notes.append(f"PostgreSQL {r.db_cpu:.2f} cores")
        note = "; ".join([*notes, *([r.note] if r.note else [])])
        canned = by.get((r.workload, "canned"))
        if ours and canned is not None and canned.rate > 0:
            note = (note + "; " if note else "") + f"{100 * r.rate / canned.rate:.0f}% of canned"
        openssl = by.get((r.workload, "kmipfast-openssl"))
        if r.server == "kmipfast-rustls" and openssl is not None and openssl.ok and r.ok:
            per_op = lambda row: row.server_cpu / (row.ok + row.failed)  # noqa: E731
            cpu = per_op(r) / per_op(openssl)
            note = (note + "; " if note else "") + (
                f"{r.rate / openssl.rate:.2f}x openssl's ops/s at {100 * cpu:.0f}% of its CPU/op"
            )
        if r.errors[STALE]:
            note = (note + "; " if note else "") + f"{r.errors[STALE]} STALE READS, see below"
        elif r.failed:
            note = (note + "; " if note else "") + "FAILURES, see below"
        table.append(
            [
                r.workload,
                r.server,
                str(r.ok),
                str(r.failed),
                fmt(r.rate, 0),
                fmt(1000 * r.pct(0.50), 2),
                fmt(1000 * r.pct(0.99), 2),
                fmt(1000 * r.server_cpu / ops, 3) if ops else "-",
                fmt(r.rss_kib / 1024, 1),
                fmt(r.gen_cpu, 2),
                fmt(r.other_cpu, 2),
                ratio,
                note,
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, 1, 12) else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    print()
    print(
        f"kmipfast vs reference PyKMIP — {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPUs, {args.seconds:g} s per phase after {args.warmup:g} s "
        f"warm-up, load generator {WORKERS} processes"
    )
    for name, tls in servers.items():
        print(f"  {name}: {tls}")
    print(line(header))
    print(line(["-" * w for w in widths]))
    for cells in table:
        print(line(cells))
    failures = [r for r in rows if r.errors]
    if failures:
        print("\nFailures (count, server, workload, error):")
        for r in failures:
            for err, n in r.errors.most_common(6):
                print(f"  {n:6d}  {r.server:9s}  {r.workload:9s}  {err}")
    else:
        print("\nNo failures.")


def run_phase(
    gen: LoadGen, server: Server, args: argparse.Namespace, phase: tuple[str, str, str, int]
) -> Row:
    """One row: ``phase`` (see PHASES) against ``server``, notes filled in."""
    label, kind, workload, sessions = phase
    lookups = cache_lookups(server)
    if kind == "storm":
        row = gen.run(server, workload, kind, args.storm, 0.3, args.storm_deadline, args.tls13)
        row.note = f"all done in {row.seconds:.2f} s"
        if row.failed or row.ok < args.storm:
            row.note = f"{row.ok} of {args.storm} served, last answer at {row.seconds:.1f} s"
        label = f"storm-{args.storm}"
    elif kind == "invalidate":
        row = gen.run(
            server, workload, kind, sessions, 0.0, 600.0, args.tls13, count=args.invalidate
        )
        how = "B's next Get after it" if workload == "next" else "B polling during Destroy"
        row.note = (
            f"Destroy ok on A -> refused on B ({how}): max {1000 * row.pct(1.0):.2f} ms; "
            f"Destroy p50 {1000 * row.pct(0.5, row.aux):.0f} ms"
        )
    else:
        idle = int(label.split("-")[1]) if kind == "idle" else 0
        row = gen.run(
            server, workload, kind, sessions, args.warmup, args.seconds, args.tls13, idle=idle
        )
    row.workload = label
    row.nodes = len(server.addresses())
    hits, misses = (a - b for a, b in zip(cache_lookups(server), lookups, strict=True))
    if hits + misses > 0 and kind != "invalidate":
        cached = f"cache hits {100 * hits / (hits + misses):.1f}%"
        row.note = f"{row.note}; {cached}" if row.note else cached
    return row


def main() -> int:
    p = argparse.ArgumentParser(description="kmipfast vs PyKMIP side-by-side benchmark")
    p.add_argument("--quick", action="store_true", help="2 s phases, storm of 200")
    p.add_argument("--seconds", type=float, help="measured seconds per phase (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per phase (default 1)")
    p.add_argument("--storm", type=int, help="sessions in the boot storm (default 2000)")
    p.add_argument("--storm-deadline", type=float, default=30.0)
    p.add_argument("--keys", type=int, default=64, help="keys created per server for Get")
    p.add_argument(
        "--invalidate", type=int, default=200, help="keys destroyed per invalidate row (200)"
    )
    p.add_argument(
        "--servers",
        default="reference,kmipfast,canned",
        help="comma-separated subset of reference,kmipfast,kmipfast-rustls,kmipfast-openssl,"
        "kmipfast-w2,kmipfast-pg,kmipfast-pg2,canned (kmipfast = TLS engine auto; -w2: serve "
        "--workers 2; -pg: on PostgreSQL, -pg2: two nodes on one PostgreSQL)",
    )
    p.add_argument("--workloads", help="comma-separated subset, e.g. get-8,storm")
    p.add_argument(
        "--tls13",
        action="store_true",
        help="let the client negotiate TLS 1.3 (the reference speaks only 1.2)",
    )
    args = p.parse_args()
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.storm = args.storm or (200 if args.quick else 2000)
    wanted = set(args.workloads.split(",")) if args.workloads else None
    phases = [
        ph
        for ph in PHASES
        if wanted is None
        or ph[0] in wanted
        or (ph[0] == "storm" and any(w.startswith("storm") for w in wanted))
        or (ph[0].startswith("invalidate") and "invalidate" in wanted)
    ]

    with contextlib.suppress(ValueError, OSError):
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    gen = LoadGen()
    pg = PgDatabases()
    rows: list[Row] = []
    tls: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kmipbench-") as tmpdir:
        tmp = Path(tmpdir)
        server_creds, client_creds = make_pki(tmp / "pki")
        starters: dict[str, Callable[[], Server]] = {
            "reference": lambda: start_reference(tmp, server_creds, client_creds),
            "kmipfast": lambda: start_kmipfast(tmp),
            "kmipfast-rustls": lambda: start_kmipfast(tmp, "rustls"),
            "kmipfast-openssl": lambda: start_kmipfast(tmp, "openssl"),
            "kmipfast-w2": lambda: start_kmipfast(tmp, workers=2),
            "kmipfast-pg": lambda: start_kmipfast_pg(tmp, pg, 1),
            "kmipfast-pg2": lambda: start_kmipfast_pg(tmp, pg, 2),
            "canned": lambda: start_canned(tmp, server_creds, client_creds),
        }
        try:
            for name in args.servers.split(","):
                print(f"== {name}: starting", flush=True)
                server = starters[name]()
                try:
                    prepare(server, args.keys, args.tls13)
                    if server.admin_ports:
                        wait_for_cache(server)
                    pids = ", ".join(str(proc.pid) for proc in server.procs())
                    tls[name] = f"{server.tls}, pid {pids}"
                    for phase in phases:
                        label, kind = phase[:2]
                        if name == "canned" and label not in CANNED_PHASES:
                            continue
                        if name == "reference" and kind == "idle":
                            # It breaks down between 64 and 128 sessions (see the storm).
                            continue
                        if kind == "invalidate" and not server.nodes:
                            continue  # it takes two nodes
                        row = run_phase(gen, server, args, phase)
                        rows.append(row)
                        print(
                            f"   {row.workload:10s} {row.ok:8d} ok {row.failed:6d} failed "
                            f"{row.rate:10,.0f} ops/s  p99 {1000 * row.pct(0.99):8.2f} ms",
                            flush=True,
                        )
                        exited = [proc for proc in server.procs() if proc.poll() is not None]
                        if exited:
                            print(
                                f"   {name}: pid {exited[0].pid} exited "
                                f"({exited[0].returncode}); see {server.log}",
                                flush=True,
                            )
                            break
                finally:
                    stop(server)
        finally:
            gen.close()
            pg.close()
        print_table(rows, args, tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
