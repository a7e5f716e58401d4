"""The operator guides, followed step by step against a live server (issue #9, Guides).

``docs/vcenter.md`` and ``docs/storage-array.md`` are read as data: every ``sh`` block
runs exactly as written (``tests/operator/guides.py``), in order, on a server whose
data dir the guide's own ``init`` block made.  Between blocks the test plays the other
side: vCenter is the replay of a real vCenter 7.0.3 session
(``tests/conformance/test_vcenter_capture.py``) over the certificate the guide set up;
the array is a KMIP client with a certificate signed from its CSR.  After each block
the test checks what a reader was promised.

Two blocks are run in the only way a test can: ``kmipfast serve --listen
0.0.0.0:5696`` becomes the harness's ``kmipfast serve --listen 127.0.0.1:0`` (a shared
machine's port 5696 is not ours), and clients verify the server as ``kms.example.com``,
the name the guide's ``init --san`` gave it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kmipfast import pki
from kmipfast.protocol.enums import Operation, ResultReason, RevocationReasonCode, State
from kmipfast.protocol.tags import ItemType, Tag
from kmipfast.protocol.ttlv import value
from tests.conformance.test_vcenter_capture import VCENTER, Replay
from tests.operator.guides import Step, run_step, steps_of
from tests.operator.helpers import state_of, vcenter_key
from tests.server import kmipclient
from tests.server.harness import (
    POLL_INTERVAL,
    ClientBundle,
    KmipServer,
    self_signed_client,
    server_available,
)
from tests.server.kmipclient import (
    Conn,
    batch_results,
    create_aes_payload,
    key_material,
    uid_payload,
)

pytestmark = pytest.mark.server

SERVER_NAME = "kms.example.com"  # the --san of the guides' init block
ADMIT_DEADLINE = 5.0
VM_ID = "4226f566-3ed5-1c8f-cda3-b0b037b6dc97"  # the VM "test01" of the capture
HOST_ID = "8c164d56-7f1c-5960-63e6-4451c6181844"  # its ESXi host
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- the other side -----------------------------------------------------------------------
def connect(server: KmipServer, bundle: ClientBundle) -> Conn:
    return kmipclient.connect(
        server.host, server.port, bundle.cert, bundle.key, bundle.ca, server_hostname=SERVER_NAME
    )


def admitted(server: KmipServer, bundle: ClientBundle) -> Conn:
    """A session once the allow-list change reached the server (within about a second)."""
    end = time.monotonic() + ADMIT_DEADLINE
    while True:
        try:
            conn = connect(server, bundle)
            conn.ok(Operation.DiscoverVersions)
            return conn
        except (OSError, kmipclient.ConnectionClosed) as exc:
            if time.monotonic() >= end:
                raise AssertionError(f"{bundle.name} not admitted: {exc!r}") from None
            time.sleep(POLL_INTERVAL)


def is_refused(server: KmipServer, bundle: ClientBundle) -> bool:
    try:
        with connect(server, bundle) as conn:
            conn.ok(Operation.DiscoverVersions)
    except (OSError, kmipclient.ConnectionClosed):
        return True
    return False


def csr_for(directory: Path, name: str, bits: int = 2048) -> tuple[Path, Path]:
    """What vCenter or an array generates: an RSA key it keeps and a CSR it exports."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    key_path = directory / f"{name}-private.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    csr_path = directory / f"{name}.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return csr_path, key_path


@dataclass
class GuideReplay(Replay):
    """The vCenter capture, sent over the certificate the guide gave vCenter."""

    bundle: ClientBundle | None = None

    def connect(self) -> Conn:
        assert self.bundle is not None
        self.connections += 1
        return connect(self.server, self.bundle)


