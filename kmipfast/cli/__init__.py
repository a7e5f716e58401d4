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

from kmipfast import __version__, pki
from kmipfast.cli import clients, keys, root, setup, tenants
from kmipfast.cli.common import CliError
from kmipfast.config import ConfigError
from kmipfast.errors import HsmError
from kmipfast.keys.rotation import RootKeyError
from kmipfast.store.base import StoreError

__all__ = ["CliError", "build_parser", "main"]

GROUPS = (setup, tenants, clients, root, keys)


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
        return int(args.fn(args))
    except (CliError, ConfigError, pki.PkiError, StoreError, HsmError, RootKeyError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
