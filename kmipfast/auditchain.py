"""The audit log's hash chain: line format, log files, signing keys, verification.

Theory of operation.  Every audit line is one JSON object that begins with
``{"seq":N,"prev":"<hex>",`` followed by the event's own fields.  ``seq`` counts lines
from 0 over the whole life of the log (across restarts and rotated files) and ``prev``
is the SHA-256 of the previous line's exact bytes (without its newline); line 0 has
``prev`` = 64 zeros (genesis).  Editing, removing, inserting or swapping a line breaks
``seq`` or ``prev`` at or right after it.

Rotation renames ``audit.log`` to the next free ``audit.log.<n>`` (1, 2, ...: higher is
newer) and starts a new ``audit.log`` whose first line chains to the last line of the
rotated one, so the files read oldest first form one chain.

A rewriter could rebuild a consistent chain, so the chain head is signed now and then
with an ECDSA P-256 key held in the HSM (``checkpoint`` lines, part of the chain
themselves): ``head_seq``/``head`` name an earlier line and its hash and ``sig`` signs
them.  Verification needs only the public key (``audit-key.pem`` in the data dir; keep
a copy elsewhere, since whoever can rewrite the log can also replace that file).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

log = logging.getLogger("kmipfast.audit")

GENESIS = "0" * 64
SIGNING_KEY_LABEL = "kmipfast-audit-signing"
PUBLIC_KEY_FILE = "audit-key.pem"
_CHECKPOINT_CONTEXT = b"kmipfast/audit-checkpoint/v1\x00"
# Checkpoints refer back to recent lines; verification remembers this many hashes.
_RECENT = 1 << 20
_TAIL_CHUNK = 8192


class AuditChainError(Exception):
    """The audit log or a document cannot be read or checked (one line)."""


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def chained(seq: int, prev: str, body: str) -> str:
    """The line for event ``body`` (a compact, non-empty JSON object) at ``seq``."""
    return f'{{"seq":{seq},"prev":"{prev}",{body[1:]}'


# -- files ----------------------------------------------------------------------------------
def rotated_files(path: Path) -> list[Path]:
    """``path.1``, ``path.2``, ... that exist, oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)")
    found = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def log_files(path: Path) -> list[Path]:
    """Every file of the log, oldest first: the rotated ones, then ``path`` itself."""
    files = rotated_files(path)
    if path.exists():
        files.append(path)
    return files


def last_line(f: Any, size: int) -> bytes | None:
    """The last newline-terminated line of an open binary file of ``size`` bytes,
    without its newline; None if there is none."""
    end = size
    buf = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        f.seek(start)
        buf = f.read(end - start) + buf
        end = start
        # buf ends with "\n"; look for the newline before the last line.
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 : -1]
    return buf[:-1] if buf.endswith(b"\n") else None


def tail_of(line: bytes, where: str) -> tuple[int, str]:
    """``(seq, hash)`` of a chained line, to continue the chain after it."""
    try:
        seq = json.loads(line)["seq"]
        if not isinstance(seq, int) or seq < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise AuditChainError(f"{where}: the last line is not a chained audit line") from None
    return seq, line_hash(line)


# -- signing keys ---------------------------------------------------------------------------
@runtime_checkable
class SigningKeys(Protocol):
    """What holds the audit signing key: the HSM (``_native.Hsm``) or the software root."""

    def signing_public_key(self, label: str) -> bytes: ...
    def sign_digest(self, label: str, digest: bytes) -> bytes: ...


