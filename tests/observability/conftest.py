"""A live server with its admin listener on a port of its own, and HTTP helpers.

The port is taken from the kernel (bind to port 0, close) and handed to ``serve``
through ``KMIPFAST_SERVER_ADMIN_LISTEN``; ``kmipfast status`` run through the harness
sees the same variable.  Servers of other tests keep the default address: if it is
taken they serve KMIP without an admin listener.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.harness import KmipServer, running_server, server_available

ADMIN_ENV = "KMIPFAST_SERVER_ADMIN_LISTEN"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Observed:
    """A running server and the base URL of its admin listener."""

    server: KmipServer
    url: str

    def get(self, path: str, method: str = "GET") -> tuple[int, str, bytes]:
        """(status, content type, body) of one admin request."""
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    def scrape(self) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        status, _ctype, body = self.get("/metrics")
        assert status == 200, body
        out: Samples = defaultdict(list)
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[s.name].append((dict(s.labels), float(s.value)))
        return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        v
        for have, v in samples.get(name, [])
        if all(have.get(k) == want for k, want in labels.items())
    )


@pytest.fixture
def observed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Observed]:
    """A fresh server (tenant ``default``, client ``tests``) with its admin listener."""
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    port = free_port()
    monkeypatch.setenv(ADMIN_ENV, f"127.0.0.1:{port}")
    with running_server(tmp_path / "data") as server:
        assert "admin listener not started" not in server.stderr(), server.stderr()
        yield Observed(server, f"http://127.0.0.1:{port}")
