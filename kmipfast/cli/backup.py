"""kmipfast backup / restore: the store (and allowed client certificates) to one file and back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kmipfast import backup as bk
from kmipfast.audit import AuditLog
from kmipfast.auditchain import AuditChainError
from kmipfast.cli.common import Add, CliError, _config
from kmipfast.config import CONFIG_FILE, Config, data_dir_from
from kmipfast.store.base import open_store


@contextlib.contextmanager
def _progress_bar() -> Iterator[bk.Progress]:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    with Bar(console=Console(stderr=True), disable=not sys.stderr.isatty()) as bar:
        task: list[Any] = []  # the current phase's task id and total

        def phase(what: str, total: int) -> None:
            if task:  # the previous phase is done
                bar.update(task[0], completed=task[1])
            task[:] = [bar.add_task(what, total=total), total]

        yield bk.Progress(phase=phase, advance=lambda n: bar.advance(task[0], n))


def _audit(config: Config, action: str, **fields: Any) -> None:
    """One administrative audit line, after the fact.  The work is done by then: an audit
    log that cannot be written is reported, not turned into a failed backup or restore.
    (Unsigned: neither command opens the HSM.)"""
    try:
        audit = AuditLog(config.audit_path, max_bytes=config.audit.max_bytes)
        try:
            audit.admin(action, **fields)
        finally:
            audit.close()
    except (OSError, AuditChainError) as e:
        print(f"warning: not written to the audit log: {e}", file=sys.stderr)


def _counts(counts: dict[str, int]) -> str:
    return (
        f"{counts['tenants']} tenants, {counts['clients']} clients, {counts['objects']} objects, "
        f"{counts['files']} client certificates"
    )


def cmd_backup(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"{out} is a directory; --out names the backup file")

    async def go() -> bk.Summary:
        options = {"group_commit_max": config.store.group_commit_max}
        async with open_store(config.store.url, config.data_dir, **options) as store:
            with _progress_bar() as progress:
                return await bk.backup(store, config.data_dir, out, progress)

    try:
        summary = asyncio.run(go())
    except bk.BackupError as e:
        raise CliError(str(e)) from None
    _audit(config, "store backed up", file=str(summary.path), sha256=summary.sha256,
           **summary.counts)  # fmt: skip
    for name in summary.missing_pems:
        print(f"warning: client {name} has no certificate file in the data dir; "
              "it is in the backup without one", file=sys.stderr)  # fmt: skip
    print(f"backup {summary.path}: {_counts(summary.counts)}")
    print(f"sha256 {summary.sha256}")
    print("it holds wrapped keys only: keep a backup of the HSM (its root keys) and of the "
          f"data dir's {CONFIG_FILE}, tls/ and HSM settings apart from it")  # fmt: skip
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args.data_dir)
    if not (data_dir / CONFIG_FILE).is_file():
        raise CliError(
            f"{data_dir} has no {CONFIG_FILE}: copy the backed-up server's config, tls/ and "
            "HSM settings there first (docs/backup.md)"
        )
    config = _config(args)
    path = Path(args.file)
    if args.verify_only:
        try:
            with _progress_bar() as progress:
                summary = bk.verify(path, progress)
        except bk.BackupError as e:
            raise CliError(str(e)) from None
        print(f"{path}: a good backup of {summary.created} (kmipfast {summary.kmipfast}): "
              f"{_counts(summary.counts)}")  # fmt: skip
        return 0

    async def go() -> bk.Summary:
        with _progress_bar() as progress:
            return await bk.restore_to_config(config, path, progress)

    try:
        summary = asyncio.run(go())
    except bk.BackupError as e:
        raise CliError(str(e)) from None
    _audit(config, "store restored", file=str(path.absolute()), created=summary.created,
           **summary.counts)  # fmt: skip
    print(f"restored {path} (taken {summary.created}): {_counts(summary.counts)}")
    print("next: kmipfast root status (every root key must be present in the HSM); "
          "kmipfast serve")  # fmt: skip
    return 0


def register(sub: Any, add: Add) -> None:
    sp = add(sub, "backup", cmd_backup,
             "a consistent snapshot of the store (wrapped keys only) to one file")  # fmt: skip
    sp.add_argument("--out", required=True, metavar="FILE",
                    help="backup file (written atomically, mode 0600)")  # fmt: skip
    sp = add(sub, "restore", cmd_restore, "restore a backup into an empty store")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--verify-only", action="store_true",
                    help="check the file (format, counts, SHA-256) and write nothing")  # fmt: skip
