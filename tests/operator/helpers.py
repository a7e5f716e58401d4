"""What the operator tests share: the CLI's one-line failures, vCenter-shaped keys."""

from __future__ import annotations

import subprocess

from kmipfast.protocol.enums import Operation, State
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from tests.server.harness import KmipServer
from tests.server.kmipclient import (
    Conn,
    attribute,
    attributes_of,
    create_aes_payload,
    uid_payload,
)


def fails_in_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A refused command: non-zero exit, one plain error line, no traceback."""
    assert done.returncode != 0, f"expected failure, got 0; stdout: {done.stdout!r}"
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {done.stderr!r}"
    assert lines[0].startswith("kmipfast: error: "), lines[0]
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def vcenter_key(conn: Conn, identifier: str, name: str, component: str = "Virtual Machine") -> str:
    """A key as vCenter makes one: Create, the three x- attributes, Activate."""
    uid = str(value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier))
    for attr, text in (("x-Identifier", identifier), ("x-Component", component), ("x-Name", name)):
        conn.ok(
            Operation.AddAttribute,
            [*uid_payload(uid), attribute(attr, (0, int(ItemType.TextString), text))],
        )
    conn.ok(Operation.Activate, uid_payload(uid))
    return uid


def state_of(conn: Conn, uid: str) -> State:
    payload = conn.ok(
        Operation.GetAttributes,
        [*uid_payload(uid), (int(Tag.AttributeName), int(ItemType.TextString), "State")],
    )
    return State(attributes_of(payload)["State"][0])


def cli(server: KmipServer, *args: str) -> subprocess.CompletedProcess[str]:
    return server.run_cli(*args, check=False)