def public_key_of(point: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER), hex."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Signer:
    """Signs SHA-256 digests with the audit key in ``keys`` (HSM calls: run it off the
    event loop).  The public key is written to ``public_file`` the first time, so that
    verification needs no HSM."""

    def __init__(self, keys: SigningKeys, public_file: Path | None) -> None:
        self.keys = keys
        self.public_file = public_file
        self._public: ec.EllipticCurvePublicKey | None = None
        self.key_id = ""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public is None:
            key = public_key_of(self.keys.signing_public_key(SIGNING_KEY_LABEL))
            self.key_id = key_id(key)
            if self.public_file is not None:
                self._publish(key)
            self._public = key
        return self._public

    def _publish(self, key: ec.EllipticCurvePublicKey) -> None:
        assert self.public_file is not None
        pem = public_pem(key)
        try:
            known = self.public_file.read_bytes()
        except FileNotFoundError:
            tmp = self.public_file.with_name(self.public_file.name + ".tmp")
            tmp.write_bytes(pem)
            os.replace(tmp, self.public_file)
            return
        if pem not in known:
            # Kept as it is: it may be the copy an auditor trusts.  New checkpoints will
            # name a key it does not hold, and `audit verify` will say so.
            log.error(
                "the audit signing key in the HSM (%s) is not the one in %s",
                self.key_id,
                self.public_file,
            )

    def sign(self, digest: bytes) -> tuple[str, str]:
        """``(key_id, base64 signature r||s)`` over a 32-byte digest."""
        self.public_key()
        raw = self.keys.sign_digest(SIGNING_KEY_LABEL, digest)
        return self.key_id, base64.b64encode(raw).decode()


