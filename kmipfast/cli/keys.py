"""kmipfast keys ...: managed objects, never key material.

Parsing and printing only; the work is in :mod:`kmipfast.admin_keys`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kmipfast import admin_keys as ak
from kmipfast.app import Runtime, runtime
from kmipfast.cli.common import DEFAULT_TENANT, Add, CliError, _config, _date, _run
from kmipfast.vault import ManagedObject


def _admin(
    args: argparse.Namespace, work: Callable[[Runtime], Awaitable[int]], audit: bool = True
) -> int:
    async def go() -> int:
        async with runtime(_config(args), audit=audit) as rt:
            try:
                return await work(rt)
            except ak.AdminError as e:
                raise CliError(str(e)) from None

    return _run(go())


def _row(obj: ManagedObject) -> dict[str, Any]:
    names = [str(v[2][0][2]) for v in obj.attributes.get("Name", []) if v[2]]
    return {
        "uid": obj.uid,
        "tenant": obj.tenant,
        "type": ak.enum_name(ak.ObjectType, obj.object_type),
        "state": ak.enum_name(ak.State, obj.state),
        "names": names,
        "x-Name": obj.first("x-Name"),
        "x-Identifier": obj.first("x-Identifier"),
        "x-Component": obj.first("x-Component"),
        "created": _date(ak.created_of(obj)),
        "activated": _date(obj.first("Activation Date")),
        "last_change": _date(obj.first("Last Change Date")),
    }


# -- list -----------------------------------------------------------------------------------
def cmd_keys_list(args: argparse.Namespace) -> int:
    try:
        filters = ak.Filters(
            state=ak.parse_state(args.state) if args.state else None,
            name=args.name,
            x_identifier=args.x_identifier,
            component=args.component,
            older_than=ak.parse_age(args.older_than) if args.older_than else None,
        )
    except ak.AdminError as e:
        raise CliError(str(e)) from None

    async def work(rt: Runtime) -> int:
        rows = [_row(obj) for obj in await ak.list_objects(rt, args.tenant, filters)]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if rows and sys.stdout.isatty():
            print("UID\tTENANT\tTYPE\tSTATE\tNAME\tX-IDENTIFIER\tCREATED")
        for r in rows:
            label = r["x-Name"] or (r["names"][0] if r["names"] else None)
            print("\t".join(
                str(v or "-") for v in (r["uid"], r["tenant"], r["type"], r["state"], label,
                                        r["x-Identifier"], r["created"])
            ))  # fmt: skip
        return 0

    return _admin(args, work, audit=False)


# -- create, show ------------------------------------------------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        uid = await ak.create_key(rt, args.tenant, args.name, args.algorithm, args.length)
        print(uid)
        return 0

    return _admin(args, work)


def cmd_keys_show(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        info = ak.describe(await ak.find_object(rt, args.uid, args.tenant))
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        for k in ("uid", "tenant", "type", "state"):
            print(f"{k}: {info[k]}")
        print(f"key material: {'held (sealed)' if info['has_material'] else 'none (destroyed)'}")
        for name, values in info["attributes"].items():
            for v in values:
                print(f"  {name}: {v}")
        return 0

    return _admin(args, work, audit=False)


# -- revoke, destroy ---------------------------------------------------------------------------
def cmd_keys_revoke(args: argparse.Namespace) -> int:
    return _change(args, "revoked", lambda rt, obj: ak.revoke(rt, obj, args.reason))


def cmd_keys_destroy(args: argparse.Namespace) -> int:
    if not args.yes:
        what = args.uid or f"every key with x-Identifier {args.x_identifier}"
        raise CliError(f"destroying {what} cannot be undone; add --yes to do it")
    return _change(args, "destroyed", ak.destroy)


def _change(
    args: argparse.Namespace,
    done: str,
    step: Callable[[Runtime, ManagedObject], Awaitable[None]],
) -> int:
    async def work(rt: Runtime) -> int:
        objs = await ak.select(rt, args.uid, args.x_identifier, args.tenant)
        failed = await ak.each(objs, lambda obj: step(rt, obj), lambda: None)
        changed = [o for o in objs if o not in [f[0] for f in failed]]
        # Running servers see the change on their next request (Store.foreign_epoch).
        for obj in changed:
            print(f"{obj.uid}\t{done}")
        for _obj, why in failed:
            print(f"kmipfast: error: {why}", file=sys.stderr)
        return 1 if failed else 0

    return _admin(args, work)


# -- orphans ------------------------------------------------------------------------------------
def cmd_keys_orphans(args: argparse.Namespace) -> int:
    if args.destroy and not args.yes:
        raise CliError("--destroy revokes and destroys every orphaned key; add --yes to do it")
    path = Path(args.inventory)
    if not path.is_file():
        raise CliError(f"inventory file {path} does not exist")
    try:
        inventory = ak.read_inventory(path)
    except ak.AdminError as e:
        raise CliError(str(e)) from None
    if inventory.garbage and not args.ignore_garbage:
        # A wrong inventory would make live keys look orphaned: refuse, naming the line.
        number, why = inventory.garbage[0]
        more = len(inventory.garbage) - 1
        raise CliError(
            f"{path}:{number}: {why}"
            + (f" (and {more} more bad line(s))" if more else "")
            + "; fix the file or add --ignore-garbage"
        )
    for number, why in inventory.garbage:
        print(f"kmipfast: {path}:{number}: {why} (line ignored)", file=sys.stderr)
    if not inventory.ids:
        raise CliError(f"inventory {path} lists no ids; refusing to call every key an orphan")

    async def work(rt: Runtime) -> int:
        found = await ak.orphans(rt, args.tenant, inventory.ids)
        now = int(time.time())
        if found and sys.stdout.isatty():
            print("UID\tX-IDENTIFIER\tX-COMPONENT\tX-NAME\tSTATE\tAGE")
        for obj in found:
            print("\t".join(str(v or "-") for v in (
                obj.uid, obj.first("x-Identifier"), obj.first("x-Component"),
                obj.first("x-Name"), ak.enum_name(ak.State, obj.state), ak.age(obj, now),
            )))  # fmt: skip
        print(f"{len(found)} orphaned key(s) in tenant {args.tenant}", file=sys.stderr)
        if not args.destroy or not found:
            return 0
        from rich.progress import Progress as Bar

        with Bar(transient=False, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("destroying orphans", total=len(found))
            failed = await ak.each(
                found,
                lambda obj: ak.revoke_and_destroy(rt, obj),
                lambda: bar.advance(task),
            )
        for _obj, why in failed:
            print(f"kmipfast: error: {why}", file=sys.stderr)
        print(f"{len(found) - len(failed)} orphaned key(s) destroyed", file=sys.stderr)
        return 1 if failed else 0

    return _admin(args, work)


def register(sub: Any, add: Add) -> None:
    keys = sub.add_parser("keys", help="managed objects").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(keys, "list", cmd_keys_list, "list objects (never key material)")
    sp.add_argument("--tenant")
    sp.add_argument("--state", help="e.g. Active, PreActive, Deactivated, Destroyed")
    sp.add_argument("--name", help="Name or x-Name equal to this")
    sp.add_argument("--x-identifier", help="x-Identifier (vCenter: the VM or host UUID)")
    sp.add_argument("--component", help="x-Component, e.g. 'Virtual Machine', 'ESXi Server'")
    sp.add_argument("--older-than", help="created longer ago than this, e.g. 30d, 12h")
    sp.add_argument("--json", action="store_true")

    sp = add(keys, "create", cmd_keys_create, "create an active symmetric key; prints its uid")
    sp.add_argument("--tenant", default=DEFAULT_TENANT)
    sp.add_argument("--name", required=True)
    sp.add_argument("--algorithm", default="AES")
    sp.add_argument("--length", type=int, default=256)

    sp = add(keys, "show", cmd_keys_show, "attributes, state and dates of one object")
    sp.add_argument("uid")
    sp.add_argument("--tenant")
    sp.add_argument("--json", action="store_true")

    for name, fn, help in (
        ("revoke", cmd_keys_revoke, "revoke keys (KMIP Revoke): servers stop serving them"),
        ("destroy", cmd_keys_destroy, "destroy keys (KMIP Destroy); revoke active keys first"),
    ):
        sp = add(keys, name, fn, help)
        sp.add_argument("uid", nargs="?")
        sp.add_argument("--x-identifier", help="every key with this x-Identifier (a VM or host)")
        sp.add_argument("--tenant")
        if name == "revoke":
            sp.add_argument("--reason", choices=ak.REVOCATION_REASONS, default="cessation")
        else:
            sp.add_argument("--yes", action="store_true")

    sp = add(keys, "orphans", cmd_keys_orphans, "keys whose x-Identifier is not in inventory")
    sp.add_argument("--tenant", default=DEFAULT_TENANT)
    sp.add_argument("--inventory", required=True, help="ids still in inventory: text or CSV")
    sp.add_argument("--destroy", action="store_true", help="revoke and destroy them")
    sp.add_argument("--yes", action="store_true")
    sp.add_argument("--ignore-garbage", action="store_true",
                    help="skip inventory lines that are not ids instead of refusing")  # fmt: skip
