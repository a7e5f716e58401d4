"""Root-key lifecycle on a real SoftHSM2 token, against a live server (DESIGN §3).

Covers ``kmipfast root rotate`` (with and without ``--reencrypt``) under client load and
when killed mid-way, ``root shred``, HSM faults (token directory gone, a module that is
not a PKCS#11 library), the binding of sealed blobs to their object and tenant, and the
audit lines of these operations.  Every test has a server of its own; key bytes are
compared by digest and never printed.  The token is inspected from a separate process
(SoftHSM2 reads its configuration once per process) through the public ``_native.Hsm``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kmipfast import _native
from kmipfast.keys.softhsm import find_softhsm_module
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import BatchErrorContinuationOption, Operation, ResultReason
from kmipfast.protocol.tags import Tag
from tests.server.harness import (
    POLL_INTERVAL,
    ClientBundle,
    KmipServer,
    cli_command,
    connect_when_admitted,
)
from tests.server.kmipclient import (
    Conn,
    Result,
    batch_results,
    create_aes_payload,
    key_material,
    register_aes_payload,
    request_message,
    uid_payload,
)

pytestmark = pytest.mark.server

BATCH = 64  # limits.max_batch_items of a default server
WINDOW = 8  # messages in flight: their answers fit in the socket buffers
ROTATE_DEADLINE = 120.0
# ReconnectingRoot retries after 1, 2, 4 ... s: three retries fit in this.
RECOVERY_DEADLINE = 10.0
ROOT_LABEL = re.compile(r"root key (kmipfast-root-\S+)")


# ---------------------------------------------------------------------------
# Helpers


def digest(material: bytes | None) -> str:
    assert material is not None, "no key material in the Get response"
    return hashlib.sha256(material).hexdigest()


def batch_message(items: list[tuple[Operation, list[ttlv.Item]]]) -> bytes:
    """A request with several batch items, each with the Unique Batch Item ID the spec
    requires then (KMIP 1.4 §6.4)."""
    # Continue: every item is answered even after one fails (the default stops there).
    option = ttlv.enum(Tag.BatchErrorContinuationOption, BatchErrorContinuationOption.Continue)
    tag, typ, children = request_message(items, header_extra=[option])
    numbered = [children[0]]
    for i, (btag, btyp, parts) in enumerate(children[1:]):
        bid = ttlv.byte_string(Tag.UniqueBatchItemID, i.to_bytes(4, "big"))
        numbered.append((btag, btyp, [parts[0], bid, *parts[1:]]))
    return _native.encode((tag, typ, numbered))


def pipelined(conn: Conn, items: list[tuple[Operation, list[ttlv.Item]]]) -> list[Result]:
    """All ``items`` in batches of :data:`BATCH`, up to :data:`WINDOW` messages in flight
    on the one session (an SSL socket must not be read and written from two threads);
    results in order."""
    messages = [batch_message(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]
    results: list[Result] = []
    sent = 0
    for received in range(len(messages)):
        while sent < len(messages) and sent - received < WINDOW:
            conn.send(messages[sent])
            sent += 1
        results.extend(batch_results(_native.decode(conn.recv_message())))
    assert len(results) == len(items)
    return results


def create_keys(conn: Conn, n: int) -> dict[str, str]:
    """``n`` AES-256 keys made by Create; uid -> digest of the material a Get returns."""
    uids = []
    for r in pipelined(conn, [(Operation.Create, create_aes_payload())] * n):
        r.expect_success()
        uids.append(ttlv.value(r.payload, Tag.UniqueIdentifier))
    return get_digests(conn, uids)


def get_digests(conn: Conn, uids: list[str]) -> dict[str, str]:
    out = {}
    results = pipelined(conn, [(Operation.Get, uid_payload(u)) for u in uids])
    for uid, r in zip(uids, results, strict=True):
        r.expect_success()
        out[uid] = digest(key_material(r.payload))
    return out


def assert_same_material(conn: Conn, expected: dict[str, str]) -> None:
    uids = list(expected)
    results = pipelined(conn, [(Operation.Get, uid_payload(u)) for u in uids])
    failed = {u: r.describe() for u, r in zip(uids, results, strict=True) if not r.success}
    assert not failed, (
        f"{len(failed)} of {len(uids)} Gets failed, e.g. {next(iter(failed.items()))}"
    )
    changed = [
        u
        for u, r in zip(uids, results, strict=True)
        if digest(key_material(r.payload)) != expected[u]
    ]
    assert not changed, f"{len(changed)} of {len(uids)} keys changed material, e.g. {changed[0]}"


def assert_all_fail(conn: Conn, uids: list[str], reason: ResultReason) -> list[str]:
    """Every Get fails with ``reason``; returns their messages."""
    results = pipelined(conn, [(Operation.Get, uid_payload(u)) for u in uids])
    wrong = [r.describe() for r in results if r.success or r.reason != reason]
    assert not wrong, (
        f"{len(wrong)} of {len(uids)} Gets did not fail with {reason.name}: {wrong[0]}"
    )
    return [r.message or "" for r in results]


def root_status(server: KmipServer, tenant: str = "default") -> str:
    return server.run_cli("root", "status", "--tenant", tenant).stdout


def root_label(server: KmipServer, tenant: str = "default") -> str:
    match = ROOT_LABEL.search(root_status(server, tenant))
    assert match, "`root status` names no root key"
    return match.group(1)


_TOKEN_PROBE = """
import json, sys
from kmipfast import _native
module, pin_file, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with open(pin_file, "rb") as fh:
    pin = bytearray(fh.read().strip())