def verify_signature(key: ec.EllipticCurvePublicKey, digest: bytes, sig_b64: str) -> bool:
    try:
        raw = base64.b64decode(sig_b64, validate=True)
    except (ValueError, TypeError):
        return False
    # Only the one canonical encoding: unused low bits of the last character must not
    # give a second spelling of the same signature.
    if len(raw) != 64 or base64.b64encode(raw).decode() != sig_b64:
        return False
    der = utils.encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    try:
        key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def load_public_keys(paths: list[Path]) -> dict[str, ec.EllipticCurvePublicKey]:
    """Trusted audit keys by key id, from PEM files (several keys per file allowed)."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for path in paths:
        try:
            text = path.read_bytes()
        except OSError as e:
            raise AuditChainError(f"cannot read public key {path}: {e.strerror}") from None
        blocks = re.findall(
            rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", text, flags=re.S
        )
        if not blocks:
            raise AuditChainError(f"{path}: no PEM public key in it")
        for block in blocks:
            try:
                key = serialization.load_pem_public_key(block)
            except ValueError:
                raise AuditChainError(f"{path}: not a valid public key") from None
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise AuditChainError(f"{path}: not an EC public key")
            keys[key_id(key)] = key
    return keys


def checkpoint_digest(head_seq: int, head: str) -> bytes:
    return hashlib.sha256(_CHECKPOINT_CONTEXT + f"{head_seq}\x00{head}".encode()).digest()


# -- verification ---------------------------------------------------------------------------
@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


_PREV_MISMATCH = Problem("", 0, "prev mismatch")


@dataclass
class Report:
    lines: int = 0
    files: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = GENESIS
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None
    unsigned: int = 0  # lines (not counting checkpoints) after the last signed head
    problem: Problem | None = None
    # Where each seq was found, for the lines a shred certificate names.
    found: dict[int, tuple[str, str, int, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _Line:
    file: str
    number: int
    raw: bytes
    event: dict[str, Any] | None
    complete: bool = True  # ends with a newline


def _read_lines(paths: list[Path]) -> Iterator[_Line]:
    for path in paths:
        try:
            with open(path, "rb") as f:
                yield from _lines_of(f, str(path))
        except OSError as e:
            raise AuditChainError(f"cannot read {path}: {e.strerror}") from None


def _lines_of(f: IO[bytes], name: str) -> Iterator[_Line]:
    for number, raw in enumerate(f, start=1):
        complete = raw.endswith(b"\n")
        raw = raw.rstrip(b"\n")
        event: dict[str, Any] | None
        try:
            parsed = json.loads(raw) if complete else None
            event = parsed if isinstance(parsed, dict) else None
        except ValueError:
            event = None
        yield _Line(name, number, raw, event, complete)


def verify(
    paths: list[Path],
    keys: dict[str, ec.EllipticCurvePublicKey],
    *,
    from_genesis: bool = True,
    want: set[int] | None = None,
) -> Report:
    """Walks the chain through ``paths`` (oldest first) and stops at the first problem.

    With ``from_genesis`` the first line must be line 0; otherwise the chain may start
    anywhere (earlier files not given).  Lines whose seq is in ``want`` are recorded in
    ``report.found``."""
    report = Report(files=len(paths))
    recent: OrderedDict[int, str] = OrderedDict()
    before: _Line | None = None
    lines = _read_lines(paths)
    last_file = str(paths[-1]) if paths else ""
    for ln in lines:
        if not ln.complete and ln.file == last_file:
            break  # the end of a live log, still being written
        problem = _check(ln, before, report, recent, keys, from_genesis)
        if problem is _PREV_MISMATCH:
            # Either the line before was altered, or this line's own prev: if the next
            # line's prev does not match this line either, this one was altered.
            assert before is not None
            after = next(lines, None)
            if after is not None and (after.event or {}).get("prev") != line_hash(ln.raw):
                problem = Problem(ln.file, ln.number, "altered: its prev and its hash both "
                                  "disagree with the lines around it")  # fmt: skip
            else:
                problem = Problem(
                    before.file,
                    before.number,
                    "altered: its hash does not match the prev recorded by the next line "
                    f"({ln.file}:{ln.number})",
                )
        if problem is not None:
            report.problem = problem
            return report
        assert ln.event is not None
        seq = ln.event["seq"]
        digest = line_hash(ln.raw)
        if report.first_seq is None:
            report.first_seq = seq
        report.last_seq, report.head = seq, digest
        report.lines += 1
        if ln.event.get("kind") == "checkpoint":
            report.unsigned = seq - 1 - (report.last_checkpoint_seq or 0)
        else:
            report.unsigned += 1
        recent[seq] = digest
        if len(recent) > _RECENT:
            recent.popitem(last=False)
        if want is not None and seq in want:
            report.found[seq] = (ln.file, digest, ln.number, ln.event)
        before = ln
    return report


def _check(
    ln: _Line,
    before: _Line | None,
    report: Report,
    recent: OrderedDict[int, str],
    keys: dict[str, ec.EllipticCurvePublicKey],
    from_genesis: bool,
) -> Problem | None:
    here = Problem(ln.file, ln.number, "")
    e = ln.event
    if e is None or not isinstance(e.get("seq"), int) or not isinstance(e.get("prev"), str):
        here.message = "not a chained audit line (altered, truncated or inserted)"
        return here
    seq, prev = e["seq"], e["prev"]
    if before is None:
        if seq == 0 and prev == GENESIS:
            return None
        if from_genesis:
            here.message = (
                f"the chain starts at seq {seq}, not at its genesis: earlier lines or "
                "files are missing"
            )
            return here
        return None
    assert before.event is not None
    expected = before.event["seq"] + 1
    if seq != expected:
        if seq > expected:
            gap = seq - expected
            what = "line is" if gap == 1 else f"{gap} lines are"
            here.message = f"{what} missing before this one (seq {expected - 1} then {seq})"
        else:
            here.message = f"out of order: seq {seq} after seq {expected - 1} (lines swapped?)"
        return here
    if prev != report.head:
        return _PREV_MISMATCH
    if e.get("kind") == "checkpoint":
        return _check_checkpoint(here, e, recent, keys, report)
    return None


def _check_checkpoint(
    here: Problem,
    e: dict[str, Any],
    recent: OrderedDict[int, str],
    keys: dict[str, ec.EllipticCurvePublicKey],
    report: Report,
) -> Problem | None:
    head_seq, head, kid, sig = e.get("head_seq"), e.get("head"), e.get("key"), e.get("sig")
    if not (isinstance(head_seq, int) and isinstance(head, str) and isinstance(sig, str)):
        here.message = "checkpoint without head_seq, head and sig"
        return here
    if recent.get(head_seq) != head:
        here.message = f"checkpoint names seq {head_seq} with a hash that line does not have"
        return here
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        here.message = f"checkpoint signed by key {kid!r}, which is not a trusted audit key"
        return here
    if not verify_signature(key, checkpoint_digest(head_seq, head), sig):
        here.message = f"checkpoint signature does not verify (key {str(kid)[:16]}...)"
        return here
    report.checkpoints += 1
    report.last_checkpoint_seq = head_seq
    return None
