"""kmipfast audit ...: verify, read and checkpoint the tamper-evident audit log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from kmipfast import auditchain, shredcert
from kmipfast.app import runtime
from kmipfast.cli.common import Add, CliError, _config, _run
from kmipfast.config import Config


def _trusted_keys(args: argparse.Namespace, config: Config | None) -> dict[str, Any]:
    if args.public_key:
        paths = [Path(p) for p in args.public_key]
    elif config is not None and (config.data_dir / auditchain.PUBLIC_KEY_FILE).exists():
        paths = [config.data_dir / auditchain.PUBLIC_KEY_FILE]
    else:
        return {}
    try:
        return auditchain.load_public_keys(paths)
    except auditchain.AuditChainError as e:
        raise CliError(str(e)) from None


def _log_files(args: argparse.Namespace) -> tuple[list[Path], Config | None]:
    """The files named on the command line, else the data dir's log files, oldest first."""
    config = None if args.files and args.public_key else _config(args)
    if args.files:
        files = [Path(f) for f in args.files]
        for f in files:
            if not f.is_file():
                raise CliError(f"no audit log file {f}")
        return files, config
    assert config is not None
    files = auditchain.log_files(config.audit_path)
    if not files:
        raise CliError(f"no audit log at {config.audit_path}")
    return files, config


def cmd_audit_verify(args: argparse.Namespace) -> int:
    files, config = _log_files(args)
    keys = _trusted_keys(args, config)
    try:
        report = auditchain.verify(files, keys, from_genesis=not args.files)
    except auditchain.AuditChainError as e:
        raise CliError(str(e)) from None
    if report.problem is not None:
        hint = "" if keys else (f" (no trusted public key: pass --public-key or keep "
                                f"{auditchain.PUBLIC_KEY_FILE} in the data dir)")  # fmt: skip
        raise CliError(f"audit log NOT intact: {report.problem}{hint}")
    span = "empty" if report.first_seq is None else f"seq {report.first_seq}-{report.last_seq}"
    print(f"audit log intact: {report.lines} lines in {report.files} file(s), {span}, "
          f"head {report.head}")  # fmt: skip
    if report.last_checkpoint_seq is None:
        print("no signed checkpoint yet: nothing is signed by the HSM")
    else:
        print(f"{report.checkpoints} signed checkpoint(s) verified; the last signs the chain "
              f"up to seq {report.last_checkpoint_seq}; {report.unsigned} line(s) after it "
              "not signed yet")  # fmt: skip
    return 0


def cmd_audit_verify_shred(args: argparse.Namespace) -> int:
    path = Path(args.certificate)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    args.files = args.audit_log
    files, config = _log_files(args)
    keys = _trusted_keys(args, config)
    if not keys:
        raise CliError(f"no trusted audit public key: pass --public-key or keep "
                       f"{auditchain.PUBLIC_KEY_FILE} in the data dir")  # fmt: skip
    try:
        v = shredcert.verify(data, keys, files)
    except auditchain.AuditChainError as e:
        raise CliError(f"shred certificate NOT valid: {e}") from None
    print(f"shred certificate valid: tenant {v.tenant}, root key {v.root_label} destroyed "
          f"{v.time}; {v.keys} key(s) unrecoverable (uid list sha256 {v.uid_list_sha256}); "
          f"recorded in the audit chain at seq {v.audit_seq} "
          f"({v.audit_file}:{v.audit_line})")  # fmt: skip
    return 0


_COLUMNS = ("client", "operation", "action", "reason", "uid", "result")


def _show(raw: bytes, args: argparse.Namespace) -> None:
    try:
        event = json.loads(raw)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        if args.tenant is None:
            print(raw.decode(errors="replace") if args.json else f"?? {raw[:80]!r}")
        return
    if args.tenant is not None and event.get("tenant") != args.tenant:
        return
    if args.json:
        print(raw.decode())
        return
    parts = [str(event.get("time", "")), f"#{event.get('seq', '?')}", str(event.get("kind", "?"))]
    if event.get("tenant") is not None:
        parts.append(f"tenant={event['tenant']}")
    parts += [f"{k}={event[k]}" for k in _COLUMNS if event.get(k) is not None]
    if event.get("kind") == "checkpoint":
        parts.append(f"head_seq={event.get('head_seq')}")
    print("  ".join(parts))