hsm = _native.Hsm.open(module, "kmipfast", pin)
print(json.dumps({label: hsm.root_key_exists(label) for label in labels}))
"""


def token_holds(server: KmipServer, *labels: str) -> dict[str, bool]:
    """Which root key labels the data dir's SoftHSM2 token holds, asked from a process of
    its own (the PIN is read there, from the PIN file, and never passed around)."""
    module = find_softhsm_module()
    assert module is not None, "SoftHSM2 is not installed"
    hsm = server.data_dir / "hsm"
    done = subprocess.run(
        [sys.executable, "-c", _TOKEN_PROBE, module, str(hsm / "pin"), json.dumps(labels)],
        env=dict(os.environ, SOFTHSM2_CONF=str(hsm / "softhsm2.conf")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"token probe failed: {done.stderr[-2000:]}"
    found: dict[str, bool] = json.loads(done.stdout)
    return found


def set_config(server: KmipServer, section: str, key: str, value: str) -> None:
    """Sets ``key = value`` (a TOML literal) in ``[section]`` of the data dir's kmipfast.toml."""
    path = server.data_dir / "kmipfast.toml"
    text = path.read_text()
    head = text.index(f"[{section}]")
    start = text.index(f"\n{key} = ", head) + 1
    end = text.index("\n", start)
    path.write_text(text[:start] + f"{key} = {value}" + text[end:])


def poll(check: Callable[[], str | None], deadline: float, what: str) -> None:
    """Calls ``check`` until it returns None (done) or ``deadline`` seconds pass; it
    returns a description of the state it is still waiting on."""
    end = time.monotonic() + deadline
    state = check()
    while state is not None:
        if time.monotonic() >= end:
            raise AssertionError(f"{what} not within {deadline} s; last: {state}")
        time.sleep(POLL_INTERVAL)
        state = check()


def get_state(conn: Conn, uid: str, expected: str) -> str:
    """'ok' when Get returns the expected material, else the failure."""
    r = conn.call(Operation.Get, uid_payload(uid))
    if r.success:
        return "ok" if digest(key_material(r.payload)) == expected else "changed material"
    return r.describe()


