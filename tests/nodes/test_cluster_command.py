"""``kmipfast cluster up`` (issue "a command that starts PostgreSQL and two nodes
locally"): a key created through node 1 is served by node 2; Ctrl-C stops every
process it started and exits 0; a second run on the same data dir finds the key."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmipfast.pgserver import free_port, pg_available
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import value
from tests.server.harness import cli_command, server_available
from tests.server.kmipclient import connect, create_aes_payload, key_material, uid_payload

pytestmark = pytest.mark.server

UP_DEADLINE = 60.0
STOP_DEADLINE = 40.0
POLL = 0.05
NODE_LINE = re.compile(r"node (\d+): (\S+):(\d+), admin (\S+), pid (\d+),")
PG_LINE = re.compile(r"postgresql: (\S+), pid (\d+),")
BUNDLE_LINE = re.compile(r"client bundle \(tenant default\): cert (\S+), key (\S+), CA (\S+)$")


@dataclass
class Up:
    """A running ``cluster up`` and what it printed."""

    proc: subprocess.Popen[str]
    lines: list[str]
    nodes: list[tuple[str, int, int]]  # host, port, pid
    pg_pid: int
    bundle: tuple[str, str, str]  # cert, key, CA


@pytest.fixture
def data_dir() -> Iterator[Path]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    if not pg_available():
        pytest.skip("PostgreSQL is not installed (make sysdeps installs it)")
    # Not under pytest's tmp_path: as root, PostgreSQL runs as `postgres`, which must
    # reach DIR/postgresql, and pytest's base directory is closed to other users.
    path = Path(tempfile.mkdtemp(prefix="kmipfast-cluster-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def two_free_ports() -> int:
    """A port p with p and p+1 free on loopback."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise AssertionError("no two consecutive free ports")


def pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Keeps the pipe drained while the command runs (its lines go to `lines`)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def cluster_up(data_dir: Path, *flags: str) -> Up:
    cmd = [*cli_command(), "--data-dir", str(data_dir), "cluster", "up", "--nodes", "2", *flags]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    q: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=pump, args=(proc, q), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + UP_DEADLINE
    while not any(line.startswith("Ctrl-C stops") for line in seen):
        try:
            line = q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"cluster not up within {UP_DEADLINE:.0f} s: {seen}") from None
        if line is None:
            proc.wait()
            raise AssertionError(f"cluster up exited {proc.returncode}: {seen}")
        seen.append(line)
    text = "\n".join(seen)
    nodes = [(m[2], int(m[3]), int(m[5])) for m in NODE_LINE.finditer(text)]
    pg = PG_LINE.search(text)
    bundle = next(m for line in seen if (m := BUNDLE_LINE.match(line)))
    assert len(nodes) == 2 and pg is not None, text
    return Up(proc, seen, nodes, int(pg[2]), (bundle[1], bundle[2], bundle[3]))


def interrupt(up: Up, data_dir: Path) -> None:
    """SIGINT; exit 0 and no process of the cluster left."""
    up.proc.send_signal(signal.SIGINT)
    try:
        code = up.proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        up.proc.kill()
        raise AssertionError(f"cluster up did not stop within {STOP_DEADLINE:.0f} s") from None
    assert code == 0
    pids = [pid for _h, _p, pid in up.nodes] + [up.pg_pid]
    deadline = time.monotonic() + 10.0
    while (left := [pid for pid in pids if alive(pid)] + processes_on(data_dir)) and (
        time.monotonic() < deadline
    ):
        time.sleep(POLL)
    assert not left, f"still running: {left}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_on(data_dir: Path) -> list[int]:
    """Pids whose command line names the data dir (nodes, the postmaster)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(data_dir).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_cluster_up_serves_one_store_stops_on_sigint_and_keeps_data(data_dir: Path) -> None:
    port, admin, pg_port = two_free_ports(), two_free_ports(), free_port()
    flags = ("--port", str(port), "--admin-port", str(admin))
    up = cluster_up(data_dir, *flags, "--pg-port", str(pg_port))
    try:
        assert [p for _h, p, _pid in up.nodes] == [port, port + 1]
        with connect(up.nodes[0][0], up.nodes[0][1], *up.bundle) as conn:
            uid = str(value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier))
        with connect(up.nodes[1][0], up.nodes[1][1], *up.bundle) as conn:
            material = key_material(conn.ok(Operation.Get, uid_payload(uid)))
        assert material is not None and len(material) == 32
        pin = (data_dir / "hsm" / "pin").read_text().strip()
        assert pin not in "\n".join(up.lines)
    finally:
        if up.proc.poll() is None:
            interrupt(up, data_dir)

    # Second run: no --pg-port, the data dir's store URL names it; same database.
    again = cluster_up(data_dir, *flags)
    try:
        assert f":{pg_port}/" in next(line for line in again.lines if line.startswith("postgresql"))
        with connect(again.nodes[1][0], again.nodes[1][1], *again.bundle) as conn:
            got = key_material(conn.ok(Operation.Get, uid_payload(uid)))
        assert got == material
    finally:
        if again.proc.poll() is None:
            interrupt(again, data_dir)
