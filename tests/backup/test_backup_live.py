"""Backup and restore with live servers and a real SoftHSM2 token (issue #8, DESIGN §5).

One scenario, built once for the module: a server with three tenants (default, other,
doomed), keys in every state with names and custom attributes, and a self-signed client
(trusted through its restored certificate file).  ``kmipfast backup`` runs while a client
keeps creating keys; then tenant doomed is shredded on the source.  The backup is restored
into a new data dir that shares the source's HSM token (``hsm.module`` = SoftHSM2,
``SOFTHSM2_CONF`` and the PIN file of the source, as with any external HSM), and a server
started there must answer every Get and GetAttributes as the source did, except for the
shredded tenant, whose keys open no more.  Key bytes are compared by digest, never printed.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kmipfast.keys.softhsm import find_softhsm_module
from kmipfast.pgserver import pg_available
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import Operation, ResultReason, RevocationReasonCode
from kmipfast.protocol.tags import ItemType, Tag
from tests.pg import shared_cluster
from tests.server.harness import (
    ClientBundle,
    KmipServer,
    connect_when_admitted,
    self_signed_client,
    server_available,
    start_server,
)
from tests.server.kmipclient import (
    Conn,
    attribute,
    attributes_of,
    create_aes_payload,
    key_material,
    register_secret_payload,
    uid_payload,
)

pytestmark = pytest.mark.server


@dataclass
class Answer:
    """What a server says about one uid: Get's outcome and material digest, and the
    attributes GetAttributes lists."""

    get: tuple[bool, int | None, str | None]
    attributes: dict[str, list[Any]] | None


def answer(conn: Conn, uid: str) -> Answer:
    r = conn.call(Operation.Get, uid_payload(uid))
    material = key_material(r.payload) if r.success and r.payload is not None else None
    digest = hashlib.sha256(material).hexdigest() if material is not None else None
    a = conn.call(Operation.GetAttributes, uid_payload(uid))
    return Answer((r.success, r.reason, digest), attributes_of(a.payload) if a.success else None)


def make_keys(conn: Conn, tenant: str) -> list[str]:
    """Keys in every state a backup must keep: Pre-Active, Active, Deactivated (revoked),
    Destroyed; a Secret Data; names and an x- attribute."""
    uids = []
    for i in range(6):
        r = conn.ok(Operation.Create, create_aes_payload(name=f"{tenant}-key-{i}"))
        uids.append(ttlv.value(r, Tag.UniqueIdentifier))
    r = conn.ok(
        Operation.Register, register_secret_payload(hashlib.sha256(tenant.encode()).digest())
    )
    uids.append(ttlv.value(r, Tag.UniqueIdentifier))
    for uid in uids:
        conn.ok(Operation.AddAttribute, [*uid_payload(uid), attribute(
            "x-backup", (0, int(ItemType.TextString), f"{tenant}:{uid}"))])  # fmt: skip
    for uid in uids[1:4]:
        conn.ok(Operation.Activate, uid_payload(uid))
    revocation = ttlv.struct(
        Tag.RevocationReason,
        ttlv.enum(Tag.RevocationReasonCode, RevocationReasonCode.CessationOfOperation),
    )
    conn.ok(Operation.Revoke, [*uid_payload(uids[2]), revocation])
    conn.ok(Operation.Destroy, uid_payload(uids[4]))
    return uids


@dataclass
class Scenario:
    source: KmipServer
    restored: KmipServer
    bundles: dict[str, ClientBundle]  # tenant -> a client of it
    vcenter: ClientBundle  # self-signed, allowed for tenant other
    before: dict[str, dict[str, Answer]]  # tenant -> uid -> answer before the backup
    during: dict[str, str | None] = field(default_factory=dict)  # uid -> digest
    backup_file: Path = Path()


class Creator(threading.Thread):
    """Keeps creating keys (and reading them back) on its own session until stopped."""

    def __init__(self, server: KmipServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.made: dict[str, str | None] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.connect() as conn:
                while not self.stop.is_set():
                    r = conn.ok(Operation.Create, create_aes_payload())
                    uid = ttlv.value(r, Tag.UniqueIdentifier)
                    self.made[uid] = answer(conn, uid).get[2]
        except BaseException as e:
            self.error = e


def share_hsm(
    source: KmipServer, dst: Path, store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new data dir for the restore: the source's config and TLS files, its HSM as an
    external PKCS#11 token (the module, the token's SoftHSM2 configuration, the PIN), and
    ``store`` (a new database) instead of the source's PostgreSQL database."""
    dst.mkdir(parents=True)
    shutil.copy2(source.data_dir / "kmipfast.toml", dst / "kmipfast.toml")
    shutil.copytree(source.data_dir / "tls", dst / "tls")
    module = find_softhsm_module()
    assert module is not None, "SoftHSM2 is not installed"
    path = dst / "kmipfast.toml"
    text = path.read_text()
    settings = [("hsm", "module", module), ("hsm", "pin_file", str(source.data_dir / "hsm/pin"))]
    if store is not None:
        settings.append(("store", "url", store))
    for section, key, value in settings:
        head = text.index(f"[{section}]")
        start = text.index(f"\n{key} = ", head) + 1
        end = text.index("\n", start)
        text = text[:start] + f'{key} = "{value}"' + text[end:]
    path.write_text(text)
    monkeypatch.setenv("SOFTHSM2_CONF", str(source.data_dir / "hsm" / "softhsm2.conf"))