def replay_vcenter(server: KmipServer, bundle: ClientBundle) -> dict[str, str]:
    """Replays vCenter's session; returns our uid -> the x-Identifier vCenter gave it."""
    capture = json.loads(VCENTER.read_text())
    replay = GuideReplay(server, bundle=bundle)
    for session in capture["sessions"]:
        with replay.connect() as conn:
            for i, exchange in enumerate(session["exchanges"]):
                label = f"session {session['session']} exchange {i}"
                ex = replay.send(conn, label, exchange["request"], exchange.get("pykmip_response"))
                assert not ex.error, f"{label}: {ex.error}"
                assert ex.response is not None
                for result in batch_results(ex.response):
                    result.expect_success()
    made: dict[str, str] = {}
    for ex in replay.exchanges:
        for op, payload in zip(ex.operations, ex.payloads(), strict=True):
            attr = payload and [c for c in payload[2] if c[0] == Tag.Attribute]
            if (
                op == Operation.AddAttribute
                and attr
                and value(attr[0], Tag.AttributeName) == "x-Identifier"
            ):
                made[value(payload, Tag.UniqueIdentifier)] = value(attr[0], Tag.AttributeValue)
    assert set(made.values()) == {VM_ID, HOST_ID}
    return made


# -- the runner ------------------------------------------------------------------------------
Before = Callable[["Guide"], None]  # plays the other side before a block
After = Callable[["Guide", str], None]  # checks what the block promised (its stdout)


@dataclass
class Guide:
    server: KmipServer
    cwd: Path
    outputs: dict[str, Any] = field(default_factory=dict)  # step -> CompletedProcess
    state: dict[str, Any] = field(default_factory=dict)

    def run(
        self,
        guide: str,
        hooks: dict[
            str, tuple[Callable[[Guide], None] | None, Callable[[Guide, str], None] | None]
        ],
    ) -> None:
        steps = steps_of(guide)
        assert [s.name for s in steps] == list(hooks), (
            f"{guide}: the test's steps {list(hooks)} are not the guide's {[s.name for s in steps]}"
        )
        for step in steps:
            before, after = hooks[step.name]
            if before is not None:
                before(self)
            out = self.execute(step)
            if after is not None:
                after(self, out)

    def execute(self, step: Step) -> str:
        if step.name == "serve":
            assert step.body.strip() == "kmipfast serve --listen 0.0.0.0:5696", step.body
            self.server.start()
            return ""
        done = run_step(step, self.cwd, self.server.data_dir)
        self.outputs[step.name] = done
        return done.stdout

    def ca(self) -> str:
        return self.server.ca_cert


@pytest.fixture
def guide(tmp_path: Path) -> Iterator[Guide]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet")
    cwd = tmp_path / "operator"
    cwd.mkdir()
    server = KmipServer(tmp_path / "kms-data")
    try:
        yield Guide(server, cwd)
    finally:
        server.stop()


def _uids(text: str) -> list[str]:
    return [ln.split("\t")[0] for ln in text.splitlines() if ln.strip()]


