"""`kmipfast import` (issue #9, migration that keeps key IDs), from a real PyKMIP 0.11
server: its SQLite database file, and the live server over mutual TLS.

Each object must come out of the running kmipfast server under the uid it had in the
source, with the same material (compared by digest, never printed), names and state; a
second run changes nothing; a uid that exists with other material is a conflict and
keeps what was there; a source that drops mid-way leaves what was imported, and the
same command run again imports the rest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kmipfast.protocol.enums import Operation, State
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from tests.operator.helpers import cli, fails_in_one_line, state_of, vcenter_key
from tests.operator.sources import DroppingRelay, PykmipServer, free_port, pykmip_server
from tests.server.harness import KmipServer
from tests.server.kmipclient import attributes_of, create_aes_payload, key_material, uid_payload

pytestmark = pytest.mark.server

KEYS = 8


def digest(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


@dataclass
class Source:
    server: PykmipServer
    # uid -> (sha-256 of the material, name or None, activated)
    objects: dict[str, tuple[str, str | None, bool]]


def _populate(server: PykmipServer, tag: str) -> dict[str, tuple[str, str | None, bool]]:
    from kmip import enums
    from kmip.pie import objects

    client: Any = server.client()
    made: dict[str, tuple[str, str | None, bool]] = {}
    try:
        for i in range(KEYS):
            name = f"{tag}-key-{i}" if i % 3 else None
            uid = client.create(enums.CryptographicAlgorithm.AES, 256, name=name)
            if i % 2 == 0:
                client.activate(uid)
            made[uid] = (digest(client.get(uid).value), name, i % 2 == 0)
        secret = objects.SecretData(b"array-" + tag.encode(), enums.SecretDataType.PASSWORD,
                                    name=f"{tag}-secret")  # fmt: skip
        uid = client.register(secret)
        made[uid] = (digest(client.get(uid).value), f"{tag}-secret", False)
    finally:
        client.close()
    return made


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    with pykmip_server(tmp_path / "pykmip") as server:
        yield Source(server, _populate(server, "a"))


@pytest.fixture
def server(kmip_server_factory: Callable[[], KmipServer]) -> KmipServer:
    return kmip_server_factory()


def _check_served(server: KmipServer, objects: dict[str, tuple[str, str | None, bool]]) -> None:
    with server.connect() as conn:
        for uid, (want, name, active) in objects.items():
            got = conn.ok(Operation.Get, uid_payload(uid))
            assert digest(key_material(got)) == want, f"uid {uid}: other material"
            payload = conn.ok(
                Operation.GetAttributes,
                [*uid_payload(uid), (int(Tag.AttributeName), int(ItemType.TextString), "Name")],
            )
            names = [n[0][2] for n in attributes_of(payload).get("Name", [])]
            assert names == ([name] if name else []), f"uid {uid}: names {names}"
            if active:
                assert state_of(conn, uid) == State.Active


def _summary(done: Any) -> str:
    return str(done.stderr.strip().splitlines()[-1])


def test_import_from_pykmip_database_keeps_uids_and_is_idempotent(
    source: Source, server: KmipServer
) -> None:
    source.server.stop()  # the file of a stopped server, as a migration would use it
    db = str(source.server.db)
    done = server.run_cli("import", "--tenant", "default", "--from-pykmip", db)
    assert f"imported {KEYS + 1}, skipped 0, failed 0" in done.stderr
    _check_served(server, source.objects)
    again = server.run_cli("import", "--tenant", "default", "--from-pykmip", db)
    assert f"imported 0, skipped {KEYS + 1}, failed 0" in _summary(again)
    assert sorted(again.stdout.splitlines()) == sorted(
        f"{uid}\tskipped\talready imported" for uid in source.objects
    )
    _check_served(server, source.objects)


def test_import_conflicting_uid_is_reported_never_overwritten(
    source: Source, server: KmipServer, tmp_path: Path
) -> None:
    server.run_cli("import", "--from-pykmip", str(source.server.db))
    # Another PyKMIP server numbers its objects from 1 too: same uids, other keys.
    with pykmip_server(tmp_path / "other") as other:
        other_objects = _populate(other, "b")
        other.stop()
        assert set(other_objects) & set(source.objects)
        done = cli(server, "import", "--from-pykmip", str(other.db))
    assert done.returncode == 1
    assert f"imported 0, skipped 0, failed {KEYS + 1}" in _summary(done)
    assert all("conflict" in line for line in done.stdout.splitlines())
    _check_served(server, source.objects)  # what was there is untouched
    # A second tenant cannot take a uid another tenant holds either.
    server.run_cli("tenant", "create", "array")
    done = cli(server, "import", "--tenant", "array", "--from-pykmip", str(source.server.db))
    assert done.returncode == 1 and "another tenant" in done.stdout
    assert server.run_cli("keys", "list", "--tenant", "array").stdout == ""


def test_import_from_live_kmip_server_that_drops_midway_then_resumes(
    source: Source, server: KmipServer, tmp_path: Path
) -> None:
    s = source.server
    # The relay lets the handshake, Discover Versions, Locate and a few objects' requests
    # through, then cuts the connection and refuses new ones.
    relay = DroppingRelay(s.port, budget=12)
    tls = ["--cert", s.cert, "--key", s.key, "--ca", s.ca]
    first = cli(server, "import", "--from-kmip", f"127.0.0.1:{relay.port}", *tls, "--locate")
    assert relay.dropped.is_set()
    line = fails_in_one_line(first, "stopped answering", "run the same command again")
    imported = int(line.split("imported ")[1].split(",")[0])
    assert 0 < imported < KEYS + 1, line
    listed = server.run_cli("keys", "list").stdout.splitlines()
    assert len(listed) == imported  # nothing half-written
    # Resumed against the source itself, by an explicit list of uids this time.
    uids = tmp_path / "uids.txt"
    uids.write_text("".join(f"{uid}\n" for uid in source.objects))
    done = server.run_cli("import", "--from-kmip", f"127.0.0.1:{s.port}", *tls, "--uids", str(uids))
    assert f"imported {KEYS + 1 - imported}, skipped {imported}, failed 0" in _summary(done)
    _check_served(server, source.objects)


def test_import_bad_input(source: Source, server: KmipServer, tmp_path: Path) -> None:
    s = source.server
    tls = ["--cert", s.cert, "--key", s.key, "--ca", s.ca]
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello\n")
    fails_in_one_line(cli(server, "import", "--from-pykmip", str(not_db)), "not an SQLite")
    fails_in_one_line(cli(server, "import", "--from-pykmip", str(tmp_path / "none")), "not exist")
    fails_in_one_line(cli(server, "import"), "--from-pykmip")
    fails_in_one_line(
        cli(server, "import", "--from-kmip", f"127.0.0.1:{free_port()}", *tls, "--locate"),
        "cannot reach the source",
    )
    fails_in_one_line(cli(server, "import", "--from-kmip", "nohost", *tls, "--locate"), "HOST:PORT")
    fails_in_one_line(cli(server, "import", "--from-kmip", f"127.0.0.1:{s.port}", "--locate"),
                      "--cert")  # fmt: skip
    fails_in_one_line(cli(server, "import", "--from-kmip", f"127.0.0.1:{s.port}", *tls), "--locate")
    # A certificate that does not match its key.
    fails_in_one_line(
        cli(server, "import", "--from-kmip", f"127.0.0.1:{s.port}", "--cert", s.cert,
            "--key", str(Path(s.ca).with_name("server.key")), "--ca", s.ca, "--locate"),
        "cannot use client certificate",
    )  # fmt: skip
    bad_uids = tmp_path / "uids.txt"
    bad_uids.write_text("1\ntwo words\n")
    fails_in_one_line(
        cli(server, "import", "--from-kmip", f"127.0.0.1:{s.port}", *tls, "--uids", str(bad_uids)),
        "uids.txt:2",
    )
    fails_in_one_line(cli(server, "import", "--tenant", "nope", "--from-pykmip", str(s.db)), "nope")
    assert server.run_cli("keys", "list").stdout == ""  # nothing half-written


def test_import_from_another_kmipfast_keeps_vcenter_attributes_and_state(
    kmip_server_factory: Callable[[], KmipServer], tmp_path: Path
) -> None:
    old, new = kmip_server_factory(), kmip_server_factory()
    with old.connect() as conn:
        vm = vcenter_key(conn, "4226f566-3ed5-1c8f-cda3-b0b037b6dc97", "test01")
        created = conn.ok(Operation.Create, create_aes_payload())
        pre_active = str(value(created, Tag.UniqueIdentifier))
        want = {uid: digest(key_material(conn.ok(Operation.Get, uid_payload(uid))))
                for uid in (vm, pre_active)}  # fmt: skip
    gone = old.run_cli("keys", "create", "--name", "retired").stdout.strip()
    old.run_cli("keys", "revoke", gone)
    old.run_cli("keys", "destroy", gone, "--yes")
    assert old.client is not None
    tls = ["--cert", old.client.cert, "--key", old.client.key, "--ca", old.ca_cert]
    # Locate finds the live objects (a destroyed one has nothing to serve).
    done = new.run_cli("import", "--from-kmip", f"{old.host}:{old.port}", *tls, "--locate")
    assert "imported 2, skipped 0, failed 0" in _summary(done)
    # Named explicitly, the destroyed one is skipped with its reason, the others are done.
    uids = tmp_path / "uids.txt"
    uids.write_text(f"{vm}\n{gone}\n# comment\n\n{pre_active}\n")
    again = new.run_cli("import", "--from-kmip", f"{old.host}:{old.port}", *tls, "--uids",
                        str(uids))  # fmt: skip
    assert "imported 0, skipped 3, failed 0" in _summary(again)
    assert f"{gone}\tskipped\tdestroyed in the source" in again.stdout
    with new.connect() as conn:
        for uid, d in want.items():
            assert digest(key_material(conn.ok(Operation.Get, uid_payload(uid)))) == d
        assert state_of(conn, vm) == State.Active
        assert state_of(conn, pre_active) == State.PreActive
    shown = json.loads(new.run_cli("keys", "show", vm, "--json").stdout)["attributes"]
    assert shown["x-Identifier"] == ["4226f566-3ed5-1c8f-cda3-b0b037b6dc97"]
    assert shown["x-Name"] == ["test01"] and shown["x-Component"] == ["Virtual Machine"]
    orig = json.loads(old.run_cli("keys", "show", vm, "--json").stdout)["attributes"]
    assert shown["Activation Date"] == orig["Activation Date"]
    assert shown["Original Creation Date"] == orig["Initial Date"]
    listed = new.run_cli("keys", "list", "--x-identifier", "4226f566-3ed5-1c8f-cda3-b0b037b6dc97")
    assert [ln.split("\t")[0] for ln in listed.stdout.splitlines()] == [vm]
