"""What every command module shares: one-line errors, the config, dates."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from kmipfast.config import Config, data_dir_from, load_config

DEFAULT_TENANT = "default"


class CliError(Exception):
    """A failure reported as one line."""


class Add(Protocol):
    """Adds one command to a subparser group: ``add(group, name, fn, help)``."""

    def __call__(
        self, parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser: ...


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _config(args: argparse.Namespace) -> Config:
    return load_config(data_dir_from(args.data_dir))


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _date(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
