"""The admin listener of a live server (issue #10, DESIGN §7): ``/metrics`` moves as
requests are served, ``/readyz`` follows the HSM, refusals are counted by reason, and
``kmipfast status`` prints the same readiness and numbers.  Real server, real TLS
client, real SoftHSM2 token; key material is never printed."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kmipfast.protocol.enums import Operation, ResultReason
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import value as ttlv_value
from tests.observability.conftest import Observed, Samples, value
from tests.server.harness import POLL_INTERVAL, ClientBundle, self_signed_client
from tests.server.kmipclient import ConnectionClosed, create_aes_payload, uid_payload

pytestmark = pytest.mark.server

# ReconnectingRoot re-initializes the PKCS#11 library at most every 2 s, and retries
# opening it after 1, 2, 4 ... s: recovery fits in this.
RECOVERY_DEADLINE = 20.0
GET = "kmipfast_request_duration_seconds"


def poll(check: Callable[[], str | None], deadline: float, what: str) -> None:
    """Calls ``check`` until it returns None or ``deadline`` seconds pass; it returns a
    description of what it still waits for."""
    end = time.monotonic() + deadline
    while (state := check()) is not None:
        if time.monotonic() >= end:
            raise AssertionError(f"{what} not within {deadline} s; last: {state}")
        time.sleep(POLL_INTERVAL)


def get_metrics(s: Samples) -> tuple[float, float, float]:
    """Get successes, Get ItemNotFound, Get latency observations."""
    return (
        value(s, "kmipfast_requests_total", operation="Get", result="Success"),
        value(s, "kmipfast_requests_total", operation="Get", result="ItemNotFound"),
        value(s, f"{GET}_count", operation="Get"),
    )


# ---------------------------------------------------------------------------
# /metrics


def test_get_raises_get_counter_and_latency_histogram_issue_10_metrics(
    observed: Observed,
) -> None:
    """A Get raises the Get counter (by result reason) and its histogram's count; a
    Create goes through a store commit; the new key is counted by tenant and state."""
    before = observed.scrape()
    with observed.server.connect() as conn:
        uid = ttlv_value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        conn.ok(Operation.Get, uid_payload(uid))
        conn.ok(Operation.Get, uid_payload(uid))
        conn.call(Operation.Get, uid_payload("no-such-uid")).expect_failure(
            ResultReason.ItemNotFound
        )
        sessions = value(observed.scrape(), "kmipfast_sessions_open")
    after = observed.scrape()

    ok0, missing0, observed0 = get_metrics(before)
    ok1, missing1, observed1 = get_metrics(after)
    assert (ok1 - ok0, missing1 - missing0, observed1 - observed0) == (2, 1, 3)
    buckets = [v for labels, v in after[f"{GET}_bucket"] if labels["operation"] == "Get"]
    assert buckets == sorted(buckets), "histogram buckets are not cumulative"
    assert buckets[-1] == observed1, "+Inf bucket differs from the count"
    assert value(after, f"{GET}_sum", operation="Get") > value(
        before, f"{GET}_sum", operation="Get"
    )
    assert value(after, "kmipfast_requests_total", operation="Create", result="Success") == 1

    commits = "kmipfast_store_commit_duration_seconds_count"
    assert value(after, commits) > value(before, commits), "the Create made no store commit"
    assert value(after, "kmipfast_store_commit_group_size_count") == value(after, commits)

    def key_counted() -> str | None:  # counts are reused for up to a second
        n = value(observed.scrape(), "kmipfast_keys", tenant="default", state="PreActive")
        return None if n == 1 else f"{n} PreActive keys counted"

    poll(key_counted, 5.0, "the new key to be counted by tenant and state")
    lookups = value(after, "kmipfast_cache_hits_total") + value(
        after, "kmipfast_cache_misses_total"
    )
    assert lookups >= 3, "the vault's lookups are not counted"

    assert sessions == 1, f"{sessions} open sessions counted while one was open"
    assert value(after, "kmipfast_sessions_open") == 0
    assert value(after, "kmipfast_tls_handshakes_total", result="admitted") >= 1
    assert value(after, "kmipfast_master_keys_held") == 1
    assert value(after, "kmipfast_ready") == 3, "not every readiness check passed"
    assert value(after, "process_resident_memory_bytes") > 0


def test_refused_clients_are_counted_by_reason_issue_10_metrics(
    observed: Observed, tmp_path: Path
) -> None:
    """An unknown self-signed certificate and a client without a certificate are each
    counted under a reason that says so."""
    server = observed.server
    stranger = self_signed_client(tmp_path, "stranger")
    stranger = ClientBundle(stranger.name, stranger.cert, stranger.key, server.ca_cert)
    before = observed.scrape()
    try:
        with server.connect(stranger) as conn:
            conn.call(Operation.DiscoverVersions)
    except (OSError, ConnectionClosed):
        pass
    else:
        raise AssertionError("an unknown certificate was served")

    def counted() -> str | None:
        refusals = observed.scrape().get("kmipfast_refusals_total", [])
        unknown = [v for labels, v in refusals if "unknown" in labels["reason"].lower()]
        return None if sum(unknown) >= 1 else f"refusals: {refusals}"

    poll(counted, 5.0, "the refusal of an unknown certificate to be counted")

    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS at all
        raw.settimeout(10)
        while raw.recv(4096):
            pass

    def counted_not_tls() -> str | None:
        now = observed.scrape()
        grew = value(now, "kmipfast_refusals_total") - value(before, "kmipfast_refusals_total")
        return None if grew >= 2 else f"{grew} refusals counted: {now['kmipfast_refusals_total']}"

    poll(counted_not_tls, 5.0, "the refusal of a client that does not speak TLS")


# ---------------------------------------------------------------------------
# /healthz and /readyz


def test_readyz_turns_503_naming_the_hsm_while_its_token_is_away_issue_10_health(
    observed: Observed,
) -> None:
    """With the SoftHSM2 token directory moved away /readyz answers 503 and its JSON
    body names what is down (the master keys no longer unseal); /healthz stays 200;
    with the directory back /readyz is 200 again without a restart."""
    status, ctype, body = observed.get("/readyz")
    assert (status, ctype) == (200, "application/json"), body
    assert json.loads(body) == {
        "status": "ready",
        "checks": {"store": "ok", "hsm": "ok", "master_keys": "ok"},
        "down": [],
    }
    tokens = observed.server.data_dir / "hsm" / "tokens"
    away = tokens.with_name("tokens-away")
    tokens.rename(away)
    try:
        seen: list[tuple[int, bytes]] = []

        def down() -> str | None:
            seen.append(observed.get("/readyz")[::2])
            return None if seen[-1][0] == 503 else f"{seen[-1]}"

        poll(down, RECOVERY_DEADLINE, "/readyz to answer 503")
        report = json.loads(seen[-1][1])
        assert report["status"] == "not ready"
        assert "master_keys" in report["down"], report
        assert "default" in report["checks"]["master_keys"], report
        assert "store" not in report["down"], report
        assert observed.get("/healthz")[0] == 200
        status = observed.server.run_cli("status", check=False)
        assert status.returncode == 1, status.stdout + status.stderr
        assert status.stdout.startswith(f"kmipfast at {observed.url}: not ready"), status.stdout
        ready = value(observed.scrape(), "kmipfast_ready", check="master_keys")
        assert ready == 0, "kmipfast_ready does not show the failed check"
    finally:
        away.rename(tokens)

    def up() -> str | None:
        status, _ctype, body = observed.get("/readyz")
        return None if status == 200 else f"{status} {body!r}"

    poll(up, RECOVERY_DEADLINE, "/readyz to answer 200 with the token back")
    hsm_errors = [
        (labels, v)
        for labels, v in observed.scrape()["kmipfast_hsm_calls_total"]
        if labels["result"] != "ok"
    ]
    assert hsm_errors, "the failed HSM calls are not counted"


def test_admin_listener_answers_only_what_it_serves_issue_10_health(observed: Observed) -> None:
    """GET and HEAD of the three paths; anything else is a plain HTTP error."""
    assert observed.get("/healthz") == (200, "text/plain; charset=utf-8", b"ok\n")
    status, ctype, body = observed.get("/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert ctype.startswith("text/plain; version=0.0.4")
    assert observed.get("/nothing")[0] == 404
    assert observed.get("/metrics", method="POST")[0] == 405
    host, port = observed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.1 431 ")


# ---------------------------------------------------------------------------
# kmipfast status


def test_status_prints_readiness_and_headline_numbers_issue_10_status(
    observed: Observed,
) -> None:
    """``kmipfast status`` reads the admin listener named by the configuration; with the
    server stopped it is a one-line error and exit status 1."""
    server = observed.server
    with server.connect() as conn:
        uid = ttlv_value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        conn.ok(Operation.Get, uid_payload(uid))
    out = server.run_cli("status").stdout
    lines = out.splitlines()
    assert lines[0] == f"kmipfast at {observed.url}: ready", out
    for check in ("store", "hsm", "master_keys"):
        assert any(line.split() == [check, "ok"] for line in lines), out
    assert any(line.split()[:2] == ["Get", "1,"] for line in lines), out
    assert any(line.startswith("requests ") and " 2 answered, 0 failed" in line for line in lines)
    assert any(line.split()[:3] == ["keys", "default", "PreActive"] for line in lines), out

    server.stop()
    gone = server.run_cli("status", check=False)
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines() == [gone.stderr.strip()], gone.stderr
    assert gone.stderr.startswith("kmipfast: error: no kmipfast server answers at "), gone.stderr
    server.start()  # the fixture stops it again


def test_status_with_admin_listener_off_says_how_to_point_it_issue_10_status(
    observed: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMIPFAST_SERVER_ADMIN_LISTEN", "off")
    done = observed.server.run_cli("status", check=False)
    assert done.returncode == 1
    assert "admin listener is off" in done.stderr and "--admin" in done.stderr, done.stderr
    admin = observed.url.removeprefix("http://")
    assert observed.server.run_cli("status", "--admin", admin).stdout.startswith("kmipfast at ")


# ---------------------------------------------------------------------------
# docs/grafana-dashboard.json


def test_grafana_dashboard_queries_only_metrics_the_server_exposes_issue_10_dashboard(
    observed: Observed,
) -> None:
    """Every metric name in the dashboard's queries is one the server exposes."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exposed, families = set(), set()
    for family in text_string_to_metric_families(observed.get("/metrics")[2].decode()):
        families.add(family.name)
        exposed.add(family.name)
        exposed.update(family.name + s for s in suffixes.get(family.type, ()))
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v.get("definition", "") for v in dashboard["templating"]["list"]]
    assert exprs, "the dashboard has no queries"
    used = {m for e in exprs for m in re.findall(r"\b((?:kmipfast|process)_[a-z_]+)\b", e)}
    assert used <= exposed, f"queries name metrics the server lacks: {used - exposed}"
    unused = {
        f for f in families if f.startswith("kmipfast_") and not any(u.startswith(f) for u in used)
    }
    assert not unused, f"metrics missing from the dashboard: {unused}"
