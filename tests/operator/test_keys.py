"""`kmipfast keys ...` on a live server (issue #9, key administration).

Every change the CLI makes must be what a KMIP client would see at once: the server
caches objects, so each test first reads the key over KMIP (into the server's cache),
then changes it with the CLI, then checks the server's answer without waiting.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from kmipfast.protocol.enums import Operation, ResultReason, State
from tests.operator.helpers import cli, fails_in_one_line, state_of, vcenter_key
from tests.server.harness import KmipServer
from tests.server.kmipclient import key_material, uid_payload

pytestmark = pytest.mark.server


@pytest.fixture
def server(kmip_server_factory: Callable[[], KmipServer]) -> KmipServer:
    return kmip_server_factory()


def _list(server: KmipServer, *args: str) -> list[dict[str, object]]:
    done = server.run_cli("keys", "list", "--json", *args)
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def test_keys_create_is_served_over_kmip_and_show_has_no_material(server: KmipServer) -> None:
    done = server.run_cli("keys", "create", "--tenant", "default", "--name", "tkp-top")
    uid = done.stdout.strip()
    assert uuid.UUID(uid)
    with server.connect() as conn:
        got = conn.ok(Operation.Get, uid_payload(uid))
        material = key_material(got)
        assert material is not None and len(material) == 32
        assert state_of(conn, uid) == State.Active
    shown = json.loads(server.run_cli("keys", "show", uid, "--json").stdout)
    assert shown["state"] == "Active" and shown["tenant"] == "default"
    assert shown["attributes"]["Name"] == ["tkp-top"]
    assert shown["attributes"]["Cryptographic Algorithm"] == ["AES"]
    assert "Digest" not in shown["attributes"]
    text = server.run_cli("keys", "show", uid).stdout
    assert material.hex() not in text.lower() and material.hex() not in json.dumps(shown)
    assert "Activation Date: 20" in text


def test_keys_create_bad_input(server: KmipServer) -> None:
    fails_in_one_line(cli(server, "keys", "create", "--tenant", "nope", "--name", "a"), "nope")
    fails_in_one_line(cli(server, "keys", "create", "--name", "a", "--length", "100"), "100")
    fails_in_one_line(cli(server, "keys", "create", "--name", "a", "--algorithm", "ROT13"), "ROT13")
    server.run_cli("keys", "create", "--name", "dup")
    fails_in_one_line(cli(server, "keys", "create", "--name", "dup"), "dup")
    assert [r["names"] for r in _list(server)] == [["dup"]]  # nothing half-written


def test_keys_destroy_stops_a_running_server_serving_the_key(server: KmipServer) -> None:
    with server.connect() as conn:
        uid = vcenter_key(conn, "vm-1", "db01")
        assert key_material(conn.ok(Operation.Get, uid_payload(uid)))  # now in the cache
        # An Active key: the KMIP rule (revoke first) holds for the CLI too.
        line = fails_in_one_line(cli(server, "keys", "destroy", uid, "--yes"), uid, "revoke")
        assert "Active" in line
        assert state_of(conn, uid) == State.Active
        fails_in_one_line(cli(server, "keys", "destroy", uid), "--yes")
        server.run_cli("keys", "revoke", uid)
        assert state_of(conn, uid) == State.Deactivated  # no wait: seen at once
        server.run_cli("keys", "destroy", uid, "--yes")
        conn.call(Operation.Get, uid_payload(uid)).expect_failure(ResultReason.ItemNotFound)
        assert state_of(conn, uid) == State.Destroyed
    fails_in_one_line(cli(server, "keys", "revoke", uid), "destroyed")
    audit = _admin_lines(server)
    assert [(a["action"], a["uid"]) for a in audit if a.get("uid") == uid] == [
        ("key not destroyed", uid),
        ("key revoked", uid),
        ("key destroyed", uid),
        ("key not revoked", uid),
    ]
    assert all(a["os_user"] == getpass.getuser() for a in audit if a.get("uid") == uid)


def _admin_lines(server: KmipServer) -> list[dict[str, str]]:
    lines = (server.data_dir / "audit.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("kind") == "admin"]


def test_keys_revoke_and_destroy_by_x_identifier_touch_only_that_vm(server: KmipServer) -> None:
    with server.connect() as conn:
        vm_a = [vcenter_key(conn, "vm-a", "web01"), vcenter_key(conn, "vm-a", "web01")]
        vm_b = vcenter_key(conn, "vm-b", "web02")
        for uid in [*vm_a, vm_b]:
            conn.ok(Operation.Get, uid_payload(uid))
        out = server.run_cli("keys", "revoke", "--x-identifier", "vm-a").stdout
        assert sorted(ln.split("\t")[0] for ln in out.splitlines()) == sorted(vm_a)
        server.run_cli("keys", "destroy", "--x-identifier", "vm-a", "--yes")
        for uid in vm_a:
            conn.call(Operation.Get, uid_payload(uid)).expect_failure(ResultReason.ItemNotFound)
        assert key_material(conn.ok(Operation.Get, uid_payload(vm_b)))
        assert state_of(conn, vm_b) == State.Active
    fails_in_one_line(cli(server, "keys", "revoke", "--x-identifier", "vm-zzz"), "vm-zzz")
    fails_in_one_line(cli(server, "keys", "revoke"), "--x-identifier")
    fails_in_one_line(cli(server, "keys", "show", "no-such-uid"), "no-such-uid")


def test_keys_list_filters(server: KmipServer) -> None:
    with server.connect() as conn:
        vm = vcenter_key(conn, "vm-1", "db01")
        host = vcenter_key(conn, "host-1", "esx01", component="ESXi Server")
    made = server.run_cli("keys", "create", "--name", "kek").stdout.strip()
    server.run_cli("keys", "revoke", made)

    def uids(*args: str) -> set[object]:
        return {r["uid"] for r in _list(server, *args)}

    assert uids() == {vm, host, made}
    assert uids("--state", "deactivated") == {made}
    assert uids("--state", "Active") == {vm, host}
    assert uids("--name", "db01") == {vm}
    assert uids("--name", "kek") == {made}
    assert uids("--x-identifier", "host-1") == {host}
    assert uids("--component", "ESXi Server") == {host}
    assert uids("--older-than", "1d") == set()
    assert uids("--older-than", "0s") == {vm, host, made}
    fails_in_one_line(cli(server, "keys", "list", "--older-than", "soon"), "soon")
    fails_in_one_line(cli(server, "keys", "list", "--state", "sleepy"), "sleepy")
    fails_in_one_line(cli(server, "keys", "list", "--tenant", "nope"), "nope")


def test_keys_orphans_lists_then_destroys_keys_of_removed_vms(
    server: KmipServer, tmp_path: Path
) -> None:
    with server.connect() as conn:
        kept = vcenter_key(conn, "4226f566-3ed5-1c8f-cda3-b0b037b6dc97", "kept")
        gone = vcenter_key(conn, "4226aaaa-3ed5-1c8f-cda3-b0b037b6dc97", "removed-vm")
        host = vcenter_key(conn, "8c164d56-7f1c-5960-63e6-4451c6181844", "esx", "ESXi Server")
        conn.ok(Operation.Get, uid_payload(gone))
    top = server.run_cli("keys", "create", "--name", "tkp-top").stdout.strip()
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        "name,id\nkept,4226f566-3ed5-1c8f-cda3-b0b037b6dc97\n"
        "esx,8c164d56-7f1c-5960-63e6-4451c6181844\n"
    )
    done = server.run_cli("keys", "orphans", "--tenant", "default", "--inventory", str(inventory))
    rows = [ln.split("\t") for ln in done.stdout.splitlines()]
    assert [(r[0], r[3]) for r in rows] == [(gone, "removed-vm")]
    assert rows[0][5].endswith("m")  # age
    fails_in_one_line(
        cli(server, "keys", "orphans", "--inventory", str(inventory), "--destroy"), "--yes"
    )
    server.run_cli("keys", "orphans", "--inventory", str(inventory), "--destroy", "--yes")
    with server.connect() as conn:
        conn.call(Operation.Get, uid_payload(gone)).expect_failure(ResultReason.ItemNotFound)
        for uid in (kept, host, top):
            assert key_material(conn.ok(Operation.Get, uid_payload(uid)))
    # Plain text, one id a line, works too; and now nothing is orphaned.
    text = tmp_path / "inventory.txt"
    text.write_text(
        "# exported from vCenter\n4226f566-3ed5-1c8f-cda3-b0b037b6dc97\n\n"
        "8c164d56-7f1c-5960-63e6-4451c6181844\n"
    )
    assert server.run_cli("keys", "orphans", "--inventory", str(text)).stdout == ""


def test_keys_orphans_bad_inventory_changes_nothing(server: KmipServer, tmp_path: Path) -> None:
    with server.connect() as conn:
        uid = vcenter_key(conn, "vm-1", "db01")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("vm-2\n<html>oops</html>\nvm-3\n")
    line = fails_in_one_line(
        cli(server, "keys", "orphans", "--inventory", str(garbage), "--destroy", "--yes"),
        "garbage.txt:2",
    )
    assert "--ignore-garbage" in line
    no_column = tmp_path / "vms.csv"
    no_column.write_text("name,uuid\ndb01,vm-1\n")
    fails_in_one_line(cli(server, "keys", "orphans", "--inventory", str(no_column)), "'id' column")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    fails_in_one_line(cli(server, "keys", "orphans", "--inventory", str(empty)), "no ids")
    fails_in_one_line(cli(server, "keys", "orphans", "--inventory", str(tmp_path / "missing")))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    fails_in_one_line(cli(server, "keys", "orphans", "--inventory", str(binary)))
    with server.connect() as conn:
        assert state_of(conn, uid) == State.Active
    # With --ignore-garbage, the good lines count: vm-1 is not among them, so it is listed.
    done = server.run_cli("keys", "orphans", "--inventory", str(garbage), "--ignore-garbage")
    assert done.stdout.split("\t")[0] == uid
    assert "garbage.txt:2" in done.stderr
