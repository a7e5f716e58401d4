"""kmipfast status: readiness and the headline numbers of the running server.

Asks the server's admin listener (``server.admin_listen``, or ``--admin HOST:PORT``)
for ``/readyz`` and ``/metrics`` and prints them for a terminal: what ``/readyz``
says, then a few totals read from the same metric names a dashboard uses.  Exit
status 0 when the server is ready, 1 when it is not; a server that does not answer is
a one-line error.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

from kmipfast.admin import admin_address
from kmipfast.cli.common import Add, CliError, _config
from kmipfast.config import parse_listen

TIMEOUT = 15.0  # seconds: a readiness check may wait on a slow HSM

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _url(args: argparse.Namespace) -> str:
    listen = args.admin or admin_address(_config(args).server.admin_listen)
    if listen is None:
        raise CliError("the admin listener is off (server.admin_listen); pass --admin HOST:PORT")
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(
            f"no kmipfast server answers at {url} ({reason}); is `kmipfast serve` running, "
            "and is its admin listener at this address (server.admin_listen, --admin)?"
        ) from None


def _samples(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


def _matches(labels: dict[str, str], match: dict[str, str]) -> bool:
    return all(labels.get(k) == w for k, w in match.items())


def _total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if _matches(labels, match))


def _by(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, v in samples.get(name, []):
        if _matches(labels, match):
            out[labels.get(label, "")] += v
    return out


def _quantile(samples: Samples, name: str, q: float, **match: str) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of a histogram."""
    buckets = sorted(
        (float(labels["le"]), v)
        for labels, v in samples.get(f"{name}_bucket", [])
        if _matches(labels, match)
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    for le, count in buckets:
        if count >= q * buckets[-1][1]:
            return le
    return None


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "> 10 s"
    return f"{seconds * 1000:.3g} ms"


def _mean(samples: Samples, name: str, **match: str) -> float | None:
    n = _total(samples, f"{name}_count", **match)
    return _total(samples, f"{name}_sum", **match) / n if n else None


def _listing(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {int(v)}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def render(url: str, ready: dict[str, Any], s: Samples) -> list[str]:
    lines = [f"kmipfast at {url}: {ready.get('status', '?')}"]
    for check, result in sorted(ready.get("checks", {}).items()):
        lines.append(f"  {check:<13} {result}")
    sessions = _by(s, "kmipfast_sessions_open", "engine")
    lines.append(f"sessions open   {int(sum(sessions.values()))} ({_listing(sessions)})")
    answered = _by(s, "kmipfast_requests_total", "result")
    ok = answered.pop("Success", 0.0)
    lines.append(
        f"requests        {int(ok + sum(answered.values()))} answered, "
        f"{int(sum(answered.values()))} failed" + (f" ({_listing(answered)})" if answered else "")
    )
    for op, n in sorted(_by(s, "kmipfast_requests_total", "operation").items()):
        name = "kmipfast_request_duration_seconds"
        lines.append(
            f"  {op:<13} {int(n)}, mean {_ms(_mean(s, name, operation=op))}, "
            f"p99 <= {_ms(_quantile(s, name, 0.99, operation=op))}"
        )
    handshakes = _by(s, "kmipfast_tls_handshakes_total", "result")
    refusals = _by(s, "kmipfast_refusals_total", "reason")
    lines.append(
        f"handshakes      {int(handshakes.get('admitted', 0))} admitted, "
        f"{int(sum(refusals.values()))} refused" + (f" ({_listing(refusals)})" if refusals else "")
    )
    hits, misses = _total(s, "kmipfast_cache_hits_total"), _total(s, "kmipfast_cache_misses_total")
    share = f" ({100 * hits / (hits + misses):.1f} % hits)" if hits + misses else ""
    lines.append(f"cache           {int(hits)} hits, {int(misses)} misses{share}")
    hsm = "kmipfast_hsm_call_duration_seconds"
    calls = _by(s, "kmipfast_hsm_calls_total", "result")
    good = calls.pop("ok", 0.0)
    lines.append(
        f"HSM calls       {int(good + sum(calls.values()))}, {int(sum(calls.values()))} failed, "
        f"mean {_ms(_mean(s, hsm))}; master keys held "
        f"{int(_total(s, 'kmipfast_master_keys_held'))}"
    )
    commit = "kmipfast_store_commit_duration_seconds"
    group = _mean(s, "kmipfast_store_commit_group_size")
    lines.append(
        f"store commits   {int(_total(s, commit + '_count'))}, mean {_ms(_mean(s, commit))}"
        + (f", {group:.1f} writes each" if group is not None else "")
    )
    keys: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, v in s.get("kmipfast_keys", []):
        keys[labels.get("tenant", "?")][labels.get("state", "?")] = v
    for tenant, states in sorted(keys.items()):
        lines.append(f"keys {tenant:<10} {_listing(states)}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    url = _url(args)
    code, body = _get(f"{url}/readyz")
    try:
        ready = json.loads(body)
    except ValueError:
        raise CliError(f"{url}/readyz answered {code} without a readiness report") from None
    code_m, text = _get(f"{url}/metrics")
    if code_m != 200:
        raise CliError(f"{url}/metrics answered {code_m}")
    for line in render(url, ready, _samples(text.decode())):
        print(line)
    return 0 if code == 200 else 1


def register(sub: Any, add: Add) -> None:
    sp = add(sub, "status", cmd_status, "readiness and headline numbers of the running server")
    sp.add_argument(
        "--admin", metavar="HOST:PORT", help="admin listener (default from server.admin_listen)"
    )