# -- docs/vcenter.md ---------------------------------------------------------------------------
def test_vcenter_guide(guide: Guide) -> None:
    g = guide
    s = g.state

    def own_certificate(g: Guide) -> None:
        own = self_signed_client(g.cwd / "vcenter-side", "vcenter.example.com")
        (g.cwd / "vcenter.crt").write_bytes(Path(own.cert).read_bytes())
        s["own"] = ClientBundle(own.name, own.cert, own.key, g.ca())

    def csr(g: Guide) -> None:
        _, key = csr_for(g.cwd, "vcenter")
        s["csr_key"] = key

    def csr_admitted(g: Guide, out: str) -> None:
        ca = g.cwd / "ca.crt"
        assert ca.is_file(), "sign-csr did not write ca.crt beside the certificate"
        s["vc"] = ClientBundle("vcenter-csr", str(g.cwd / "vcenter-signed.crt"),
                               str(s["csr_key"]), str(ca))  # fmt: skip
        admitted(g.server, s["vc"]).close()

    def stranger(g: Guide) -> None:
        unknown = self_signed_client(g.cwd / "stranger", "stranger.example.com")
        assert is_refused(g.server, ClientBundle(unknown.name, unknown.cert, unknown.key, g.ca()))

    def vm_keys_made(g: Guide) -> None:
        s["made"] = replay_vcenter(g.server, s["vc"])

    def vm_keys_listed(g: Guide, out: str) -> None:
        vm = {u for u, ident in s["made"].items() if ident == VM_ID}
        lines = out.splitlines()
        assert vm and vm <= set(_uids("\n".join(ln for ln in lines if "\t" in ln)))
        rows = json.loads(out[out.index("[") :])
        assert {r["uid"] for r in rows} == vm

    def still_served(g: Guide, out: str) -> None:
        with admitted(g.server, s["vc"]) as conn:
            for uid in s["made"]:
                assert key_material(conn.ok(Operation.Get, uid_payload(uid)))

    def vm_cut_off(g: Guide, out: str) -> None:
        with admitted(g.server, s["vc"]) as conn:
            for uid, ident in s["made"].items():
                got = conn.call(Operation.Get, uid_payload(uid))
                if ident == VM_ID:
                    got.expect_failure(ResultReason.ItemNotFound)
                else:
                    got.expect_success()

    def removed_vm(g: Guide) -> None:
        with admitted(g.server, s["vc"]) as conn:
            s["orphan"] = vcenter_key(conn, "42260000-dead-beef-0000-000000000001", "old-vm")
        (g.cwd / "inventory.csv").write_text(f'"id"\n"{VM_ID}"\n"{HOST_ID}"\n')

    def orphan_listed(g: Guide, out: str) -> None:
        rows = [ln.split("\t") for ln in out.splitlines()]
        assert [(r[0], r[3]) for r in rows] == [(s["orphan"], "old-vm")]

    def orphan_gone(g: Guide, out: str) -> None:
        with admitted(g.server, s["vc"]) as conn:
            conn.call(Operation.Get, uid_payload(s["orphan"])).expect_failure(
                ResultReason.ItemNotFound
            )
            host = [u for u, ident in s["made"].items() if ident == HOST_ID]
            assert key_material(conn.ok(Operation.Get, uid_payload(host[0])))

    def tkp_key(g: Guide, out: str) -> None:
        uid = out.strip()
        assert UUID.match(uid), out
        s["tkp"] = uid

    def hosts_ca(g: Guide) -> None:
        ca, ca_key = pki.create_ca("Trust Authority hosts CA")
        pki.write_certs(g.cwd / "trusted-hosts-ca.pem", ca)
        for cn in ("esx01.example.com", "web.example.org"):
            cert, key = pki.issue_client_cert(ca, ca_key, cn)
            pki.write_certs(g.cwd / f"{cn}.crt", cert)
            pki.write_private_key(g.cwd / f"{cn}.key", key)

    def host_fetches_tkp_key(g: Guide, out: str) -> None:
        def bundle(cn: str) -> ClientBundle:
            return ClientBundle(cn, str(g.cwd / f"{cn}.crt"), str(g.cwd / f"{cn}.key"), g.ca())

        with admitted(g.server, bundle("esx01.example.com")) as conn:
            assert key_material(conn.ok(Operation.Get, uid_payload(s["tkp"])))
        assert is_refused(g.server, bundle("web.example.org"))

    g.run(
        "vcenter.md",
        {
            "init": (None, None),
            "tenant": (None, lambda g, out: None),
            "serve": (None, None),
            "cert-show": (None, lambda g, out: _shows_ca(g, out)),
            "trust-vcenter-certificate": (
                own_certificate,
                lambda g, out: admitted(g.server, s["own"]).close(),
            ),
            "trust-issued-certificate": (
                None,
                lambda g, out: admitted(g.server, _bundle(g.cwd / "vcenter", "vcenter")).close(),
            ),
            "trust-csr": (csr, csr_admitted),
            "refused": (stranger, lambda g, out: _names(out, "stranger.example.com")),
            "list-vm-keys": (vm_keys_made, vm_keys_listed),
            "show-key": (None, lambda g, out: _names(out, "state: Active", "x-Name: test01")),
            "rotate": (None, still_served),
            "remove-vm": (None, vm_cut_off),
            "orphans-list": (removed_vm, orphan_listed),
            "orphans-destroy": (None, orphan_gone),
            "tkp-key": (None, tkp_key),
            "trust-hosts-ca": (hosts_ca, host_fetches_tkp_key),
        },
    )


def _bundle(directory: Path, name: str) -> ClientBundle:
    return ClientBundle(
        name, str(directory / f"{name}.crt"), str(directory / f"{name}.key"),
        str(directory / "ca.crt"),
    )  # fmt: skip


def _names(out: str, *needles: str) -> None:
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"


