"""kmipfast tenant ..."""

from __future__ import annotations

import argparse
from typing import Any

from kmipfast.app import runtime
from kmipfast.auth import require_admin
from kmipfast.cli.common import Add, CliError, _config, _date, _run
from kmipfast.store.base import StoreConflict


# -- tenants ----------------------------------------------------------------------------
def cmd_tenant_create(args: argparse.Namespace) -> int:
    config = _config(args)
    os_user = require_admin(config.data_dir)

    async def go() -> int:
        async with runtime(config) as rt:
            try:
                rec = await rt.services.keys.create_tenant(args.name)
            except StoreConflict:
                raise CliError(f"tenant {args.name!r} already exists") from None
            rt.services.audit.admin("tenant created", tenant=args.name, os_user=os_user)
            print(f"tenant {rec.name} created (root key {rec.root_label})")
            return 0

    return _run(go())


def cmd_tenant_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            for t in await rt.store.list_tenants():
                counts = await rt.store.count_objects(t.name)
                print(
                    f"{t.name}\troot={t.root_label}\tobjects={sum(counts.values())}\t"
                    f"created={_date(t.created)}"
                )
            return 0

    return _run(go())


def register(sub: Any, add: Add) -> None:
    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(tenant, "create", cmd_tenant_create, "create a tenant with its own root key")
    sp.add_argument("name")
    add(tenant, "list", cmd_tenant_list, "list tenants")
