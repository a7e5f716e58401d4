"""kmipfast cluster up: PostgreSQL and several nodes on this machine, in one command.

Theory of operation.  The data dir holds everything: ``postgresql/`` is a PostgreSQL
server of our own (:mod:`kmipfast.pgserver`; initdb'd on the first run, reused after),
started on a loopback port with database ``kmipfast`` owned by role ``kmipfast``; the
rest is an ordinary kmipfast data dir (``init --if-new --store`` on that database), so
every node is a plain ``kmipfast serve`` differing only in its ports.  Node output goes
to ``logs/node-N.log``.  As root, PostgreSQL runs as ``postgres``: the data dir then
gains search permission (only) for that user's group.  The PostgreSQL port is kept in
``kmipfast.toml`` (the store URL): a second run finds the same database and keys.

The command stays in the foreground.  SIGINT (Ctrl-C) or SIGTERM stops the nodes
(SIGTERM: each drains its sessions), then PostgreSQL (fast shutdown).  A node that dies
is reported in one line and the others keep serving; the command then exits 1 when it is
stopped, or at once when no node is left.  Every child runs in a session of its own, so a
terminal's Ctrl-C reaches only this process, which stops them in that order; each child
also gets a signal from the kernel if this process is killed outright (``setpriv
--pdeathsig``), so none outlives it.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from kmipfast.cli.common import Add, CliError
from kmipfast.config import data_dir_from, load_config
from kmipfast.pgserver import (
    POLL_INTERVAL,
    ROLE,
    RUN_AS,
    START_DEADLINE,
    STOP_DEADLINE,
    PgCluster,
    PgError,
    free_port,
    pg_available,
    port_free,
)

DATABASE = "kmipfast"
DEFAULT_PG_PORT = 5432
LISTENING = "kmipfast listening on "
ADMIN_LISTENING = "kmipfast admin listening on "


@dataclass
class Node:
    number: int
    listen: str
    admin_listen: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    log_offset: int  # where this run's output starts in the (appended) log
    stopping: bool = False


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def cmd_cluster_up(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args.data_dir)
    if not pg_available():
        raise CliError("PostgreSQL is not installed (make sysdeps, or apt-get install postgresql)")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pg_port = _pg_port(data_dir, args.pg_port)
    pg = PgCluster(data_dir / "postgresql")
    if not pg.writable() and os.geteuid() == 0:
        _open_to_server_user(data_dir)
    if not pg.writable():
        who = f"user {RUN_AS}" if os.geteuid() == 0 else "this user"
        raise CliError(
            f"PostgreSQL runs as {who}, which cannot write {pg.directory}: "
            "give it search permission on every parent directory, or choose another --data-dir"
        )

    nodes: list[Node] = []
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_postgres(pg, pg_port)
        url = pg.url(DATABASE)
        _init_data_dir(data_dir, url)
        for i in range(args.nodes):
            nodes.append(_start_node(data_dir, i + 1, args))
        for node in nodes:
            _wait_listening(node)
        _print_summary(data_dir, nodes, pg, url)
        status = _watch(nodes)
    except _Stop:
        status = 0
    finally:
        # A second Ctrl-C must not cut the shutdown short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        status_after = _stop_all(nodes, pg)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("cluster stopped", flush=True)
    return status or status_after


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


# -- PostgreSQL -------------------------------------------------------------------------
def _pg_port(data_dir: Path, asked: int | None) -> int:
    """The port the data dir's store URL names when it is this cluster's (so a second run
    finds its database), else ``--pg-port``, else 5432 when free, else any free port.
    A data dir already on another store is refused."""
    if (data_dir / "kmipfast.toml").exists():
        url = load_config(data_dir).store.url
        prefix, suffix = f"postgresql://{ROLE}@127.0.0.1:", f"/{DATABASE}"
        port = url[len(prefix) : -len(suffix)] if url.startswith(prefix) else ""
        if not (url.endswith(suffix) and port.isdigit()):
            # The URL itself is not shown: it may hold a password.
            raise CliError(
                f"{data_dir / 'kmipfast.toml'} already names another store than this "
                "cluster's: choose another --data-dir"
            )
        if asked not in (None, int(port)):
            raise CliError(f"the cluster in {data_dir} uses PostgreSQL port {port}: drop --pg-port")
        return int(port)
    if asked is not None:
        return int(asked)
    return DEFAULT_PG_PORT if port_free("127.0.0.1", DEFAULT_PG_PORT) else free_port()


def _open_to_server_user(data_dir: Path) -> None:
    """As root, PostgreSQL runs as ``postgres``, which must reach ``DIR/postgresql``:
    the data dir (0700) gains search permission for that user's group only."""
    gid = pwd.getpwnam(RUN_AS).pw_gid
    os.chown(data_dir, -1, gid)
    os.chmod(data_dir, data_dir.stat().st_mode & 0o7777 | 0o010)


def _start_postgres(pg: PgCluster, port: int) -> None:
    try:
        pg.start(port)
        if not pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
            pg.create_database(DATABASE)
    except PgError as e:
        raise CliError(f"PostgreSQL in {pg.directory}: {_reason(str(e))}") from None


