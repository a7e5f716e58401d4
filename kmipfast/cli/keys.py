"""kmipfast keys ...: managed objects, never key material."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kmipfast.app import runtime
from kmipfast.cli.common import Add, _config, _date, _enum_name, _run
from kmipfast.protocol.enums import ObjectType, State


# -- keys ---------------------------------------------------------------------------------
def cmd_keys_list(args: argparse.Namespace) -> int:
    from kmipfast.vault import ManagedObject

    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            rows = []
            async for rec in rt.store.list_objects(args.tenant):
                obj = ManagedObject.from_record(rec)
                names = [v[2][0][2] for v in obj.attributes.get("Name", []) if v[2]]
                rows.append(
                    {
                        "uid": obj.uid,
                        "tenant": obj.tenant,
                        "type": _enum_name(ObjectType, obj.object_type),
                        "state": _enum_name(State, obj.state),
                        "names": names,
                        "x-Name": obj.first("x-Name"),
                        "x-Identifier": obj.first("x-Identifier"),
                        "created": _date(obj.first("Initial Date") or obj.created),
                        "activated": _date(obj.first("Activation Date")),
                        "last_change": _date(obj.first("Last Change Date")),
                    }
                )
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    print(
                        "\t".join(
                            str(r[k] or "-")
                            for k in ("uid", "tenant", "type", "state", "x-Name", "created")
                        )
                    )
            return 0

    return _run(go())


def register(sub: Any, add: Add) -> None:
    keys = sub.add_parser("keys", help="managed objects").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(keys, "list", cmd_keys_list, "list objects (never key material)")
    sp.add_argument("--tenant")
    sp.add_argument("--json", action="store_true")
