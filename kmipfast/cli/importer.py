"""kmipfast import ...: move keys from another KMIP server, keeping their uids.

Parsing and printing only; the work is in :mod:`kmipfast.migrate`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kmipfast import migrate
from kmipfast.admin_keys import AdminError
from kmipfast.app import Runtime, runtime
from kmipfast.cli.common import DEFAULT_TENANT, Add, CliError, _config, _run


def cmd_import(args: argparse.Namespace) -> int:
    if (args.from_pykmip is None) == (args.from_kmip is None):
        raise CliError("name one source: --from-pykmip FILE or --from-kmip HOST:PORT")
    if args.from_kmip is not None:
        missing = [f"--{n}" for n in ("cert", "key", "ca") if getattr(args, n) is None]
        if missing:
            raise CliError(f"--from-kmip needs {', '.join(missing)} (the client's TLS files)")
        if (args.uids is None) == (not args.locate):
            raise CliError("with --from-kmip, name the objects: --uids FILE or --locate")
    elif args.uids or args.locate:
        raise CliError("--uids and --locate go with --from-kmip")

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            try:
                summary = await _import(rt, args)
            except AdminError as e:
                raise CliError(str(e)) from None
        for o in summary.outcomes:
            if o.result != "imported":
                print(f"{o.uid}\t{o.result}\t{o.reason}")
        if summary.stopped:
            raise CliError(
                f"{summary.stopped}; {summary.line()} so far — run the same command again "
                "to carry on"
            )
        print(f"import into tenant {args.tenant}: {summary.line()}", file=sys.stderr)
        return 1 if summary.of("failed") else 0

    return _run(go())


async def _import(rt: Runtime, args: argparse.Namespace) -> migrate.Summary:
    from kmipfast.admin_keys import require_tenant

    await require_tenant(rt, args.tenant)
    source: Iterator[migrate.SourceObject | migrate.Outcome]
    if args.from_pykmip is not None:
        db = migrate.PykmipDatabase(Path(args.from_pykmip))
        total = len(db.uids())
        source = db.objects()
        label = f"importing {args.from_pykmip}"
    else:
        kmip = migrate.KmipSource(args.from_kmip, args.cert, args.key, args.ca)
        try:
            await asyncio.to_thread(kmip.negotiate)
        except migrate.SourceError as e:
            raise AdminError(str(e)) from None
        if args.uids is not None:
            uids = migrate.read_uids(Path(args.uids))
        else:
            try:
                uids = await asyncio.to_thread(kmip.locate)
            except migrate.SourceError as e:
                raise AdminError(str(e)) from None
        total = len(uids)
        source = kmip.objects(uids)
        label = f"importing from {args.from_kmip}"
    from rich.progress import Progress as Bar

    with Bar(transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(label, total=total)
        return await migrate.run_import(rt, args.tenant, source, lambda: bar.advance(task))


def register(sub: Any, add: Add) -> None:
    sp = add(sub, "import", cmd_import, "import keys from another KMIP server, keeping uids")
    sp.add_argument("--tenant", default=DEFAULT_TENANT)
    sp.add_argument("--from-pykmip", metavar="FILE", help="a PyKMIP server's SQLite database")
    sp.add_argument("--from-kmip", metavar="HOST:PORT", help="a live KMIP server")
    sp.add_argument("--cert", help="client certificate for --from-kmip")
    sp.add_argument("--key", help="client private key for --from-kmip")
    sp.add_argument("--ca", help="CA that signed the source server's certificate")
    sp.add_argument("--uids", metavar="FILE", help="uids to import, one a line")
    sp.add_argument("--locate", action="store_true", help="import every object Locate finds")
