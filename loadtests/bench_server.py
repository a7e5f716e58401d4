"""Side-by-side server benchmark: kmipfast against the reference PyKMIP server.

    python loadtests/bench_server.py [--quick] [--seconds 5] [--storm 2000]
        [--servers reference,kmipfast,canned] [--workloads get-8,task-8,...]

The servers: ``kmipfast`` (TLS engine auto), ``kmipfast-rustls`` and
``kmipfast-openssl`` (engine forced, for the engine comparison), ``reference``
(PyKMIP) and ``canned`` (the transport ceiling).

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
    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    creds: Creds
    log: Path
    uids: list[str] = field(default_factory=list)
    tls: str = ""

    def pids(self) -> list[int]:
        return tree(self.proc.pid)


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


def start_kmipfast(tmp: Path, engine: str = "auto", workers: int = 1) -> Server:
    """``kmipfast serve`` with its TLS engine forced (``auto`` is the default)."""
    name = "kmipfast" if engine == "auto" else f"kmipfast-{engine}"
    if workers > 1:
        name += f"-w{workers}"
    d = tmp / name
    kf = str(BIN / "kmipfast")
    bench = Path(tmp / f"bench-{name}")
    issue = ["client", "issue", "bench", "--tenant", "default", "--out", str(bench)]
    for args in (["init"], issue):
        subprocess.run(
            [kf, "--data-dir", str(d), *args], check=True, cwd=tmp, stdout=subprocess.DEVNULL
        )
    creds = Creds(str(bench / "bench.crt"), str(bench / "bench.key"), str(bench / "ca.crt"))
    log = tmp / f"{name}.log"
    serve = ["serve", "--listen", "127.0.0.1:0", "--tls-engine", engine, "--workers", str(workers)]
    proc = _spawn([kf, "--data-dir", str(d), *serve], log)
    host, _, port = _wait_for_line(proc, log, "kmipfast listening on ", 60).rpartition(":")
    return Server(name, proc, host, int(port), creds, log)


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
    """SIGINT, then SIGKILL of the process group this script created for the server."""
    pgid = server.proc.pid  # start_new_session: the group is ours alone
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)


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


async def _connect(
    job: dict[str, Any], ctx: ssl.SSLContext, session: Session, timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(
        loop.create_connection(
            lambda: session,
            job["host"],
            job["port"],
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
                await _connect(job, ctx, session, 30.0)
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

    async def open_one() -> Session | None:
        session = Session(idle_stats, factory, False)
        async with gate:
            try:
                await _connect(job, ctx, session, 60.0)
                session.start()
                await asyncio.wait_for(session.done, 60.0)
            except Exception as e:
                idle_stats.record(0.0, 0.0, f"idle session: {_short(e)}")
                if session.transport is not None:
                    session.transport.close()
                return None
        return session

    opened = await asyncio.gather(*(open_one() for _ in range(job["idle"])))
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
) -> None:
    """New session, one task, close; the latency includes connect and handshake."""
    t0 = time.monotonic()
    session = Session(stats, factory, False)
    try:
        await _connect(job, ctx, session, timeout)
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

    async def runner() -> None:
        while time.monotonic() < stats.t_end:
            await _one_shot(job, ctx, stats, factory, 30.0)

    runners = [asyncio.ensure_future(runner()) for _ in job["session_ids"]]
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
        asyncio.ensure_future(_one_shot(job, ctx, stats, factory, deadline))
        for _ in job["session_ids"]
    ]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, stats.t_end - time.monotonic()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


RUNNERS = {
    "persistent": run_persistent,
    "churn": run_churn,
    "storm": run_storm,
    "idle": run_idle,
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
    errors: Counter[str] = field(default_factory=Counter)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        return self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]


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
    ) -> Row:
        ids = list(range(sessions))
        spids = server.pids()
        rss_before = rss_kib(spids)
        for i, conn in enumerate(self.conns):
            conn.send(
                {
                    "idle": idle // WORKERS + (1 if i < idle % WORKERS else 0),
                    "kind": kind,
                    "workload": workload,
                    "host": server.host,
                    "port": server.port,
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
        s0 = (
            cpu_seconds(spids),
            cpu_seconds(self.pids()),
            machine_busy_seconds(),
            time.monotonic(),
        )
        rss = rss_kib(spids)
        results: list[dict[str, Any] | None] = [None] * WORKERS
        limit = t_end + (40.0 if kind != "persistent" else 20.0)
        sampled_end = None
        while any(r is None for r in results) and time.monotonic() < limit:
            if kind != "storm" and sampled_end is None and time.monotonic() >= t_end:
                sampled_end = (
                    cpu_seconds(spids),
                    cpu_seconds(self.pids()),
                    machine_busy_seconds(),
                    time.monotonic(),
                )
            rss = max(rss, rss_kib(spids))
            for i, conn in enumerate(self.conns):
                if results[i] is None and conn.poll(0):
                    tag, value = conn.recv()
                    if tag == "result":
                        results[i] = value
            wait = 0.2 if sampled_end is not None or kind == "storm" else t_end - time.monotonic()
            time.sleep(min(0.2, max(0.0, wait)))
        s1 = sampled_end or (
            cpu_seconds(spids),
            cpu_seconds(self.pids()),
            machine_busy_seconds(),
            time.monotonic(),
        )
        row = Row(workload, server.name, rss_kib=rss)
        if kind == "idle":
            each = (rss_idle - rss_before) / held if held else math.nan
            row.note = f"{held} of {idle} idle sessions held, {fmt(each)} KiB RSS each"
        lat: list[float] = []
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
            last_done = max(last_done, r["last_done"])
        lat.sort()
        row.latencies = lat
        wall = s1[3] - s0[3]
        if kind == "storm":
            row.seconds = max(1e-9, (last_done or s1[3]) - t_start)
        else:
            row.seconds = seconds
        row.server_cpu = s1[0] - s0[0]
        row.gen_cpu = (s1[1] - s0[1]) / wall
        row.other_cpu = max(0.0, (s1[2] - s0[2]) - (s1[0] - s0[0]) - (s1[1] - s0[1])) / wall
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
    """Check the server answers, note the negotiated TLS, and create the keys to Get."""
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
        note = r.note
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
        if r.failed:
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


def main() -> int:
    p = argparse.ArgumentParser(description="kmipfast vs PyKMIP side-by-side benchmark")
    p.add_argument("--quick", action="store_true", help="2 s phases, storm of 200")
    p.add_argument("--seconds", type=float, help="measured seconds per phase (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per phase (default 1)")
    p.add_argument("--storm", type=int, help="sessions in the boot storm (default 2000)")
    p.add_argument("--storm-deadline", type=float, default=30.0)
    p.add_argument("--keys", type=int, default=64, help="keys created per server for Get")
    p.add_argument(
        "--servers",
        default="reference,kmipfast,canned",
        help="comma-separated subset of reference,kmipfast,kmipfast-rustls,kmipfast-openssl,"
        "kmipfast-w2,canned (kmipfast = TLS engine auto; -w2: serve --workers 2)",
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
    ]

    with contextlib.suppress(ValueError, OSError):
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    gen = LoadGen()
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
            "canned": lambda: start_canned(tmp, server_creds, client_creds),
        }
        try:
            for name in args.servers.split(","):
                print(f"== {name}: starting", flush=True)
                server = starters[name]()
                try:
                    prepare(server, args.keys, args.tls13)
                    tls[name] = f"{server.tls}, pid {server.proc.pid}"
                    for label, kind, workload, sessions in phases:
                        if name == "canned" and label not in CANNED_PHASES:
                            continue
                        if name == "reference" and kind == "idle":
                            # It breaks down between 64 and 128 sessions (see the storm).
                            continue
                        if kind == "storm":
                            sessions, label = args.storm, f"storm-{args.storm}"
                            row = gen.run(
                                server,
                                workload,
                                kind,
                                sessions,
                                0.3,
                                args.storm_deadline,
                                args.tls13,
                            )
                            done = f"all done in {row.seconds:.2f} s"
                            if row.failed or row.ok < args.storm:
                                done = (
                                    f"{row.ok} of {args.storm} served, last answer at "
                                    f"{row.seconds:.1f} s"
                                )
                            row.note = done
                            row.workload = label
                        else:
                            row = gen.run(
                                server,
                                workload,
                                kind,
                                sessions,
                                args.warmup,
                                args.seconds,
                                args.tls13,
                                idle=int(label.split("-")[1]) if kind == "idle" else 0,
                            )
                            row.workload = label
                        rows.append(row)
                        print(
                            f"   {label:10s} {row.ok:8d} ok {row.failed:6d} failed "
                            f"{row.rate:10,.0f} ops/s  p99 {1000 * row.pct(0.99):8.2f} ms",
                            flush=True,
                        )
                        if server.proc.poll() is not None:
                            print(
                                f"   {name} exited ({server.proc.returncode}); see {server.log}",
                                flush=True,
                            )
                            break
                finally:
                    stop(server)
        finally:
            gen.close()
        print_table(rows, args, tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
