"""``kmipfast serve --workers N``: N server processes sharing one port and one store.

The supervisor starts N ``kmipfast serve`` children that each bind the same address
with SO_REUSEPORT, so the kernel spreads new connections over them.  Nothing is shared
in memory: each worker has its own caches and unseals its own master keys, and every
guarantee comes from the store.  A Destroy answered by one worker is seen by the next
request on any other because each cache hit first checks the store's foreign-change
epoch (``SqliteStore.foreign_epoch``); allow-list and root-key changes reach the
workers like any other node (``data_version``, the nodes table that ``root shred``
waits on).

The supervisor prints ``kmipfast listening on HOST:PORT`` once every worker listens,
forwards SIGTERM/SIGINT (each worker drains its sessions), and restarts a worker that
dies, unless workers keep dying (then it stops them all and exits non-zero).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

READY_PREFIX = "kmipfast listening on "
RESTARTS_ALLOWED = 5  # within RESTART_WINDOW seconds, then give up
RESTART_WINDOW = 60.0
STOP_GRACE = 20.0  # the workers' own drain is 10 s


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket: fixes the port (when 0 was asked for)
    until the workers have bound it too; it never accepts a connection itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    def __init__(self, command: Sequence[str], host: str, port: int, workers: int) -> None:
        self.command = list(command)  # `kmipfast ... serve` with options, minus listen
        self.host = host
        self.port = port
        self.count = workers
        self.workers: list[_Worker] = []
        self.stopping = threading.Event()
        self.restarts: deque[float] = deque()

    def _spawn(self, index: int) -> _Worker:
        cmd = [
            *self.command,
            "--listen",
            f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}",
            "--workers",
            "1",
            "--reuse-port",
        ]
        env = {**os.environ, "KMIPFAST_WORKER_INDEX": str(index), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        worker = _Worker(index, proc)
        threading.Thread(target=self._pump, args=(worker,), daemon=True).start()
        return worker

    def _pump(self, worker: _Worker) -> None:
        """Forwards a worker's stdout; its ready line is replaced by one for all."""
        assert worker.proc.stdout is not None
        for line in worker.proc.stdout:
            if line.startswith(READY_PREFIX):
                worker.ready.set()
                continue
            if worker.index == 0 or not line.startswith(("client bundle", "PyKMIP", "  python")):
                sys.stdout.write(f"[worker {worker.index}] {line}" if worker.index else line)
                sys.stdout.flush()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        reserved = _reserve_port(self.host, self.port)
        self.port = int(reserved.getsockname()[1])
        try:
            self.workers = [self._spawn(i) for i in range(self.count)]
            if not self._wait_ready(60.0):
                self._stop_all()
                print("kmipfast: error: workers did not start; see the log", file=sys.stderr)
                return 1
        finally:
            reserved.close()
        print(f"{READY_PREFIX}{self.host}:{self.port}", flush=True)
        pids = ", ".join(str(w.proc.pid) for w in self.workers)
        print(f"{self.count} workers (pids {pids})", flush=True)
        failed = self._watch()
        self._stop_all()
        print("kmipfast stopped", flush=True)
        return 1 if failed else 0

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if all(w.ready.is_set() for w in self.workers):
                return True
            if any(w.proc.poll() is not None for w in self.workers):
                return False
            time.sleep(0.05)
        return False

    def _watch(self) -> bool:
        """Until asked to stop: restart workers that die.  True if it gave up."""
        while not self.stopping.wait(0.2):
            for i, w in enumerate(self.workers):
                code = w.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
                    self.restarts.popleft()
                if len(self.restarts) >= RESTARTS_ALLOWED:
                    print(
                        f"kmipfast: error: workers keep exiting (worker {i}: code {code}); "
                        "stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return True
                self.restarts.append(now)
                print(f"worker {i} exited with code {code}; restarting it", file=sys.stderr)
                self.workers[i] = self._spawn(i)
        return False

    def _stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


def supervise(command: Sequence[str], host: str, port: int, workers: int) -> int:
    return Supervisor(command, host, port, workers).run()
