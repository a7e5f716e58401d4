"""The audit log's hash chain without a server (issue #10, DESIGN §7 audit): what
AuditLog writes, and what :func:`kmipfast.auditchain.verify` finds when lines are
edited, removed, swapped, or re-chained without the signing key.

Checkpoints here are signed with the development software root's key file; the HSM key
is exercised by the live tests (test_audit_live.py)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kmipfast import auditchain
from kmipfast.audit import AuditLog
from kmipfast.keys.hierarchy import SoftwareRoot
from kmipfast.protocol.enums import Operation, ResultReason, ResultStatus
from kmipfast.protocol.messages import ResponseItem
from kmipfast.protocol.processor import Session


@pytest.fixture
def signer(tmp_path: Path) -> auditchain.Signer:
    return auditchain.Signer(SoftwareRoot(tmp_path / "dev-root"), tmp_path / "audit-key.pem")


def _keys(tmp_path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    return auditchain.load_public_keys([tmp_path / "audit-key.pem"])


def _write_log(path: Path, n: int, signer: auditchain.Signer | None = None) -> None:
    log = AuditLog(path, signer=signer)
    for i in range(n):
        log.admin("test line", tenant="t", i=i)
        if signer is not None and i % 10 == 9:
            log.checkpoint()
    log.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _put(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What a rewriter without the signing key can do: recompute seq/prev from ``start``."""
    out = lines[:start]
    for raw in lines[start:]:
        event = json.loads(raw)
        event["seq"] = json.loads(out[-1])["seq"] + 1 if out else 0
        event["prev"] = hashlib.sha256(out[-1]).hexdigest() if out else auditchain.GENESIS
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def test_lines_carry_seq_prev_and_the_old_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.refusal("unknown", fingerprint="ab", peer="127.0.0.1:1")
    log.admin("client removed", client="c")
    log.close()
    lines = _lines(path)
    first, second = (json.loads(line) for line in lines)
    assert first["seq"] == 0 and first["prev"] == auditchain.GENESIS
    assert first["kind"] == "refused" and first["reason"] == "unknown" and first["time"]
    assert second["seq"] == 1 and second["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert second["kind"] == "admin" and second["action"] == "client removed"
    report = auditchain.verify([path], {})
    assert report.problem is None and report.lines == 2


@pytest.mark.parametrize(
    ("uid", "reason"),
    [("7f0c-uid", None), (None, ResultReason.ItemNotFound), ('q"uo\\te\u00e9\n', 0x1234)],
)
def test_operation_lines_are_the_events_write_would_make(
    tmp_path: Path, uid: str | None, reason: int | None
) -> None:
    """KMIP lines are formatted directly (the per-request path), not through write():
    the line must be the same JSON, fields in the same order, escapes included."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    session = Session('vc"enter', "tenant-\u00e9", "fp", peer="10.0.0.1:5000")
    status = ResultStatus.Success if reason is None else ResultStatus.OperationFailed
    result = ResponseItem(operation=Operation.Get, batch_id=None, status=status, reason=reason)
    log.answered(session, Operation.Get, uid, result)
    log.answered(session, 0x7777, uid, result)  # an operation this server does not know
    log.close()
    lines = [json.loads(line) for line in _lines(path)]
    for line, op in zip(lines, ["Get", "0x00007777"], strict=True):
        expected = {
            "kind": "kmip",
            "client": 'vc"enter',
            "tenant": "tenant-\u00e9",
            "peer": "10.0.0.1:5000",
            "operation": op,
            "uid": uid,
            "result": "Success" if reason is None else "OperationFailed",
        }
        if reason is not None:
            expected["reason"] = (
                "ItemNotFound" if reason == ResultReason.ItemNotFound else "0x00001234"
            )
        expected["time"] = line["time"]
        del line["seq"], line["prev"]
        assert list(line.items()) == list(expected.items())
    assert auditchain.verify([path], {}).problem is None


def test_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 5)
    _write_log(path, 5)
    seqs = [json.loads(line)["seq"] for line in _lines(path)]
    assert seqs == list(range(10))
    assert auditchain.verify([path], {}).problem is None


def test_rotation_continues_the_chain_into_numbered_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=4096)
    for i in range(200):
        log.admin("rotating", i=i, pad="x" * 40)
        if i % 20 == 19:
            log.sync()  # a batch per 20 lines: rotation happens between batches
    log.close()
    files = auditchain.log_files(path)
    assert len(files) >= 3
    assert files[0].name == "audit.log.1" and files[-1] == path
    report = auditchain.verify(files, {})
    assert report.problem is None and report.lines == 200
    # Each file's first line chains to the previous file's last line.
    for older, newer in itertools.pairwise(files):
        assert json.loads(_lines(newer)[0])["prev"] == hashlib.sha256(_lines(older)[-1]).hexdigest()
    # A missing older file is named, not silently accepted.
    report = auditchain.verify(files[1:], {})
    assert report.problem is not None and "genesis" in report.problem.message
    assert auditchain.verify(files[1:], {}, from_genesis=False).problem is None


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    """A server and an administrative command (or two workers) append to the same log:
    the file lock makes each batch continue the chain the other left."""
    path = tmp_path / "audit.log"
    a, b = AuditLog(path, max_bytes=8192), AuditLog(path, max_bytes=8192)

    def run(log: AuditLog, name: str) -> None:
        for i in range(300):
            log.admin("writer", who=name, i=i)
            if i % 7 == 0:
                log.sync()

    threads = [threading.Thread(target=run, args=(log, n)) for log, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    report = auditchain.verify(auditchain.log_files(path), {})
    assert report.problem is None, str(report.problem)
    assert report.lines == 600


def test_torn_last_line_is_cut_and_the_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"prev":"ab')  # a crash in the middle of a write
    _write_log(path, 2)
    assert [json.loads(line)["seq"] for line in _lines(path)] == [0, 1, 2, 3, 4]
    assert auditchain.verify([path], {}).problem is None


@pytest.mark.parametrize("index", [0, 7, 18])
@pytest.mark.parametrize("change", ["edit", "delete", "swap", "garble"])
def test_tampered_line_is_named(tmp_path: Path, change: str, index: int) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 20)
    lines = _lines(path)
    if change == "edit":
        lines[index] = lines[index].replace(b'"tenant":"t"', b'"tenant":"u"')
    elif change == "delete":
        del lines[index]
    elif change == "swap":
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
    else:
        lines[index] = lines[index][:-3]
    _put(path, lines)
    problem = auditchain.verify([path], {}).problem
    assert problem is not None
    assert (problem.file, problem.line) == (str(path), index + 1), str(problem)


def test_edited_prev_field_names_that_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 10)
    lines = _lines(path)
    event = json.loads(lines[4])
    event["prev"] = "f" * 64
    lines[4] = json.dumps(event, separators=(",", ":")).encode()
    _put(path, lines)
    problem = auditchain.verify([path], {}).problem
    assert problem is not None and problem.line == 5, str(problem)


def test_checkpoints_verify_with_the_published_key(
    tmp_path: Path, signer: auditchain.Signer
) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 30, signer)
    report = auditchain.verify([path], _keys(tmp_path))
    assert report.problem is None
    assert report.checkpoints == 3
    # Without the key, a checkpoint cannot be checked: that is a failure, not a pass.
    problem = auditchain.verify([path], {}).problem
    assert problem is not None and "not a trusted audit key" in problem.message


def test_rechained_log_fails_at_the_next_checkpoint(
    tmp_path: Path, signer: auditchain.Signer
) -> None:
    """Editing a line and recomputing every later seq/prev makes a consistent chain, but
    the next checkpoint's signed head no longer matches."""
    path = tmp_path / "audit.log"
    _write_log(path, 30, signer)
    lines = _lines(path)
    lines[3] = lines[3].replace(b'"i":3', b'"i":4')
    _put(path, _rechain(lines, 3))
    problem = auditchain.verify([path], _keys(tmp_path)).problem
    assert problem is not None
    checkpoint_at = next(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    assert problem.line == checkpoint_at + 1 and "checkpoint" in problem.message, str(problem)


def test_checkpoint_with_a_bad_signature_fails(tmp_path: Path, signer: auditchain.Signer) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 30, signer)
    lines = _lines(path)
    at = next(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    event = json.loads(lines[at])
    sig = bytearray(base64.b64decode(event["sig"]))
    sig[10] ^= 1
    event["sig"] = base64.b64encode(bytes(sig)).decode()
    lines[at] = json.dumps(event, separators=(",", ":")).encode()
    _put(path, _rechain(lines, at))
    problem = auditchain.verify([path], _keys(tmp_path)).problem
    assert problem is not None and problem.line == at + 1
    assert "signature does not verify" in problem.message


def test_checkpoint_signed_by_another_key_fails(tmp_path: Path, signer: auditchain.Signer) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 30, signer)
    lines = _lines(path)
    at = next(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    event = json.loads(lines[at])
    forger = auditchain.Signer(SoftwareRoot(tmp_path / "forger"), tmp_path / "forger.pem")
    event["key"], event["sig"] = forger.sign(
        auditchain.checkpoint_digest(event["head_seq"], event["head"])
    )
    lines[at] = json.dumps(event, separators=(",", ":")).encode()
    _put(path, _rechain(lines, at))
    problem = auditchain.verify([path], _keys(tmp_path)).problem
    assert problem is not None and "not a trusted audit key" in problem.message
    # Trusting the forger's key instead shows that the signature itself is fine.
    forged = auditchain.load_public_keys([tmp_path / "forger.pem"])
    assert auditchain.verify([path], forged).problem is not None  # the other checkpoints


def test_periodic_checkpoints_are_written_by_the_log_itself(
    tmp_path: Path, signer: auditchain.Signer
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, signer=signer, checkpoint_interval=0.2)
    log.admin("before")
    deadline = time.monotonic() + 5.0
    while b'"kind":"checkpoint"' not in path.read_bytes():
        assert time.monotonic() < deadline, "no checkpoint within 5 s"
        time.sleep(0.05)
    log.close()
    report = auditchain.verify([path], _keys(tmp_path))
    assert report.problem is None and report.checkpoints >= 1