def _reason(text: str) -> str:
    """One line of a PgError (which may carry a log): its FATAL line if it has one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln]
    return (fatal or lines or ["failed"])[-1]


def _init_data_dir(data_dir: Path, url: str) -> None:
    """What ``kmipfast init --if-new --store URL`` does, quiet when nothing is new."""
    from kmipfast.cli.setup import cmd_init

    cmd_init(
        argparse.Namespace(
            data_dir=str(data_dir), store=url, if_new=True, software_root=False, san=None
        )
    )


# -- nodes ------------------------------------------------------------------------------
def _start_node(data_dir: Path, number: int, args: argparse.Namespace) -> Node:
    i = number - 1
    listen = f"{_host(args.listen_host)}:{args.port + i}"
    admin = f"{_host(args.listen_host)}:{args.admin_port + i}"
    log_path = data_dir / "logs" / f"node-{number}.log"
    log_path.parent.mkdir(exist_ok=True, mode=0o700)
    offset = log_path.stat().st_size if log_path.exists() else 0
    command = ["setpriv", "--pdeathsig", "TERM", "--", sys.executable, "-m", "kmipfast.cli",
               "--data-dir", str(data_dir), "serve", "--listen", listen,
               "--admin-listen", admin]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    return Node(number, listen, admin, log_path, proc, offset)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _output(node: Node) -> str:
    with open(node.log_path, "rb") as f:
        f.seek(node.log_offset)
        return f.read().decode(errors="replace")


def _wait_listening(node: Node) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while LISTENING not in _output(node):
        if node.proc.poll() is not None:
            last = (_output(node).strip().splitlines() or ["no output"])[-1]
            raise CliError(
                f"node {node.number} exited {node.proc.returncode} before listening on "
                f"{node.listen}: {last} (log: {node.log_path})"
            )
        if time.monotonic() > deadline:
            raise CliError(
                f"node {node.number} not listening on {node.listen} within "
                f"{START_DEADLINE:.0f} s (log: {node.log_path})"
            )
        time.sleep(POLL_INTERVAL)


def _print_summary(data_dir: Path, nodes: list[Node], pg: PgCluster, url: str) -> None:
    from kmipfast.cli.setup import BUNDLE_CLIENT, bundle_dir, write_pykmip_conf
    from kmipfast.config import parse_listen

    for node in nodes:
        admin = (
            f"admin http://{node.admin_listen}"
            if ADMIN_LISTENING in _output(node)
            else "admin not started"
        )
        print(f"node {node.number}: {node.listen}, {admin}, pid {node.proc.pid}, "
              f"log {node.log_path}")  # fmt: skip
    assert pg.proc is not None
    print(f"postgresql: {url}, pid {pg.proc.pid}, data {pg.data}")
    config = load_config(data_dir)
    out = bundle_dir(config)
    crt, key, ca = out / f"{BUNDLE_CLIENT}.crt", out / f"{BUNDLE_CLIENT}.key", out / "ca.crt"
    if crt.exists():
        print(f"client bundle (tenant default): cert {crt}, key {key}, CA {ca}")
        host, port = parse_listen(nodes[0].listen)
        conf = write_pykmip_conf(out, "127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
        print(f"PyKMIP client config (node 1): {conf}")
    print(f"server CA: {config.ca_cert_path}; more clients: kmipfast --data-dir {data_dir} "
          "client issue NAME --tenant default --out DIR")  # fmt: skip
    print("Ctrl-C stops the nodes, then PostgreSQL", flush=True)


def _watch(nodes: list[Node]) -> int:
    """Until a signal: report each node that dies; 1 once none is left."""
    alive = list(nodes)
    died = 0
    while alive:
        time.sleep(POLL_INTERVAL * 4)
        for node in list(alive):
            code = node.proc.poll()
            if code is not None:
                alive.remove(node)
                died += 1
                left = f"{len(alive)} left" if alive else "none left"
                print(f"node {node.number} (pid {node.proc.pid}) exited {code}; {left} "
                      f"(log: {node.log_path})", file=sys.stderr, flush=True)  # fmt: skip
    return 1


def _stop_all(nodes: list[Node], pg: PgCluster) -> int:
    """SIGTERM every node (each drains its sessions), wait, then stop PostgreSQL.
    Returns 1 if a node had died, failed to stop in time or exited non-zero."""
    status = 0
    for node in nodes:
        if node.proc.poll() is None:
            node.stopping = True
            node.proc.send_signal(signal.SIGTERM)
        else:
            status = 1
    deadline = time.monotonic() + STOP_DEADLINE
    for node in nodes:
        if not node.stopping:
            continue
        try:
            code = node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.proc.kill()
            code = node.proc.wait()
            print(f"node {node.number} did not stop within {STOP_DEADLINE:.0f} s: killed",
                  file=sys.stderr, flush=True)  # fmt: skip
        if code != 0:
            status = 1
    pg.stop()
    return status


def register(sub: Any, add: Add) -> None:
    cluster = sub.add_parser("cluster", help="a local cluster on PostgreSQL").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(
        cluster,
        "up",
        cmd_cluster_up,
        "start PostgreSQL (in DATA_DIR/postgresql) and N nodes here, until Ctrl-C",
    )
    sp.add_argument("--nodes", type=_positive, default=2, help="nodes to start (default 2)")
    sp.add_argument("--listen-host", default="127.0.0.1",
                    help="address the nodes listen on (default 127.0.0.1)")  # fmt: skip
    sp.add_argument("--port", type=int, default=5696,
                    help="KMIP port of node 1; node N gets PORT+N-1 (default 5696)")  # fmt: skip
    sp.add_argument("--admin-port", type=int, default=9696,
                    help="admin port of node 1; node N gets ADMIN_PORT+N-1 "
                         "(default 9696)")  # fmt: skip
    sp.add_argument("--pg-port", type=int, default=None,
                    help="PostgreSQL port on 127.0.0.1 (default: the one the data dir "
                         "already uses, else 5432 when free, else any free port)")  # fmt: skip


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n