def cmd_audit_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise CliError("-n must be 0 or more")
    config = _config(args)
    path = config.audit_path
    files = auditchain.log_files(path)
    if not files and not args.follow:
        raise CliError(f"no audit log at {path}")
    # Newest file first, until N lines are found; a line still being written (no
    # newline yet) is left to --follow.
    shown: list[bytes] = []
    pos = 0
    for i, p in enumerate(reversed(files)):
        with open(p, "rb") as f:
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        if i == 0 and p == path:
            pos = len(complete)
        if args.lines:
            lines = [raw for raw in complete.splitlines()
                     if args.tenant is None or _mentions(raw, args.tenant)]  # fmt: skip
            shown[:0] = lines[-(args.lines - len(shown)) :]
        if len(shown) >= args.lines:
            break
    for raw in shown:
        _show(raw, args)
    if args.follow:
        _follow(path, pos, args)
    return 0


def _mentions(raw: bytes, tenant: str) -> bool:
    # Cheap pre-filter; _show checks the field itself.
    return json.dumps(tenant).encode() in raw


def _follow(path: Path, pos: int, args: argparse.Namespace) -> None:
    """Prints lines as they are appended, across rotations, until interrupted."""
    f = None
    ino = None
    buf = b""

    def show(chunk: bytes) -> None:
        nonlocal buf
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            _show(raw, args)
        print(end="", flush=True)

    while True:
        if f is None:
            try:
                f = open(path, "rb")  # noqa: SIM115 (kept open across iterations)
            except FileNotFoundError:
                time.sleep(0.2)
                continue
            ino = os.fstat(f.fileno()).st_ino
            f.seek(pos)
        chunk = f.read()
        if chunk:
            show(chunk)
            continue
        try:
            rotated = os.stat(path).st_ino != ino
        except FileNotFoundError:
            rotated = True
        if rotated:
            show(f.read())  # what was appended before the rename
            f.close()
            # Files rotated out since (several rotations between two polls).
            for newer in _rotated_after(path, ino):
                with contextlib.suppress(FileNotFoundError):
                    show(newer.read_bytes())
            f, pos, buf = None, 0, b""
            continue
        time.sleep(0.2)


def _rotated_after(path: Path, ino: int | None) -> list[Path]:
    """The rotated files newer than the one with inode ``ino``, oldest first."""
    rotated = auditchain.rotated_files(path)
    for i, p in enumerate(rotated):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_ino == ino:
                return rotated[i + 1 :]
    return []


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args)) as rt:
            audit = rt.services.audit
            if audit.signer is None:
                raise CliError("no audit signing key available")
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(rt.executor, audit.checkpoint):
                raise CliError("no checkpoint written: the audit log is empty or the "
                               "signing key is unavailable (see the audit log)")  # fmt: skip
            seq, head = audit.head()
            print(f"checkpoint signed: audit chain line {seq}, head {head}")
            return 0

    return _run(go())


def _public_key_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--public-key", action="append", metavar="PEM",
                    help=f"trusted audit public key (default: {auditchain.PUBLIC_KEY_FILE} "
                         "in the data dir); repeatable")  # fmt: skip


def register(sub: Any, add: Add) -> None:
    audit = sub.add_parser("audit", help="verify and read the audit log").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(audit, "verify", cmd_audit_verify,
             "check the hash chain and signed checkpoints of the audit log")  # fmt: skip
    sp.add_argument("files", nargs="*", metavar="FILE",
                    help="log files, oldest first (default: the data dir's, rotated "
                         "ones first)")  # fmt: skip
    _public_key_option(sp)
    sp = add(audit, "verify-shred", cmd_audit_verify_shred,
             "check a shred certificate's signature and its line in the audit chain")  # fmt: skip
    sp.add_argument("certificate", metavar="FILE")
    sp.add_argument("--audit-log", action="append", metavar="FILE",
                    help="audit log files, oldest first (default: the data dir's); "
                         "repeatable")  # fmt: skip
    _public_key_option(sp)
    sp = add(audit, "tail", cmd_audit_tail, "print the last lines of the audit log")
    sp.add_argument("-n", dest="lines", type=int, default=10, help="how many (default 10)")
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    sp.add_argument("--tenant", help="only lines of this tenant")
    sp.add_argument("--json", action="store_true", help="the raw JSON lines")
    add(audit, "checkpoint", cmd_audit_checkpoint, "sign the audit chain head now (in the HSM)")
