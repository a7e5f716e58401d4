"""The tamper-evident audit log and the shred certificate with a live server, the real
CLI and a SoftHSM2 token (issue #10, DESIGN §7 audit, §3 crypto-shredding).

One scenario, built once for the module: a server whose log rotates at 4 KiB and
checkpoints every half second serves KMIP traffic, is restarted, serves more, gets a
second tenant whose keys are then shredded (``root shred --certificate-out``), and is
stopped.  The tests check the untouched log and certificate, then copies of them with
single lines or bytes changed.  Key material is never printed; the audit log carries
none (tests/server/test_isolation.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmipfast import auditchain, shredcert
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.tags import Tag
from tests.server.harness import (
    POLL_INTERVAL,
    KmipServer,
    connect_when_admitted,
    server_available,
    start_server,
)
from tests.server.kmipclient import Conn, create_aes_payload, uid_payload

pytestmark = pytest.mark.server

SHREDDED_KEYS = 3


@dataclass
class Scenario:
    server: KmipServer
    certificate: Path
    public_key: Path

    @property
    def log(self) -> Path:
        return self.server.data_dir / "audit.log"

    def files(self) -> list[Path]:
        return auditchain.log_files(self.log)


def _set_config(server: KmipServer, section: str, key: str, value: str) -> None:
    path = server.data_dir / "kmipfast.toml"
    text = path.read_text()
    head = text.index(f"[{section}]")
    start = text.index(f"\n{key} = ", head) + 1
    end = text.index("\n", start)
    path.write_text(text[:start] + f"{key} = {value}" + text[end:])


def _poll(check: object, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not check():  # type: ignore[operator]
        if time.monotonic() >= end:
            raise AssertionError(f"{what} not within {deadline} s")
        time.sleep(POLL_INTERVAL)


def _traffic(server: KmipServer, conn: Conn, n: int) -> None:
    """``n`` Creates and Gets; returns once their audit lines are in the file."""
    uids = []
    for _ in range(n):
        uids.append(
            ttlv.value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        )
    for uid in uids:
        conn.ok(Operation.Get, uid_payload(uid))
    last = json.dumps(uids[-1]).encode()
    files = lambda: auditchain.log_files(server.data_dir / "audit.log")  # noqa: E731
    # The last key's Create and Get lines.
    _poll(
        lambda: sum(p.read_bytes().count(last) for p in files()) >= 2,
        10.0,
        "the audit lines of the traffic",
    )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    root = tmp_path_factory.mktemp("audit")
    server = KmipServer(root / "data")
    server.data_dir.mkdir(parents=True)
    server.init()
    _set_config(server, "audit", "max_bytes", "4096")
    _set_config(server, "audit", "checkpoint_interval", "0.5")
    server.client = server.issue_client("tests", "default")
    server.start()
    try:
        with server.connect() as conn:
            for _ in range(3):
                _traffic(server, conn, 12)
        _poll(
            lambda: any(
                b'"kind":"checkpoint"' in p.read_bytes()
                for p in auditchain.log_files(server.data_dir / "audit.log")
            ),
            10.0,
            "a periodic checkpoint",
        )
        server.restart()
        with server.connect() as conn:
            _traffic(server, conn, 12)
        server.run_cli("tenant", "create", "doomed")
        bundle = server.issue_client("doomed-client", "doomed")
        with connect_when_admitted(server, bundle) as conn:
            for _ in range(SHREDDED_KEYS):
                conn.ok(Operation.Create, create_aes_payload())
        certificate = root / "doomed.shred.json"
        out = server.run_cli(
            "root", "shred", "--tenant", "doomed", "--yes", "--certificate-out", str(certificate)
        )
        assert str(certificate) in out.stdout
        with server.connect() as conn:
            _traffic(server, conn, 4)
    except BaseException:
        server.kill9()
        raise
    server.stop()
    yield Scenario(server, certificate, server.data_dir / auditchain.PUBLIC_KEY_FILE)


def _copy(scenario: Scenario, into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, into / p.name)) for p in scenario.files()]


def _verify(scenario: Scenario, files: list[Path]) -> tuple[int, str]:
    done = scenario.server.run_cli(
        "audit", "verify", *map(str, files), "--public-key", str(scenario.public_key), check=False
    )
    return done.returncode, done.stdout + done.stderr


# -- the untouched log ----------------------------------------------------------------------
def test_untouched_log_verifies_across_restart_and_rotation(scenario: Scenario) -> None:
    files = scenario.files()
    assert len(files) >= 3, f"expected rotated files, got {[p.name for p in files]}"
    done = scenario.server.run_cli("audit", "verify")
    assert "audit log intact" in done.stdout
    lines = [json.loads(raw) for p in files for raw in p.read_bytes().splitlines()]
    assert [e["seq"] for e in lines] == list(range(len(lines)))
    kinds = {e["kind"] for e in lines}
    assert {"kmip", "admin", "checkpoint"} <= kinds
    # Checkpoints from before and after the restart, and the shutdown's own.
    checkpoints = [e for e in lines if e["kind"] == "checkpoint"]
    assert len(checkpoints) >= 3
    assert lines[-1]["kind"] == "checkpoint", "a graceful stop signs the head last"
    count = int(done.stdout.split(" signed checkpoint(s) verified")[0].rsplit("\n", 1)[-1])
    assert count == len(checkpoints)


def test_checkpoints_are_signed_by_the_hsm_key_and_verify_without_it(scenario: Scenario) -> None:
    keys = auditchain.load_public_keys([scenario.public_key])
    assert len(keys) == 1
    report = auditchain.verify(scenario.files(), keys)
    assert report.problem is None and report.checkpoints >= 3
    lines = [json.loads(raw) for p in scenario.files() for raw in p.read_bytes().splitlines()]
    assert {e["key"] for e in lines if e["kind"] == "checkpoint"} == set(keys)


# -- tampering ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["oldest", "newest"])
@pytest.mark.parametrize("change", ["edit", "delete", "swap"])
def test_changed_line_fails_audit_verify_and_is_named(
    scenario: Scenario, tmp_path: Path, change: str, where: str
) -> None:
    files = _copy(scenario, tmp_path)
    # The newest file may hold a line or two only: take the newest with a middle line.
    # (The very last line of a log has no successor; the stop's checkpoint signs it.)
    sizable = [p for p in files if len(p.read_bytes().splitlines()) >= 3]
    target = sizable[0] if where == "oldest" else sizable[-1]
    assert target != files[0] or where == "oldest"
    lines = target.read_bytes().splitlines()
    index = len(lines) // 2
    if change == "edit":
        event = json.loads(lines[index])
        event["time"] = "2020-01-01T00:00:00Z"
        lines[index] = json.dumps(event, separators=(",", ":")).encode()
    elif change == "delete":
        del lines[index]
    else:
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
    target.write_bytes(b"".join(line + b"\n" for line in lines))
    code, out = _verify(scenario, files)
    assert code != 0
    assert f"{target}:{index + 1}:" in out, out
    assert "Traceback" not in out
    # The untouched copies verify, so it is the change that is caught.
    pristine = _copy(scenario, tmp_path / "pristine")
    assert _verify(scenario, pristine)[0] == 0


def test_missing_rotated_file_fails(scenario: Scenario, tmp_path: Path) -> None:
    files = _copy(scenario, tmp_path)
    (tmp_path / "audit.log.1").unlink()
    done = scenario.server.run_cli(
        "audit", "verify", *map(str, files[1:]), "--public-key", str(scenario.public_key)
    )
    assert "intact" in done.stdout  # explicitly given files may start mid-chain ...
    data = tmp_path / "data"
    shutil.copytree(scenario.server.data_dir, data, ignore=shutil.ignore_patterns("hsm"))
    (data / "audit.log.1").unlink()
    failed = scenario.server.run_cli("--data-dir", str(data), "audit", "verify", check=False)
    assert failed.returncode != 0  # ... but the data dir's log must start at its genesis
    assert "genesis" in failed.stderr and "audit.log.2:1:" in failed.stderr


def test_rewritten_log_with_a_bad_checkpoint_signature_fails(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Whoever rewrites the log can recompute every seq and prev, but not the HSM's
    signature: a checkpoint whose signature was changed is named."""
    files = _copy(scenario, tmp_path)
    lines = [(p, raw) for p in files for raw in p.read_bytes().splitlines()]
    at = next(i for i, (_, raw) in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    event = json.loads(lines[at][1])
    sig = bytearray(base64.b64decode(event["sig"]))
    sig[-1] ^= 0x01
    event["sig"] = base64.b64encode(bytes(sig)).decode()
    lines[at] = (lines[at][0], json.dumps(event, separators=(",", ":")).encode())
    for i in range(at + 1, len(lines)):  # re-chain everything after it
        e = json.loads(lines[i][1])
        e["prev"] = hashlib.sha256(lines[i - 1][1]).hexdigest()
        lines[i] = (lines[i][0], json.dumps(e, separators=(",", ":")).encode())
    for p in files:
        p.write_bytes(b"".join(raw + b"\n" for q, raw in lines if q == p))
    number = sum(1 for q, _ in lines[: at + 1] if q == lines[at][0])
    code, out = _verify(scenario, files)
    assert code != 0
    assert f"{lines[at][0]}:{number}:" in out and "signature does not verify" in out, out


# -- shred certificate ----------------------------------------------------------------------
def test_shred_certificate_verifies(scenario: Scenario) -> None:
    done = scenario.server.run_cli("audit", "verify-shred", str(scenario.certificate))
    assert "shred certificate valid" in done.stdout and "tenant doomed" in done.stdout
    assert f"{SHREDDED_KEYS} key(s)" in done.stdout
    doc = json.loads(scenario.certificate.read_bytes())
    assert doc["tenant"] == "doomed" and doc["root_key"]["label"].startswith("kmipfast-root-doomed")
    # The HSM was asked after the destroy: the handle the key had, and its label, find nothing.
    confirmation = doc["hsm_confirmation"]
    assert doc["root_key"]["handles"], "the root key's handle was recorded"
    assert confirmation["lookup_after_destroy"] == {
        "handles_still_found": [],
        "label_still_found": 0,
    }
    assert confirmation["gone"] is True
    uids = Path(str(scenario.certificate) + ".uids").read_text().split("\n")
    assert len(uids) == SHREDDED_KEYS == doc["keys_unrecoverable"]["count"]
    assert (
        hashlib.sha256("\n".join(uids).encode()).hexdigest()
        == doc["keys_unrecoverable"]["uid_list_sha256"]
    )
    # The audit line it cites is the shred's.
    seq = doc["audit_chain"]["seq"]
    raw = next(
        raw
        for p in scenario.files()
        for raw in p.read_bytes().splitlines()
        if json.loads(raw)["seq"] == seq
    )
    assert hashlib.sha256(raw).hexdigest() == doc["audit_chain"]["hash"]
    assert json.loads(raw)["action"] == "tenant shredded"


def test_shred_certificate_changed_by_one_byte_does_not_verify(
    scenario: Scenario, tmp_path: Path
) -> None:
    data = scenario.certificate.read_bytes()
    keys = auditchain.load_public_keys([scenario.public_key])
    files = scenario.files()
    assert shredcert.verify(data, keys, files).tenant == "doomed"
    for i in range(len(data)):  # every byte position, through the library
        changed = bytearray(data)
        changed[i] ^= 0x01
        with pytest.raises(auditchain.AuditChainError):
            shredcert.verify(bytes(changed), keys, files)
    # And a few through the CLI: a digit of the key count, the signature, the tenant.
    for needle in (b'"count": 3', b'"value": "', b'"tenant": "doomed"'):
        at = data.index(needle) + len(needle) - 1
        changed = bytearray(data)
        changed[at] ^= 0x01
        forged = tmp_path / f"forged-{at}.json"
        forged.write_bytes(bytes(changed))
        done = scenario.server.run_cli("audit", "verify-shred", str(forged), check=False)
        assert done.returncode != 0 and "NOT valid" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_shred_certificate_needs_its_line_in_the_audit_chain(
    scenario: Scenario, tmp_path: Path
) -> None:
    files = _copy(scenario, tmp_path)
    for p in files:  # the shred line edited: the certificate no longer matches the chain
        lines = p.read_bytes().splitlines()
        if any(b'"tenant shredded"' in raw for raw in lines):
            lines = [raw.replace(b'"keys":3', b'"keys":2') for raw in lines]
            p.write_bytes(b"".join(raw + b"\n" for raw in lines))
    done = scenario.server.run_cli(
        "audit",
        "verify-shred",
        str(scenario.certificate),
        *[arg for p in files for arg in ("--audit-log", str(p))],
        check=False,
    )
    assert done.returncode != 0 and "NOT valid" in done.stderr, done.stderr


# -- reading --------------------------------------------------------------------------------
def test_audit_tail_reads_json_lines_and_filters_by_tenant(scenario: Scenario) -> None:
    done = scenario.server.run_cli("audit", "tail", "-n", "3", "--json")
    lines = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["kind"] == "checkpoint"
    doomed = scenario.server.run_cli("audit", "tail", "-n", "50", "--tenant", "doomed", "--json")
    events = [json.loads(raw) for raw in doomed.stdout.splitlines()]
    assert events and all(e["tenant"] == "doomed" for e in events)
    assert any(e.get("action") == "tenant shredded" for e in events)
    human = scenario.server.run_cli("audit", "tail", "-n", "2")
    assert len(human.stdout.splitlines()) == 2 and "checkpoint" in human.stdout


def test_audit_commands_answer_bad_input_in_one_line(scenario: Scenario, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-log"
    bad.write_text("hello\n")
    for args in (
        ("audit", "verify", str(tmp_path / "missing.log")),
        ("audit", "verify", str(bad), "--public-key", str(bad)),
        ("audit", "verify-shred", str(bad)),
        ("audit", "tail", "-n", "-1"),
    ):
        done = scenario.server.run_cli(*args, check=False)
        assert done.returncode != 0, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_workers_share_one_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --workers 2``: two processes (and the CLI) append to one log; each batch
    continues the chain the other left, through rotations and their own checkpoints."""
    if not server_available():
        pytest.skip("kmipfast.cli does not exist yet: no server to test")
    monkeypatch.setenv("KMIPFAST_SERVER_WORKERS", "2")
    monkeypatch.setenv("KMIPFAST_AUDIT_MAX_BYTES", "4096")
    monkeypatch.setenv("KMIPFAST_AUDIT_CHECKPOINT_INTERVAL", "0.3")
    server = start_server(tmp_path / "data")
    try:
        for _ in range(24):  # a new session each: the kernel spreads them over the workers
            with server.connect() as conn:
                conn.ok(Operation.Create, create_aes_payload())
        server.run_cli("tenant", "create", "meanwhile")
        for _ in range(24):
            with server.connect() as conn:
                conn.ok(Operation.Create, create_aes_payload())
    except BaseException:
        server.kill9()
        raise
    server.stop()
    done = server.run_cli("audit", "verify")
    assert "audit log intact" in done.stdout
    files = auditchain.log_files(server.data_dir / "audit.log")
    assert len(files) >= 2
    events = [json.loads(raw) for p in files for raw in p.read_bytes().splitlines()]
    assert sum(1 for e in events if e.get("operation") == "Create") == 48
    # Both workers signed the head when they stopped (and the CLI when it exited).
    assert sum(1 for e in events if e["kind"] == "checkpoint") >= 3
