"""``kmipfast audit`` and ``root shred --certificate-out`` with the development software
root (issue #10): the audit key is a file in ``dev-root/`` instead of an HSM key, and
everything else is the same commands a real deployment runs.  No server process: the
administrative commands write the log themselves."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kmipfast import auditchain
from kmipfast.audit import AuditLog
from tests.server.harness import cli_command


def _cli(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*cli_command(), "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("softroot") / "data"
    _cli(d, "init", "--software-root")
    return d


def test_admin_commands_are_chained_and_signed_with_the_software_root(data: Path) -> None:
    _cli(data, "tenant", "create", "acme")
    assert (data / auditchain.PUBLIC_KEY_FILE).is_file()
    done = _cli(data, "audit", "verify")
    assert "audit log intact" in done.stdout and "signed checkpoint(s) verified" in done.stdout
    events = [json.loads(raw) for raw in (data / "audit.log").read_bytes().splitlines()]
    assert any(e.get("action") == "tenant created" and e.get("tenant") == "acme" for e in events)
    # Each command signed what it wrote before it exited.
    assert events[-1]["kind"] == "checkpoint"


def test_checkpoint_command_signs_only_new_lines(data: Path) -> None:
    _cli(data, "tenant", "create", "beta")
    done = _cli(data, "audit", "checkpoint", check=False)
    # The tenant command already signed its line on exit: nothing new to sign.
    assert done.returncode != 0 and "no checkpoint written" in done.stderr
    log = AuditLog(data / "audit.log")  # a line written without a signer
    log.admin("unsigned line")
    log.close()
    done = _cli(data, "audit", "checkpoint")
    assert "checkpoint signed" in done.stdout
    assert _cli(data, "audit", "verify").returncode == 0


def test_software_root_shred_certificate_verifies(data: Path, tmp_path: Path) -> None:
    _cli(data, "tenant", "create", "gone")
    out = _cli(data, "root", "shred", "--tenant", "gone", "--yes")
    path = Path(out.stdout.split("shred certificate: ")[1].strip())
    assert path.parent == data / "shred-certificates"
    doc = json.loads(path.read_bytes())
    assert doc["root_key"]["hsm"].startswith("software root")
    assert doc["hsm_confirmation"]["gone"] is True
    assert doc["keys_unrecoverable"]["count"] == 0
    done = _cli(data, "audit", "verify-shred", str(path))
    assert "tenant gone" in done.stdout
    changed = bytearray(path.read_bytes())
    changed[changed.index(b'"gone"')] ^= 0x20  # one byte: '"' -> '\x02'
    forged = tmp_path / "forged.json"
    forged.write_bytes(bytes(changed))
    done = _cli(data, "audit", "verify-shred", str(forged), check=False)
    assert done.returncode != 0 and "NOT valid" in done.stderr


def test_tail_follow_prints_new_lines_across_a_rotation(data: Path) -> None:
    proc = subprocess.Popen(
        [*cli_command(), "--data-dir", str(data), "audit", "tail", "-n", "0", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, object]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        log = AuditLog(data / "audit.log", max_bytes=4096)
        deadline = time.monotonic() + 60.0
        # Lines from before `tail` read the file are not printed (-n 0): wait until it
        # prints one written after.
        while not any(e.get("action") == "marker" for e in seen):
            assert time.monotonic() < deadline, "tail --follow printed nothing"
            log.admin("marker")
            log.sync()
            time.sleep(0.2)
        for i in range(120):
            log.admin("followed", i=i, pad="y" * 60)
            if i % 10 == 9:
                log.sync()  # batches, so the log rotates between them
        log.close()
        deadline = time.monotonic() + 30.0
        while len([e for e in seen if e.get("action") == "followed"]) < 120:
            assert time.monotonic() < deadline, f"saw {len(seen)} lines: {seen[-3:]}"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    followed = [e["i"] for e in seen if e.get("action") == "followed"]
    assert followed == list(range(120))
    assert len(auditchain.rotated_files(data / "audit.log")) >= 2
    assert _cli(data, "audit", "verify").returncode == 0
