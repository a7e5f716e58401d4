"""The admin HTTP listener: ``/metrics``, ``/healthz``, ``/readyz`` (DESIGN §7).

Theory of operation: a small HTTP/1.1 server on the event loop that serves KMIP, on
its own address (``server.admin_listen``, default ``127.0.0.1:9696``), one request per
connection (``Connection: close``), GET and HEAD only, the request head capped at
:data:`MAX_HEAD` bytes and :data:`HEAD_TIMEOUT` seconds so a slow or oversized client
cannot hold it.  Nothing on it changes state.

- ``/healthz``: 200 while the process runs its event loop.
- ``/readyz``: 200 when the store takes a durable write, the HSM answers and every
  tenant's master key unseals in it; else 503.  The JSON body names each check and what
  is down.  A result is reused for :data:`READY_CACHE` seconds and concurrent callers
  share one check, so scrapes do not hammer the HSM; HSM calls run in the HSM executor.
- ``/metrics``: Prometheus text from :mod:`kmipfast.metrics`; keys by tenant and state
  are counted in the store just before, with the same reuse window.

The store check writes a node row of its own (``<node> readyz``, ``seen`` 0, holding
nothing), which ``root shred`` and ``root status`` ignore like a stopped server's.
Unsealed master keys of the check are wiped at once; nothing here returns key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kmipfast import metrics
from kmipfast.keys.hierarchy import master_aad
from kmipfast.store.base import NodeRecord

if TYPE_CHECKING:
    from kmipfast.app import Runtime
    from kmipfast.server import KmipServer

log = logging.getLogger("kmipfast.admin")

MAX_HEAD = 8192  # bytes of request line and headers
HEAD_TIMEOUT = 10.0
READY_CACHE = 1.0  # seconds a readiness result (and the key counts) are reused
CHECK_TIMEOUT = 5.0  # seconds each readiness check may take
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip


def admin_address(value: str) -> str | None:
    """The configured admin listen address, or None when it is off."""
    value = value.strip()
    return None if value in ("", "off") else value


@dataclass(frozen=True)
class Readiness:
    """The outcome of one readiness check: check name -> "ok" or what is wrong."""

    checks: dict[str, str]
    at: float

    @property
    def down(self) -> list[str]:
        return [name for name, result in self.checks.items() if result != "ok"]

    @property
    def ready(self) -> bool:
        return not self.down

    def body(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not ready",
            "checks": self.checks,
            "down": self.down,
        }


class _Shared:
    """A value computed at most once per ``ttl`` seconds; concurrent askers share it."""

    def __init__(self, compute: Callable[[], Awaitable[Any]], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: Any = None
        self._at = -ttl
        self._running: asyncio.Future[Any] | None = None

    async def get(self) -> Any:
        if time.monotonic() - self._at < self._ttl:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._running)

    async def close(self) -> None:
        """Stops a computation under way (shutdown)."""
        running = self._running
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    async def _refresh(self) -> Any:
        try:
            self._value = await self._compute()
            self._at = time.monotonic()
            return self._value
        finally:
            self._running = None


async def _outcome(check: Awaitable[None]) -> str:
    """ "ok", or what went wrong (within :data:`CHECK_TIMEOUT`)."""
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:.0f} s"
    except Exception as e:
        return str(e) or type(e).__name__
    return "ok"


class AdminServer:
    """The admin listener of one ``serve`` process."""

    def __init__(self, rt: Runtime, kmip: KmipServer | None, node_id: str) -> None:
        self.rt = rt
        self.node_id = node_id
        self.sources = metrics.Sources(
            server=kmip, vault=rt.services.vault, store=rt.store, keys=rt.services.keys
        )
        self.registry = metrics.registry(self.sources)
        self._readiness = _Shared(self._check, READY_CACHE)
        self._counts = _Shared(self._count_keys, READY_CACHE)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.routes: dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (the port when 0 was asked)."""
        self._server = await asyncio.start_server(
            self._serve_one, host, port, limit=MAX_HEAD, reuse_address=True
        )
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._readiness.close()
        await self._counts.close()

    # -- checks ---------------------------------------------------------------------
    async def readiness(self) -> Readiness:
        result: Readiness = await self._readiness.get()
        return result

    async def _check(self) -> Readiness:
        # The HSM checks run one after the other: unsealing re-initializes a PKCS#11
        # library that lost its token, and a ping alongside would only see it mid-way.
        async def hsm_checks() -> list[str]:
            return [
                await _outcome(self._check_master_keys()),
                await _outcome(self._check_hsm()),
            ]

        store, (master_keys, hsm) = await asyncio.gather(
            _outcome(self._check_store()), hsm_checks()
        )
        checks = {"store": store, "hsm": hsm, "master_keys": master_keys}
        ready = Readiness(checks=checks, at=time.time())
        self.sources.checks = {name: result == "ok" for name, result in checks.items()}
        return ready

    async def _check_store(self) -> None:
        """A durable write (a row ``root shred`` ignores: it holds nothing, seen 0)."""
        await self.rt.store.put_node(
            NodeRecord(id=f"{self.node_id} readyz", pid=os.getpid(), host=socket.gethostname(),
                       data_version=0, seen=0, held="")
        )  # fmt: skip

    async def _check_hsm(self) -> None:
        keys = self.rt.services.keys
        await keys.in_executor(keys.root.ping)

    async def _check_master_keys(self) -> None:
        """Every tenant's current master key unseals in the HSM (and is wiped at once)."""
        keys = self.rt.services.keys
        failed = []
        for tenant in await self.rt.store.list_tenants():
            if tenant.sealed_master_key is None:
                continue  # shredded: nothing to unseal, by design
            try:
                key = await keys.in_executor(
                    keys.root.unseal_master_key,
                    tenant.root_label,
                    tenant.sealed_master_key,
                    master_aad(tenant.name, tenant.master_key_version),
                )
            except Exception as e:
                failed.append(f"tenant {tenant.name}: {e}")
                continue
            key.wipe()
        if failed:
            raise RuntimeError("; ".join(failed))

    async def _count_keys(self) -> dict[str, dict[int, int]]:
        store = self.rt.store
        return {t.name: await store.count_objects(t.name) for t in await store.list_tenants()}

    # -- routes ---------------------------------------------------------------------
    async def _healthz(self) -> tuple[int, str, bytes]:
        return 200, TEXT, b"ok\n"

    async def _readyz(self) -> tuple[int, str, bytes]:
        ready = await self.readiness()
        body = json.dumps(ready.body(), sort_keys=True).encode() + b"\n"
        return (200 if ready.ready else 503), JSON, body

    async def _metrics(self) -> tuple[int, str, bytes]:
        try:
            self.sources.keys_by_tenant = await self._counts.get()
        except Exception as e:  # the rest of the metrics are still worth serving
            log.warning("metrics: cannot count keys in the store: %s", e)
        with contextlib.suppress(Exception):  # a failed check is a 0 in kmipfast_ready
            await self.readiness()
        body, content_type = metrics.render(self.registry)
        return 200, content_type, body

    # -- HTTP -----------------------------------------------------------------------
    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            status, content_type, body, head_only = await self._respond(reader)
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\nCache-Control: no-store\r\n\r\n".encode()
                + (b"" if head_only else body)
            )
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("admin request failed")
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return 431, TEXT, b"request head too large\n", False
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("closed before a whole request") from e
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, TEXT, b"bad request line\n", False
        method, target = parts[0], parts[1]
        route = self.routes.get(target.split("?", 1)[0])
        if route is None:
            return 404, TEXT, b"not found: try /metrics, /healthz or /readyz\n", False
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"only GET and HEAD\n", False
        status, content_type, body = await route()
        return status, content_type, body, method == "HEAD"