def _shows_ca(g: Guide, out: str) -> None:
    ca = Path(g.ca()).read_text().strip()
    assert ca in out, "server cert show does not print the CA clients must trust"
    assert SERVER_NAME in out and "192.0.2.10" in out


# -- docs/storage-array.md -----------------------------------------------------------------
def test_storage_array_guide(guide: Guide) -> None:
    g = guide
    s = g.state

    def array_csr(g: Guide) -> None:
        weak, _ = csr_for(g.cwd, "weak-array", bits=1024)
        s["weak"] = weak
        _, key = csr_for(g.cwd, "array1")
        s["key"] = key

    def array_admitted(g: Guide, out: str) -> None:
        s["array"] = ClientBundle("array1", str(g.cwd / "array1.crt"), str(s["key"]),
                                  str(g.cwd / "ca.crt"))  # fmt: skip
        admitted(g.server, s["array"]).close()
        # A weak CSR is refused in one line, and nothing is allowed.
        weak = g.server.run_cli("client", "sign-csr", str(s["weak"]), "--tenant", "array1",
                                "--out", str(g.cwd / "weak.crt"), check=False)  # fmt: skip
        assert weak.returncode != 0 and len(weak.stderr.strip().splitlines()) == 1
        assert not (g.cwd / "weak.crt").exists()

    def array_makes_keys(g: Guide) -> None:
        made = []
        with admitted(g.server, s["array"]) as conn:
            for _ in range(3):
                uid = str(
                    value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
                )
                conn.ok(Operation.Activate, uid_payload(uid))
                made.append(uid)
        s["keys"] = made

    def listed(g: Guide, out: str) -> None:
        assert set(s["keys"]) <= set(_uids(out[: out.index("[")]))
        assert {r["uid"] for r in json.loads(out[out.index("[") :])} == set(s["keys"])

    def array_rekeys(g: Guide) -> None:
        new = []
        with admitted(g.server, s["array"]) as conn:
            for uid in s["keys"]:
                got = conn.ok(Operation.ReKey, uid_payload(uid))
                replacement = str(value(got, Tag.UniqueIdentifier))
                reason = kmipclient.struct_of(Tag.RevocationReason, [(
                    int(Tag.RevocationReasonCode), int(ItemType.Enumeration),
                    int(RevocationReasonCode.Superseded),
                )])  # fmt: skip
                conn.ok(Operation.Revoke, [*uid_payload(uid), reason])
                new.append(replacement)
        s["old"], s["keys"] = s["keys"], new

    def rekeyed(g: Guide, out: str) -> None:
        # The block lists the active keys, then those older than a year (none yet).
        assert set(_uids(out)) == set(s["keys"]), out

    def auditor(g: Guide) -> None:
        s["auditor"] = g.server.issue_client("auditor", "array1")
        s["auditor"] = ClientBundle(s["auditor"].name, s["auditor"].cert, s["auditor"].key,
                                    s["auditor"].ca)  # fmt: skip

    def retired(g: Guide, out: str) -> None:
        # The last command of the block lists the tenant's keys (seven columns).
        rows = [r for r in (ln.split("\t") for ln in out.splitlines()) if len(r) == 7]
        assert {r[0] for r in rows} == {*s["keys"], *s["old"]}, out
        assert all(r[3] == "Destroyed" for r in rows), out
        assert is_refused(g.server, s["array"])
        with admitted(g.server, s["auditor"]) as conn:
            for uid in [*s["keys"], *s["old"]]:
                conn.call(Operation.Get, uid_payload(uid)).expect_failure(ResultReason.ItemNotFound)
                assert state_of(conn, uid) == State.Destroyed

    g.run(
        "storage-array.md",
        {
            "init": (None, None),
            "serve": (None, None),
            "sign-csr": (array_csr, array_admitted),
            "cert-show": (None, lambda g, out: _shows_ca(g, out)),
            "refused": (None, None),
            "list-keys": (array_makes_keys, listed),
            "show-key": (None, lambda g, out: _names(out, "state: Active", "tenant: array1")),
            "rekey": (array_rekeys, rekeyed),
            "rotate-root": (None, None),
            "retire": (auditor, retired),
        },
    )
