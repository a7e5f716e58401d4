"""The ``kmipfast`` command: parsing and printing only; the work is elsewhere.

Every command takes ``--data-dir`` (default ``$KMIPFAST_DATA_DIR``, else
``./kmipfast-data``).  Errors are one plain line on stderr and a non-zero exit.
Each command group lives in its own module with a ``register(sub, add)`` function.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from kmipfast import __version__, auth, pki
from kmipfast.auditchain import AuditChainError
from kmipfast.cli import audit as audit_commands
from kmipfast.cli import backup, clients, importer, keys, root, servercert, setup, status, tenants
from kmipfast.cli import cluster as cluster_commands
from kmipfast.cli.common import CliError
from kmipfast.config import ConfigError, data_dir_from
from kmipfast.errors import HsmError
from kmipfast.keys.rotation import RootKeyError
from kmipfast.store.base import StoreError

__all__ = ["CliError", "build_parser", "main"]

# Command groups that change or reveal the server's trust and keys: they need write
# access to the data dir, the trust boundary (the OS user is in their audit lines).
ADMIN_GROUPS = frozenset({"tenant", "client", "keys", "root", "import", "restore"})

GROUPS = (setup, tenants, clients, root, keys, backup, servercert, status, importer,
          audit_commands, cluster_commands)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="data directory (default $KMIPFAST_DATA_DIR or ./kmipfast-data)",
    )
    p = argparse.ArgumentParser(
        prog="kmipfast", description="a high-throughput KMIP key server", parents=[common]
    )
    p.add_argument("--version", action="version", version=f"kmipfast {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common])
        sp.set_defaults(fn=fn)
        return sp

    for group in GROUPS:
        group.register(sub, add)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "logs", False):
        # Administrative commands speak in one line each; library chatter stays out.
        logging.basicConfig(level=logging.CRITICAL)
    if not hasattr(args, "data_dir"):
        args.data_dir = None
    try:
        if args.command in ADMIN_GROUPS:
            data_dir = data_dir_from(args.data_dir)
            if data_dir.exists():
                auth.require_admin(data_dir)
        return int(args.fn(args))
    except (CliError, ConfigError, pki.PkiError, StoreError, HsmError, RootKeyError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, AuditChainError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still one line; KMIPFAST_DEBUG=1 shows the traceback
        if os.environ.get("KMIPFAST_DEBUG"):
            raise
        print(f"kmipfast: error: unexpected {type(e).__name__}: {e} "
              "(KMIPFAST_DEBUG=1 shows where)", file=sys.stderr)  # fmt: skip
        return 1


def run() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