def databases(backend: str) -> tuple[str, str | None]:
    """Source and target store URLs: the data dir's SQLite file (the target's is then
    the one its copied config names), or two new databases on the test PostgreSQL
    cluster.  Explicit either way, whatever KMIPFAST_TEST_STORE says."""
    if backend == "sqlite":
        return "sqlite:///store.sqlite3", None
    if not pg_available():
        pytest.skip("PostgreSQL is not installed (make sysdeps installs it)")
    cluster = shared_cluster()
    return cluster.create_database(), cluster.create_database()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet")
    source_store, target_store = databases(request.param)
    base = tmp_path_factory.mktemp(f"backup-{request.param}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        source = start_server(base / "src", store=source_store)
        restored = KmipServer(base / "dst")
        try:
            assert source.client is not None
            bundles = {"default": source.client}
            for tenant in ("other", "doomed"):
                source.run_cli("tenant", "create", tenant)
                bundles[tenant] = source.issue_client(f"{tenant}-client", tenant)
            vc = self_signed_client(base / "vc", "vcenter")
            vcenter = ClientBundle(vc.name, vc.cert, vc.key, source.ca_cert)
            source.run_cli("client", "allow", vc.cert, "--tenant", "other", "--name", "vcenter")
            before: dict[str, dict[str, Answer]] = {}
            for tenant, bundle in bundles.items():
                with connect_when_admitted(source, bundle) as conn:
                    before[tenant] = {uid: answer(conn, uid) for uid in make_keys(conn, tenant)}
            with connect_when_admitted(source, vcenter) as conn:
                conn.ok(Operation.DiscoverVersions)

            creator = Creator(source)
            creator.start()
            backup_file = base / "backup.kmipfast"
            try:
                while len(creator.made) < 5 and creator.error is None and creator.is_alive():
                    creator.join(0.05)
                source.run_cli("backup", "--out", str(backup_file))
            finally:
                creator.stop.set()
                creator.join(30)
            assert creator.error is None, f"the creator failed: {creator.error!r}"

            source.run_cli("root", "shred", "--tenant", "doomed", "--yes")
            source.stop()

            share_hsm(source, restored.data_dir, target_store, monkeypatch)
            done = restored.run_cli("restore", str(backup_file))
            assert "3 tenants, 5 clients" in done.stdout, done.stdout
            restored.client = source.client
            restored.start()
            yield Scenario(source, restored, bundles, vcenter, before, dict(creator.made),
                           backup_file)  # fmt: skip
        finally:
            source.stop()
            restored.stop()


def test_restore_round_trip_same_bytes_and_attributes_issue_8(scenario: Scenario) -> None:
    """A backup taken while a server serves and writes, restored into a new data dir on
    the same HSM: Get returns the same key bytes and GetAttributes the same attributes for
    every key of every tenant that was not shredded, in every state (Destroyed and
    revoked ones answer as before); keys created during the backup are either there with
    the same bytes or not there at all; the self-signed client is trusted again."""
    server = scenario.restored
    for tenant in ("default", "other"):
        with connect_when_admitted(server, scenario.bundles[tenant]) as conn:
            for uid, expected in scenario.before[tenant].items():
                got = answer(conn, uid)
                assert got.get == expected.get, f"{tenant} {uid}: Get differs"
                assert got.attributes == expected.attributes, f"{tenant} {uid}: attributes differ"
            answers = scenario.before[tenant].values()
            assert sum(1 for a in answers if a.get[2]) >= 4, "too few keys with material"
            assert any(not a.get[0] for a in answers), "no key whose Get fails (Destroyed)"
            states = {a.attributes["State"][0] for a in answers if a.attributes}
            assert len(states) >= 4, f"not every state is covered: {states}"
            assert all("x-backup" in a.attributes for a in answers if a.attributes)
    with server.connect() as conn:
        present = 0
        for uid, digest in scenario.during.items():
            r = conn.call(Operation.Get, uid_payload(uid))
            if r.success:
                present += 1
                material = key_material(r.payload) if r.payload is not None else None
                assert material is not None and hashlib.sha256(material).hexdigest() == digest
            else:
                r.expect_failure(ResultReason.ItemNotFound)
        assert present >= 5, "keys acknowledged before the backup started are missing"
    with connect_when_admitted(server, scenario.vcenter) as conn:
        uid = next(iter(scenario.before["other"]))
        assert answer(conn, uid).get == scenario.before["other"][uid].get


def test_restore_of_a_backup_taken_before_shred_opens_nothing_of_that_tenant_issue_8(
    scenario: Scenario,
) -> None:
    """DESIGN §5: after ``root shred``, a backup of that tenant restores to nothing
    readable.  Its rows come back (the tenant and its objects exist), but every Get of a
    key with material fails with Cryptographic Failure and a message, the root key is
    reported missing from the HSM, and the other tenants are unaffected."""
    server = scenario.restored
    status = server.run_cli("root", "status", "--tenant", "doomed").stdout
    assert "MISSING" in status, status
    with connect_when_admitted(server, scenario.bundles["doomed"]) as conn:
        for uid, expected in scenario.before["doomed"].items():
            r = conn.call(Operation.Get, uid_payload(uid))
            assert not r.success, f"doomed {uid}: Get succeeded after the shred"
            if expected.get[0]:  # had material: now it cannot be opened
                r.expect_failure(ResultReason.CryptographicFailure)
                assert r.message, "a Cryptographic Failure without a message"
    with server.connect() as conn:
        uid, expected = next(
            (u, a) for u, a in scenario.before["default"].items() if a.get[2] is not None
        )
        assert answer(conn, uid).get == expected.get
