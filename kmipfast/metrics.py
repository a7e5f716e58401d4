"""Prometheus metrics: plain numbers on the hot path, metric families at scrape time.

Theory of operation: kmipfast answers ~10,000 Gets a second per core, so the per-request
hook cannot afford prometheus_client's ``Counter.labels(...).inc()`` (a label lookup and
a lock per call).  The numbers live here instead, in plain dicts of ints and fixed
bucket arrays (:class:`Histogram`, one ``bisect`` per observation), each written by the
one thread that owns it: the event loop for requests, sessions, handshakes, refusals and
HSM calls; the store's writer thread for commits.  Readers may see a number one
observation behind, never a torn one (the GIL).  When ``/metrics`` is scraped,
:class:`Collector` turns them, together with what the running parts already count
(open sessions, the vault's cache hits, the store's :class:`StoreStats`) and what the
admin listener fetched from the store just before (keys by tenant and state, the
readiness checks), into Prometheus metric families; :func:`render` returns the text.

Labels are bounded: operations and result reasons are KMIP enumerations, HSM calls are
method names, and refusal reasons are the server's fixed phrases, capped at
:data:`MAX_REASONS` distinct values (then ``other``).

prometheus_client is imported only at scrape time: the store and the CLI import this
module for its hooks and should not pay for it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from kmipfast import __version__
from kmipfast.protocol.enums import Operation, ResultReason, State

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from kmipfast.keys.hierarchy import KeyHierarchy
    from kmipfast.server import KmipServer
    from kmipfast.store.base import Store
    from kmipfast.vault import Vault

T = TypeVar("T")

clock = time.perf_counter

# Seconds; a request served from memory takes tens of µs, an HSM call or an fsync ms.
LATENCY_BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
# Writes per store transaction (group commit); group_commit_max defaults to 256.
GROUP_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
MAX_REASONS = 64


class Histogram:
    """Fixed buckets: ``counts[i]`` observations <= ``bounds[i]``, the last one above
    every bound (Prometheus' ``+Inf``), not cumulative until :meth:`cumulative`."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Buckets as prometheus_client wants them, and the sum."""
        counts, total = list(self.counts), self.total  # one consistent copy
        out, running = [], 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out, total

    @property
    def count(self) -> int:
        return sum(self.counts)


def _le(bound: float) -> str:
    return repr(float(bound))


# -- what the hooks update ------------------------------------------------------------
# (operation, result reason or None for success) -> requests answered
requests: dict[tuple[int, int | None], int] = {}
# operation -> latency histogram
latency: dict[int, Histogram] = {}
# (engine, admitted) -> completed TLS handshakes
handshakes: dict[tuple[str, bool], int] = {}
# reason -> refused connections
refusals: dict[str, int] = {}
# (call, "ok" or the error's class name) -> HSM calls
hsm_calls: dict[tuple[str, str], int] = {}
hsm_latency: dict[str, Histogram] = {}
commit_latency = Histogram(LATENCY_BOUNDS)
commit_size = Histogram(GROUP_BOUNDS)


def request(operation: int, reason: int | None, started: float) -> None:
    """One batch item answered (event loop).  Hot: keep it a few dict and list ops."""
    elapsed = clock() - started
    hist = latency.get(operation)
    if hist is None:
        hist = latency[operation] = Histogram(LATENCY_BOUNDS)
    hist.counts[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
    hist.total += elapsed
    key = (operation, reason)
    requests[key] = requests.get(key, 0) + 1


def handshake(engine: str, admitted: bool) -> None:
    """A TLS handshake completed; the client was admitted or refused (event loop)."""
    key = (engine, admitted)
    handshakes[key] = handshakes.get(key, 0) + 1


def refusal(reason: str) -> None:
    """A connection refused, with the server's reason (event loop)."""
    if reason not in refusals and len(refusals) >= MAX_REASONS:
        reason = "other"
    refusals[reason] = refusals.get(reason, 0) + 1


async def hsm_call(fn: Callable[..., Any], call: Awaitable[T]) -> T:
    """Awaits ``call``, an HSM call ``fn`` running in the executor, timing it from the
    event loop (so one thread writes the numbers; the time includes waiting for a
    thread).  The label is the method's name: a fixed set."""
    name = getattr(fn, "__name__", "call")
    started = clock()
    outcome = "ok"
    try:
        return await call
    except BaseException as e:
        outcome = type(e).__name__
        raise
    finally:
        hist = hsm_latency.get(name)
        if hist is None:
            hist = hsm_latency[name] = Histogram(LATENCY_BOUNDS)
        hist.observe(clock() - started)
        key = (name, outcome)
        hsm_calls[key] = hsm_calls.get(key, 0) + 1


def store_commit(writes: int, started: float) -> None:
    """A store transaction of ``writes`` writes committed (the store's writer thread)."""
    commit_latency.observe(clock() - started)
    commit_size.observe(writes)


def reset() -> None:
    """Forget every number (tests of this module only)."""
    for table in (requests, latency, handshakes, refusals, hsm_calls, hsm_latency):
        table.clear()
    for hist in (commit_latency, commit_size):
        hist.counts = [0] * len(hist.counts)
        hist.total = 0.0


# -- scrape time ----------------------------------------------------------------------
@dataclass
class Sources:
    """The running parts a scrape reads, and what the admin listener fetched for it."""

    server: KmipServer | None = None
    vault: Vault | None = None
    store: Store | None = None
    keys: KeyHierarchy | None = None
    # tenant -> State value -> objects; filled from the store before each scrape
    keys_by_tenant: dict[str, dict[int, int]] = field(default_factory=dict)
    # check name -> ok (the last readiness result)
    checks: dict[str, bool] = field(default_factory=dict)


def _name(enum: Any, value: int | None, none: str) -> str:
    if value is None:
        return none
    try:
        return str(enum(value).name)
    except ValueError:
        return f"0x{value:08X}"


def engine_of(conn: Any) -> str:
    """Which TLS engine serves a connection: the native one or OpenSSL."""
    return "rustls" if conn.tls is not None else "openssl"


class Collector:
    """A prometheus_client collector over this module's numbers and the running parts."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        src = self.sources
        info = GaugeMetricFamily("kmipfast_build_info", "kmipfast version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

        c = CounterMetricFamily(
            "kmipfast_requests", "KMIP batch items answered, by operation and result reason",
            labels=["operation", "result"],
        )  # fmt: skip
        for (op, reason), n in list(requests.items()):
            c.add_metric(
                [_name(Operation, op, "?"), _name(ResultReason, reason, "Success")], float(n)
            )
        yield c
        h = HistogramMetricFamily(
            "kmipfast_request_duration_seconds",
            "time from decoded request to answered batch item, by operation",
            labels=["operation"],
        )
        for op, hist in list(latency.items()):
            buckets, total = hist.cumulative()
            h.add_metric([_name(Operation, op, "?")], buckets, total)
        yield h

        g = GaugeMetricFamily(
            "kmipfast_sessions_open", "admitted KMIP sessions open, by TLS engine",
            labels=["engine"],
        )  # fmt: skip
        open_by_engine = {"rustls": 0, "openssl": 0}
        chosen: dict[str, int] = {}
        if src.server is not None:
            for conn in list(src.server.state.connections):
                open_by_engine[engine_of(conn)] += 1
            chosen = dict(src.server.engine_choices)
        for engine, n in open_by_engine.items():
            g.add_metric([engine], float(n))
        yield g
        c = CounterMetricFamily(
            "kmipfast_tls_handshakes",
            "TLS handshakes completed, by engine and whether the client was admitted",
            labels=["engine", "result"],
        )
        for (engine, admitted), n in list(handshakes.items()):
            c.add_metric([engine, "admitted" if admitted else "refused"], float(n))
        yield c
        c = CounterMetricFamily(
            "kmipfast_tls_engine_choices",
            "connections given to each TLS engine by tls_engine auto (from the ClientHello)",
            labels=["engine"],
        )
        for engine, n in chosen.items():
            c.add_metric([engine], float(n))
        yield c
        c = CounterMetricFamily(
            "kmipfast_refusals", "connections refused, by reason", labels=["reason"]
        )
        for why, n in list(refusals.items()):
            c.add_metric([why], float(n))
        yield c

        c = CounterMetricFamily(
            "kmipfast_hsm_calls", "HSM calls, by call and outcome", labels=["call", "result"]
        )
        for (call, outcome), n in list(hsm_calls.items()):
            c.add_metric([call, outcome], float(n))
        yield c
        h = HistogramMetricFamily(
            "kmipfast_hsm_call_duration_seconds", "HSM call latency (queueing included)",
            labels=["call"],
        )  # fmt: skip
        for call, hist in list(hsm_latency.items()):
            buckets, total = hist.cumulative()
            h.add_metric([call], buckets, total)
        yield h
        if src.keys is not None:
            yield GaugeMetricFamily(
                "kmipfast_master_keys_held", "tenants whose master key this process holds",
                value=float(len(src.keys.held_tenants())),
            )  # fmt: skip

        if src.vault is not None:
            yield CounterMetricFamily(
                "kmipfast_cache_hits", "object lookups served from the cache",
                value=float(src.vault.hits),
            )  # fmt: skip
            yield CounterMetricFamily(
                "kmipfast_cache_misses", "object lookups that read the store",
                value=float(src.vault.misses),
            )  # fmt: skip

        buckets, total = commit_latency.cumulative()
        yield HistogramMetricFamily(
            "kmipfast_store_commit_duration_seconds",
            "store write transactions: BEGIN to durable COMMIT",
            buckets=buckets, sum_value=total,
        )  # fmt: skip
        buckets, total = commit_size.cumulative()
        yield HistogramMetricFamily(
            "kmipfast_store_commit_group_size", "writes per store transaction (group commit)",
            buckets=buckets, sum_value=total,
        )  # fmt: skip
        if src.store is not None:
            stats = src.store.stats
            c = CounterMetricFamily(
                "kmipfast_store_writes", "store write operations, by outcome", labels=["result"]
            )
            c.add_metric(["ok"], float(stats.ops))
            c.add_metric(["failed"], float(stats.failed_ops))
            yield c
            yield CounterMetricFamily(
                "kmipfast_store_scrubs", "checkpoints run to overwrite removed key bytes",
                value=float(stats.scrubs),
            )  # fmt: skip

        g = GaugeMetricFamily(
            "kmipfast_keys", "managed objects, by tenant and state", labels=["tenant", "state"]
        )
        for tenant, states in sorted(src.keys_by_tenant.items()):
            for state, n in sorted(states.items()):
                g.add_metric([tenant, _name(State, state, "?")], float(n))
        yield g
        g = GaugeMetricFamily(
            "kmipfast_ready", "1 when the readiness check passes, by check", labels=["check"]
        )
        for check, ok in src.checks.items():
            g.add_metric([check], 1.0 if ok else 0.0)
        yield g


def registry(sources: Sources) -> Any:
    """A registry with kmipfast's collector and the process' own (CPU, memory, fds)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(sources))  # type: ignore[arg-type]
    ProcessCollector(registry=reg)
    return reg


# The classic text format, which every Prometheus reads (what prometheus_client itself
# answers a scraper that asks for nothing newer); kmipfast's names need no escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(reg: Any) -> tuple[bytes, str]:
    """The exposition text of a registry and its content type."""
    from prometheus_client import generate_latest

    return generate_latest(reg), CONTENT_TYPE