class Load:
    """A client in a thread doing Get (of known keys, checking their material) and
    Create (then Get, adding the key to the known ones) in a loop, until stopped or
    ``max_ops`` operations or ``max_seconds`` have passed."""

    def __init__(
        self, server: KmipServer, known: dict[str, str], *, max_ops: int, max_seconds: float
    ) -> None:
        self.server = server
        self.known = dict(known)
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.ops = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the load thread did not stop"

    def wait_ops(self, more: int, deadline: float = 30.0) -> None:
        """Waits until the load has done ``more`` further operations."""
        target = self.ops + more
        poll(lambda: None if self.ops >= target or not self._thread.is_alive() else
             f"{self.ops} ops", deadline, f"{more} more operations")  # fmt: skip

    def _run(self) -> None:
        rng = random.Random(7)
        end = time.monotonic() + self.max_seconds
        uids = list(self.known)
        try:
            with self.server.connect() as conn:
                while not self._stop.is_set() and self.ops < self.max_ops:
                    if time.monotonic() > end:
                        break
                    if self.ops % 4 == 3:
                        r = conn.call(Operation.Create, create_aes_payload())
                        self.ops += 1
                        if not r.success:
                            self.errors.append(f"Create: {r.describe()}")
                            continue
                        uid = ttlv.value(r.payload, Tag.UniqueIdentifier)
                        r = conn.call(Operation.Get, uid_payload(uid))
                        self.ops += 1
                        if not r.success:
                            self.errors.append(f"Get of new {uid}: {r.describe()}")
                            continue
                        self.known[uid] = digest(key_material(r.payload))
                        uids.append(uid)
                    else:
                        uid = rng.choice(uids)
                        r = conn.call(Operation.Get, uid_payload(uid))
                        self.ops += 1
                        if not r.success:
                            self.errors.append(f"Get {uid}: {r.describe()}")
                        elif digest(key_material(r.payload)) != self.known[uid]:
                            self.errors.append(f"Get {uid}: different material")
        except Exception as exc:
            self.errors.append(f"load client: {exc!r}")


@pytest.fixture
def server(kmip_server_factory: Callable[[], KmipServer]) -> KmipServer:
    return kmip_server_factory()


@pytest.fixture
def conn(server: KmipServer) -> Iterator[Conn]:
    with server.connect() as c:
        yield c


def second_tenant(server: KmipServer, name: str = "other") -> ClientBundle:
    server.run_cli("tenant", "create", name)
    return server.issue_client(f"{name}-client", name)


# ---------------------------------------------------------------------------
# Rotation


@pytest.mark.parametrize("reencrypt", [False, True], ids=["rewrap", "reencrypt"])
def test_root_rotate_under_get_create_load_keeps_every_key_design_3_rotation(
    server: KmipServer, conn: Conn, reencrypt: bool
) -> None:
    """DESIGN §3 rotation: a client doing Get/Create throughout ``root rotate`` sees no
    error and the same material for every uid, before, during and after; the old root
    key leaves the token; with ``--reencrypt`` nothing is left on the old generation."""
    known = create_keys(conn, 1000)
    old_label = root_label(server)
    args = ["root", "rotate", "--tenant", "default"] + (["--reencrypt"] if reencrypt else [])
    with Load(server, known, max_ops=20_000, max_seconds=90) as load:
        load.wait_ops(50)  # before
        done = server.run_cli(*args, timeout=ROTATE_DEADLINE)  # during
        load.wait_ops(200)  # after: the server has followed the new tenant record
    assert not load.errors, f"{len(load.errors)} errors under load, e.g. {load.errors[:3]}"
    assert len(load.known) > len(known), "the load created no keys"
    assert "root key is now" in done.stdout

    new_label = root_label(server)
    assert new_label != old_label
    assert token_holds(server, old_label, new_label) == {old_label: False, new_label: True}
    status = root_status(server)
    assert "re-encrypting" not in status
    assert f"master key generation {2 if reencrypt else 1}" in status

    with server.connect() as fresh:
        assert_same_material(fresh, load.known)
    # From the store alone (nothing cached, master keys unsealed anew).
    server.restart()
    with server.connect() as fresh:
        assert_same_material(fresh, load.known)


