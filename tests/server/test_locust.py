"""The Locust file (loadtests/locustfile.py) keeps working: a short headless run
against a private kmipfast, both user classes, must finish with no failed request.
``make locust`` runs the same for 60 s."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.server


@pytest.mark.parametrize("new_session", [False, True], ids=["persistent", "session-per-task"])
def test_locust_headless_run_has_no_failures(new_session: bool) -> None:
    if shutil.which("locust", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("locust is not installed in the venv (requirements-dev.txt)")
    cmd = [sys.executable, str(ROOT / "loadtests" / "locust_run.py"), "--seconds", "6"]
    if new_session:
        cmd.append("--new-session")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Aggregated" in out
    assert "Traceback" not in out
