"""kmipfast root ...: tenant root keys in the HSM."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from kmipfast.app import runtime
from kmipfast.cli.common import Add, CliError, _config, _date, _run


# -- root keys ------------------------------------------------------------------------------
def cmd_root_rotate(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            keys = rt.services.keys
            rec = await rotation.rotate(keys, args.tenant, reencrypt=args.reencrypt)
            rt.services.audit.admin(
                "root key rotated", tenant=args.tenant, root=rec.root_label,
                generation=rec.master_key_version, reencrypt=args.reencrypt,
            )  # fmt: skip
            print(f"tenant {args.tenant}: root key is now {rec.root_label}")
            if args.reencrypt:
                moved = await _reencrypt_with_progress(keys, args.tenant)
                rt.services.audit.admin(
                    "master key re-encryption finished", tenant=args.tenant, objects=moved,
                    generation=rec.master_key_version,
                )  # fmt: skip
                print(f"tenant {args.tenant}: {moved} object keys moved to master key "
                      f"generation {rec.master_key_version}; the previous one is gone")  # fmt: skip
            return 0

    return _run(go())


async def _reencrypt_with_progress(keys: Any, tenant: str) -> int:
    from rich.progress import Progress as Bar

    from kmipfast.keys import rotation

    with Bar(transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"re-encrypting {tenant}", total=None)
        progress = rotation.Progress(
            start=lambda total: bar.update(task, total=total),
            advance=lambda n: bar.advance(task, n),
        )
        return int(await rotation.reencrypt_objects(keys, tenant, progress))


def cmd_root_shred(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    if not args.yes:
        raise CliError(f"shredding makes every key of tenant {args.tenant} unrecoverable; "
                       "add --yes to do it")  # fmt: skip

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            lagging = await rotation.shred(rt.services.keys, args.tenant)
            rt.services.audit.admin("tenant shredded", tenant=args.tenant)
            if lagging:
                raise CliError(
                    f"tenant {args.tenant} shredded, but server(s) {', '.join(lagging)} have "
                    "not confirmed dropping its master key yet"
                )
            print(f"tenant {args.tenant} shredded: its root key is destroyed and no server "
                  "holds its master key")  # fmt: skip
            return 0

    return _run(go())


def cmd_root_status(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            rows = await rotation.status(rt.services.keys, args.tenant)
            for r in rows:
                hsm = {True: "present", False: "MISSING", None: f"unknown ({r.hsm_error})"}
                state = "shredded" if r.shredded else f"master key generation {r.generation}"
                if r.reencrypting_from is not None:
                    state += (f", re-encrypting from generation {r.reencrypting_from} "
                              f"({r.objects_to_move} objects left)")  # fmt: skip
                print(f"{r.tenant}\troot key {r.root_label} ({hsm[r.root_present]})\t{state}\t"
                      f"created {_date(r.created)}\trotated {_date(r.rotated) or '-'}\t"
                      f"held by {', '.join(r.held_by) or 'no running server'}")  # fmt: skip
            print(f"HSM contact: {_date(int(time.time()))} (now)")
            return 0

    return _run(go())


def register(sub: Any, add: Add) -> None:
    root = sub.add_parser("root", help="tenant root keys in the HSM").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(root, "rotate", cmd_root_rotate, "new root key; the master key is rewrapped")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--reencrypt", action="store_true",
                    help="also move every object key to a new master key (resumable)")  # fmt: skip
    sp = add(root, "shred", cmd_root_shred, "destroy the root key: every key of the tenant is lost")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--yes", action="store_true", help="confirm")
    sp = add(root, "status", cmd_root_status, "root keys, master key generations, holders")
    sp.add_argument("--tenant")