def test_root_rotate_reencrypt_killed_midway_then_rerun_loses_nothing_design_3_resume(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3 re-encryption resumes: SIGKILL of ``root rotate --reencrypt`` while
    objects move leaves every key readable (mixed generations), and a rerun finishes
    the move, drops the previous generation and leaves no old root key on the token."""
    known = create_keys(conn, 3000)
    old_label = root_label(server)
    cmd = [*cli_command(), "--data-dir", str(server.data_dir), "root", "rotate",
           "--tenant", "default", "--reencrypt"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: None if "re-encrypting" in root_status(server) or proc.poll() is not None
             else "not re-encrypting yet", ROTATE_DEADLINE, "re-encryption to start")  # fmt: skip
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the rotation finished before it could be killed"
    status = root_status(server)
    left = re.search(r"re-encrypting from generation 1 \((\d+) objects left\)", status)
    assert left, f"no re-encryption pending after the kill: {status!r}"
    assert 0 < int(left.group(1)) <= len(known)

    # Half-moved: every key still Gets its material.
    assert_same_material(conn, known)

    server.run_cli("root", "rotate", "--tenant", "default", "--reencrypt", timeout=ROTATE_DEADLINE)
    status = root_status(server)
    assert "re-encrypting" not in status
    assert "master key generation 2" in status
    new_label = root_label(server)
    assert token_holds(server, old_label, new_label) == {old_label: False, new_label: True}
    assert_same_material(conn, known)
    server.restart()
    with server.connect() as fresh:
        assert_same_material(fresh, known)


# ---------------------------------------------------------------------------
# Shredding


def test_root_shred_makes_tenant_keys_unrecoverable_others_unaffected_design_3_shred(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3 crypto-shredding: once ``root shred --yes`` returns, every key of the
    tenant fails Get with Cryptographic Failure (also after a restart), its root key is
    gone from the token, and the other tenant's keys Get the same material."""
    bundle = second_tenant(server)
    with connect_when_admitted(server, bundle) as other:
        doomed = create_keys(other, 100)
        kept = create_keys(conn, 100)
        label = root_label(server, "other")
        default_label = root_label(server)

        refused = server.run_cli("root", "shred", "--tenant", "other", check=False)
        assert refused.returncode != 0 and "--yes" in refused.stderr
        done = server.run_cli("root", "shred", "--tenant", "other", "--yes")
        assert "shredded" in done.stdout

        messages = assert_all_fail(other, list(doomed), ResultReason.CryptographicFailure)
        assert all(m for m in messages), "a Cryptographic Failure without a message"
        r = other.call(Operation.Create, create_aes_payload())
        assert not r.success, "Create in a shredded tenant succeeded"
    assert token_holds(server, label, default_label) == {label: False, default_label: True}
    assert "shredded" in root_status(server, "other")
    assert_same_material(conn, kept)
    conn.ok(Operation.DiscoverVersions)  # still alive

    server.restart()
    with server.connect() as fresh:
        assert_same_material(fresh, kept)
    with connect_when_admitted(server, bundle) as other:
        assert_all_fail(other, list(doomed), ResultReason.CryptographicFailure)


def test_root_shred_right_after_restart_does_not_wait_for_stopped_server_design_3_shred(
    server: KmipServer,
) -> None:
    """DESIGN §3 shred acknowledgement counts live servers only: right after a restart,
    ``root shred --yes`` returns success without waiting for the stopped process."""
    server.run_cli("tenant", "create", "other")
    server.restart()
    started = time.monotonic()
    done = server.run_cli("root", "shred", "--tenant", "other", "--yes", check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 8.0, f"shred took {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# HSM faults


def test_token_dir_gone_held_master_key_keeps_serving_restart_recovers_design_3_hsm(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3 held master keys: with the token directory moved away under a running
    server, Get and Create on a tenant whose master key is held keep working and the
    server stays up; with the directory back, a restart serves every key again."""
    known = create_keys(conn, 50)
    tokens = server.data_dir / "hsm" / "tokens"
    away = tokens.with_name("tokens-away")
    tokens.rename(away)
    try:
        assert_same_material(conn, known)
        created = create_keys(conn, 10)
        conn.ok(Operation.DiscoverVersions)
    finally:
        away.rename(tokens)
    server.restart()
    with server.connect() as fresh:
        assert_same_material(fresh, known | created)


def test_token_dir_vanishes_then_returns_running_server_recovers_by_itself_design_3_hsm(
    server: KmipServer,
) -> None:
    """DESIGN §3 reconnect: once the held master key expires with the token directory
    gone, Get is a General Failure naming the HSM; when the directory is back the
    server serves the key again by itself (1 s backoff doubling)."""
    set_config(server, "hsm", "master_key_hold", "1.0")
    server.restart()
    with server.connect() as conn:
        known = create_keys(conn, 5)
        uid, expected = next(iter(known.items()))
        tokens = server.data_dir / "hsm" / "tokens"
        away = tokens.with_name("tokens-away")
        tokens.rename(away)
        seen: list[str] = []
        try:

            def expired() -> str | None:
                seen.append(get_state(conn, uid, expected))
                return "still served" if seen[-1] == "ok" else None

            poll(expired, 10.0, "the held key to expire")
        finally:
            away.rename(tokens)
        poll(lambda: None if (s := get_state(conn, uid, expected)) == "ok" else s,
             RECOVERY_DEADLINE, "recovery with the token directory back")  # fmt: skip
        assert "GeneralFailure" in seen[-1] and "HSM" in seen[-1], seen[-1]
        conn.ok(Operation.DiscoverVersions)


def test_hsm_module_token_missing_at_start_general_failure_then_recovers_design_3_hsm(
    server: KmipServer, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN §3 reconnect (``hsm.module`` set to SoftHSM2): a server started while the
    token directory is away answers General Failure naming the HSM, ``root rotate``
    fails with an error and exit 1, and once the directory is back the server opens the
    HSM by itself and serves every key."""
    known = create_keys(conn, 20)
    uid, expected = next(iter(known.items()))
    conn.close()
    server.stop()
    monkeypatch.setenv("SOFTHSM2_CONF", str(server.data_dir / "hsm" / "softhsm2.conf"))
    set_config(server, "hsm", "module", json.dumps(find_softhsm_module()))
    tokens = server.data_dir / "hsm" / "tokens"
    away = tokens.with_name("tokens-away")
    tokens.rename(away)
    try:
        server.start()
        with server.connect() as c:
            r = c.call(Operation.Get, uid_payload(uid))
            r.expect_failure(ResultReason.GeneralFailure)
            assert r.message and "HSM" in r.message, r.describe()
            c.call(Operation.Create, create_aes_payload()).expect_failure(
                ResultReason.GeneralFailure
            )
            rotate = server.run_cli("root", "rotate", "--tenant", "default", check=False)
            assert rotate.returncode != 0
            assert rotate.stderr.strip().splitlines()[-1].startswith("kmipfast: error:")
            c.ok(Operation.DiscoverVersions)
    finally:
        away.rename(tokens)
    with server.connect() as c:
        poll(lambda: None if (s := get_state(c, uid, expected)) == "ok" else s,
             RECOVERY_DEADLINE, "the server to reopen the HSM")  # fmt: skip
        assert_same_material(c, known)
    assert (server.data_dir / "audit.log").exists()


def _break_module(server: KmipServer) -> None:
    bogus = server.data_dir / "not-pkcs11.so"
    bogus.write_text("this is not a shared library\n")
    set_config(server, "hsm", "module", json.dumps(str(bogus)))


def test_hsm_module_not_a_pkcs11_library_clear_errors_server_alive_design_3_hsm(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3: with ``hsm.module`` naming a file that is not a PKCS#11 library, Get
    and Create answer General Failure with a message naming the module, ``root rotate``
    exits non-zero with a ``kmipfast: error:`` line, and the server stays up."""
    known = create_keys(conn, 5)
    uid = next(iter(known))
    conn.close()
    _break_module(server)
    server.restart()
    with server.connect() as c:
        for op, payload in (
            (Operation.Get, uid_payload(uid)),
            (Operation.Create, create_aes_payload()),
        ):
            r = c.call(op, payload)
            r.expect_failure(ResultReason.GeneralFailure)
            assert r.message and "not-pkcs11.so" in r.message, r.describe()
        rotate = server.run_cli("root", "rotate", "--tenant", "default", check=False)
        assert rotate.returncode == 1
        assert rotate.stderr.strip().splitlines()[-1].startswith("kmipfast: error: ")
        assert "not-pkcs11.so" in rotate.stderr
        c.ok(Operation.DiscoverVersions)
    set_config(server, "hsm", "module", '""')
    server.restart()
    with server.connect() as c:
        assert_same_material(c, known)


def test_root_rotate_with_hsm_unavailable_fails_with_one_line_cli_contract(
    server: KmipServer,
) -> None:
    """cli.py contract ("errors are one plain line on stderr and a non-zero exit") for
    ``root rotate`` when the HSM module cannot be loaded."""
    _break_module(server)
    rotate = server.run_cli("root", "rotate", "--tenant", "default", check=False)
    assert rotate.returncode == 1
    assert len(rotate.stderr.strip().splitlines()) == 1, rotate.stderr
    set_config(server, "hsm", "module", '""')


def test_token_dir_missing_at_start_is_hsm_unavailable_not_a_new_token_design_3_hsm(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3: a server (re)started while the provisioned token's directory is away
    reports the HSM unavailable (General Failure) and does not create another token."""
    known = create_keys(conn, 5)
    uid = next(iter(known))
    conn.close()
    server.stop()
    tokens = server.data_dir / "hsm" / "tokens"
    away = tokens.with_name("tokens-away")
    tokens.rename(away)
    try:
        server.start()
        with server.connect() as c:
            r = c.call(Operation.Get, uid_payload(uid))
            provisioned = list(tokens.iterdir()) if tokens.exists() else []
            assert not provisioned, "a new token was provisioned in place of the missing one"
            r.expect_failure(ResultReason.GeneralFailure)
    finally:
        server.stop()
        shutil.rmtree(tokens, ignore_errors=True)
        away.rename(tokens)
        server.start()


# ---------------------------------------------------------------------------
# Binding of sealed blobs


def test_swapped_key_blob_rows_fail_to_unwrap_design_3_binding(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3 binding: a sealed blob copied in the database into another object's
    row (same tenant, or another tenant's) fails Get with Cryptographic Failure and a
    message saying so; the object it came from is unaffected."""
    a_material, b_material = os.urandom(32), os.urandom(32)
    a = ttlv.value(conn.ok(Operation.Register, register_aes_payload(a_material)),
                   Tag.UniqueIdentifier)  # fmt: skip
    b = ttlv.value(conn.ok(Operation.Register, register_aes_payload(b_material)),
                   Tag.UniqueIdentifier)  # fmt: skip
    bundle = second_tenant(server)
    with connect_when_admitted(server, bundle) as other:
        c = next(iter(create_keys(other, 1)))
    conn.close()
    server.stop()
    [(blob,)] = server.store_sql("SELECT key_blob FROM objects WHERE uid = ?", a)
    swap = "UPDATE objects SET key_blob = ? WHERE uid IN (?, ?)"
    [(changed,)] = server.store_sql(swap, blob, b, c)
    assert changed == 2
    server.start()
    try:
        check_swapped_rows(server, bundle, (a, a_material), b, c)
    except BaseException:
        server.kill9()  # its stderr may hold the traceback this test reports
        raise


def check_swapped_rows(
    server: KmipServer, bundle: ClientBundle, a: tuple[str, bytes], b: str, c: str
) -> None:
    a_uid, a_material = a
    with server.connect() as fresh:
        got = fresh.ok(Operation.Get, uid_payload(a_uid))
        assert digest(key_material(got)) == digest(a_material)
        r = fresh.call(Operation.Get, uid_payload(b))
        r.expect_failure(ResultReason.CryptographicFailure)
        assert r.message and "integrity" in r.message, r.describe()
    with connect_when_admitted(server, bundle) as other:
        r = other.call(Operation.Get, uid_payload(c))
        r.expect_failure(ResultReason.CryptographicFailure)
        assert r.message and "integrity" in r.message, r.describe()
    assert "Traceback" not in server.stderr()


# ---------------------------------------------------------------------------
# Audit


def test_rotate_shred_and_unseal_are_audited_without_key_material_design_3_audit(
    server: KmipServer, conn: Conn
) -> None:
    """DESIGN §3/§6 audit: rotation, re-encryption, shredding and master key unsealing
    appear in ``audit.log`` as JSON lines naming the tenant, with no key material."""
    material = os.urandom(32)
    conn.ok(Operation.Register, register_aes_payload(material))
    known = create_keys(conn, 20)
    server.run_cli("root", "rotate", "--tenant", "default")
    server.run_cli("root", "rotate", "--tenant", "default", "--reencrypt")
    assert_same_material(conn, known)
    bundle = second_tenant(server)
    with connect_when_admitted(server, bundle) as other:
        create_keys(other, 3)
    server.run_cli("root", "shred", "--tenant", "other", "--yes")

    path = server.data_dir / "audit.log"

    def admin_actions() -> str | None:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        actions = {(e.get("action"), e.get("tenant")) for e in lines if e.get("kind") == "admin"}
        wanted = {
            ("root key rotated", "default"),
            ("master key re-encryption finished", "default"),
            ("master key unsealed", "default"),
            ("tenant shredded", "other"),
        }
        return None if wanted <= actions else f"missing {sorted(wanted - actions)}"

    poll(admin_actions, 5.0, "the admin audit lines")  # the server flushes every 100 ms
    text = path.read_text()
    for form in (material.hex(), material.hex().upper(), base64.b64encode(material).decode()):
        assert form not in text, "key material in the audit log"
    pin = (server.data_dir / "hsm" / "pin").read_text().strip()
    assert pin not in text, "the HSM PIN in the audit log"
