"""Runs the command blocks of an operator guide (``docs/*.md``) in order.

A guide marks each shell block it wants run with an HTML comment right before the
fence, invisible to a reader::

    <!-- guide-step: NAME -->
    ```sh
    kmipfast ...
    ```

Every ``sh`` block must carry a step name, and the test must name a handler for every
step, so no block goes unexecuted.  A block runs through ``bash -euo pipefail`` in the
guide's working directory with ``KMIPFAST_DATA_DIR`` set to the test server's data dir
and the project's ``kmipfast`` first on ``PATH``.  Blocks in other languages
(``powershell``) are what the operator does on the vCenter or array side: the test
plays that side itself.

A block whose ``kmipfast`` command does not exist (yet) makes the test skip with the
name of that command, so a guide can be written ahead of a command.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.harness import cli_command

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(
    r"(?:<!--\s*guide-step:\s*(?P<name>[\w-]+)\s*-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
    re.S,
)
_COMMAND = re.compile(r"(?:^|[\s;|(`$])kmipfast\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", re.M)
BLOCK_DEADLINE = 300.0


@dataclass
class Step:
    name: str
    body: str


def steps_of(guide: str) -> list[Step]:
    """The guide's ``sh`` blocks, in order; an unnamed ``sh`` block is an error."""
    text = (DOCS / guide).read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        if m.group("lang") != "sh":
            continue
        if not m.group("name"):
            raise AssertionError(f"{guide}: a sh block has no guide-step marker:\n{m['body']}")
        out.append(Step(m.group("name"), m.group("body")))
    names = [s.name for s in out]
    assert len(names) == len(set(names)), f"{guide}: step names repeat: {names}"
    return out


@functools.cache
def _exists(words: tuple[str, ...]) -> bool:
    done = subprocess.run(
        [*cli_command(), *words, "--help"], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0


def require_commands(step: Step) -> None:
    """Skips the test if the block uses a ``kmipfast`` command that does not exist."""
    for m in _COMMAND.finditer(step.body):
        words = tuple(w for w in m.groups() if w)
        if not _exists(words[:1]):
            pytest.skip(f"step {step.name}: `kmipfast {words[0]}` does not exist yet")
        if len(words) == 2 and _has_subcommands(words[0]) and not _exists(words):
            pytest.skip(f"step {step.name}: `kmipfast {' '.join(words)}` does not exist yet")


@functools.cache
def _has_subcommands(group: str) -> bool:
    done = subprocess.run(
        [*cli_command(), group, "--help"], capture_output=True, text=True, timeout=60
    )
    return "ACTION" in done.stdout


def run_step(step: Step, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Runs one block as the operator would; it must succeed without a traceback."""
    require_commands(step)
    bin_dir = str(Path(cli_command()[0]).parent) if len(cli_command()) == 1 else ""
    env = dict(
        os.environ,
        KMIPFAST_DATA_DIR=str(data_dir),
        PATH=os.pathsep.join(p for p in (bin_dir, os.environ.get("PATH", "")) if p),
    )
    if len(cli_command()) > 1:  # no console script: a shell function stands in
        prelude = f'kmipfast() {{ {" ".join(cli_command())} "$@"; }}\n'
    else:
        prelude = ""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", prelude + step.body],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_DEADLINE,
    )
    if done.returncode != 0 or "Traceback" in done.stderr:
        raise AssertionError(
            f"guide step {step.name} failed ({done.returncode}):\n{step.body}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done
