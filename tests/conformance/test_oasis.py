"""OASIS KMIP 1.x profile test cases of the target families, against a live server.

Every 1.x file of the families the issue names (TC_31x, TC_41, TC_121/122, TC_161,
TC_171, TC_71/72, SKLC, SKFF, OMOS, SASED, TL) must pass, except those listed in
``skipped.toml`` with a reason. How a file is run and compared, and the policies for
Query, Discover Versions and generated key material, are in ``oasis_runner.py``.

Servers: the files of one family share one server (started when the family's first
file runs, stopped — and checked for a clean exit — when the next family starts), so
the suite starts about a dozen servers, not one per file. The TL-* files are a series
(configure, write a key, read it back) that assumes an otherwise empty server: each
series runs in order on a fresh server from ``kmip_server_factory``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmipfast.protocol.enums import Operation, QueryFunction, ResultReason
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import find_all
from tests.conformance.oasis_runner import (
    CLAIMED_OPERATIONS,
    FileResult,
    ServerState,
    corpus_files,
    family_of,
    group_of,
    is_target,
    load_skipped,
    operations_used,
    run_file,
)
from tests.server.harness import KmipServer, ServerError, server_available, start_server
from tests.server.kmipclient import Conn

SKIPPED = load_skipped()
# Grouped so that each family group's files run back to back on one server.
TARGETS = sorted((f for f in corpus_files() if is_target(f)), key=lambda f: (group_of(f), f))


def _param(rel: str) -> object:
    reason = SKIPPED.get(rel)
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return pytest.param(rel, id=rel, marks=marks)


class GroupServers:
    """One server per family group, alive while that group's files run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.group: str | None = None
        self.server: KmipServer | None = None
        self.state = ServerState()
        self.errors: list[str] = []

    def for_file(self, rel: str) -> tuple[KmipServer, ServerState]:
        group = group_of(rel)
        if group != self.group or self.server is None:
            self.close()
            self.group = group
            self.server = start_server(self.root / re.sub(r"\W+", "_", group))
            self.state = ServerState()
        return self.server, self.state

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            try:
                server.stop()
            except ServerError as exc:
                self.errors.append(f"server of {self.group}: {exc}")


@pytest.fixture(scope="module")
def group_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupServers]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    servers = GroupServers(tmp_path_factory.mktemp("oasis"))
    yield servers
    servers.close()
    if servers.errors:
        pytest.fail("\n".join(servers.errors), pytrace=False)


def _explain(result: FileResult) -> str:
    return "\n".join([result.summary(), *result.differences[1:20]])


@pytest.mark.server
@pytest.mark.parametrize("rel", [_param(f) for f in TARGETS if family_of(f) != "TL"])
def test_oasis_1x_case(rel: str, group_servers: GroupServers) -> None:
    server, state = group_servers.for_file(rel)
    result = run_file(server.connect, rel, state)
    assert result.passed, _explain(result)


def _tl_series() -> list[object]:
    series: dict[str, list[str]] = {}
    for rel in TARGETS:
        if family_of(rel) == "TL":
            series.setdefault(str(Path(rel).parent), []).append(rel)
    return [pytest.param(files, id=f"TL series {folder}") for folder, files in series.items()]


@pytest.mark.server
@pytest.mark.parametrize("files", _tl_series())
def test_oasis_1x_tape_library_series(
    files: list[str], kmip_server_factory: Callable[[], KmipServer]
) -> None:
    """TL-M-1 (configuration Query), TL-M-2 (write: Create + Get), TL-M-3 (read: Locate by
    Application Specific Information, Get, attributes, Destroy), in order, on an empty server."""
    assert [re.search(r"TL[-_]M[-_](\d)", f).group(1) for f in files] == ["1", "2", "3"], files
    server = kmip_server_factory()
    state = ServerState()
    results = [run_file(server.connect, rel, state) for rel in files]
    # A file listed in skipped.toml still runs (the next one needs its objects).
    failed = [r for r in results if not r.passed and r.path not in SKIPPED]
    assert not failed, "\n".join(_explain(r) for r in failed)


# ---------------------------------------------------------------------------
# The data the parametrization rests on


def test_target_families_are_all_present() -> None:
    """The corpus holds files of every target family, so no family passes by being absent."""
    families = {family_of(f) for f in TARGETS}
    assert families == {
        "TC_31x",
        "TC_41",
        "TC_121",
        "TC_122",
        "TC_161",
        "TC_171",
        "TC_71",
        "TC_72",
        "SKLC",
        "SKFF",
        "OMOS",
        "SASED",
        "TL",
    }
    assert len(TARGETS) > 150


def test_skipped_toml_names_real_files_with_reasons() -> None:
    files = set(corpus_files())
    for rel, reason in SKIPPED.items():
        assert rel in files, f"skipped.toml names {rel}, which is not in the 1.x corpus"
        assert len(reason) > 20, f"{rel}: give a real reason"


def test_skipped_toml_lists_every_file_using_operations_we_do_not_offer() -> None:
    """Every file whose operations go beyond DESIGN §6 is listed, and its reason names them."""
    for rel in corpus_files():
        beyond = sorted(op.name for op in operations_used(rel) if op not in CLAIMED_OPERATIONS)
        if beyond:
            assert rel in SKIPPED, f"{rel} uses {beyond} but is not in skipped.toml"
            for name in beyond:
                assert name in SKIPPED[rel], f"{rel}: reason does not name {name}"


# ---------------------------------------------------------------------------
# Query must tell the truth (the runner's Query policy trusts the listed operations)


@pytest.mark.server
def test_query_operations_lists_only_implemented_operations(conn: Conn) -> None:
    """KMIP 1.4 §4.25: every operation Query lists is handled — an empty request for it
    may fail for its content, but never with Operation Not Supported."""
    payload = conn.ok(
        Operation.Query,
        [(int(Tag.QueryFunction), int(ItemType.Enumeration), int(QueryFunction.QueryOperations))],
    )
    listed = [c[2] for c in find_all(payload, Tag.Operation)]
    assert set(CLAIMED_OPERATIONS) <= set(listed), sorted(
        Operation(o).name for o in set(CLAIMED_OPERATIONS) - set(listed)
    )
    unsupported = []
    for op in listed:
        result = conn.call(Operation(op), [])
        if not result.success and result.reason == ResultReason.OperationNotSupported:
            unsupported.append(Operation(op).name)
    assert not unsupported, f"Query lists operations the server does not support: {unsupported}"
