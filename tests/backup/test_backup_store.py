"""Backup and restore against real stores, SQLite and PostgreSQL (issue #8, DESIGN §5):
the file format, its integrity check, consistency under concurrent writes, refusal to
overwrite, backups moving between backends, and the CLI's one-line errors.  The
live-server round trip is in test_backup_live.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kmipfast import backup as bk
from kmipfast import pki
from kmipfast.config import Config, StoreConfig, write_default_config
from kmipfast.store import ClientRecord, ObjectRecord, Store, TenantRecord, open_store
from tests.backup.conftest import BACKENDS
from tests.server.harness import cli_command

SYMMETRIC_KEY, SECRET_DATA = 2, 7
PRE_ACTIVE, ACTIVE, DEACTIVATED, DESTROYED = 1, 2, 3, 6
T0 = 1_700_000_000


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def obj(uid: str, tenant: str, state: int = ACTIVE, n: int = 0) -> ObjectRecord:
    return ObjectRecord(
        uid=uid,
        tenant=tenant,
        object_type=SYMMETRIC_KEY if n % 2 == 0 else SECRET_DATA,
        state=state,
        key_blob=None if state == DESTROYED else os.urandom(40),
        key_meta=b"meta:" + uid.encode(),
        attributes={
            "Name": [b"name-" + uid.encode()],
            "x-multi": [b"a", b"b", bytes(range(256))],
        },
        created=T0 + n // 3,  # several objects per second: order must survive
        updated=T0 + n,
        version=1 + n % 4,
    )


def self_signed_pem(name: str) -> bytes:
    ca, _key = pki.create_ca(name)
    return pki.cert_pem(ca)


async def populate(store: Store, data_dir: Path) -> None:
    await store.create_tenant(TenantRecord("alpha", "root-alpha", b"sealed-a", 1, T0, None))
    await store.create_tenant(
        TenantRecord("beta", "root-beta-2", b"sealed-b2", 2, T0, T0 + 50, b"sealed-b1", 1)
    )
    await store.create_tenant(TenantRecord("shredded", "root-s", None, 1, T0, T0 + 9))
    for name, tenant in (("vc", "alpha"), ("array", "beta")):
        pem = self_signed_pem(name)
        from cryptography import x509

        fp = pki.fingerprint(x509.load_pem_x509_certificate(pem))
        path = data_dir / "clients" / f"{fp}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
        await store.put_client(
            ClientRecord(name, tenant, fp, f"CN={name}", f"CN={name}", T0 + 10**6, T0)
        )
    # A client whose certificate file is gone from the data dir: backed up without one.
    await store.put_client(ClientRecord("lost", "alpha", "ab" * 32, "CN=lost", "CN=lost", None, T0))
    states = (PRE_ACTIVE, ACTIVE, DEACTIVATED, DESTROYED)
    # More than one page of the snapshot; started in order, committed in groups.
    await asyncio.gather(
        *(
            store.create_object(
                obj(f"uid-{n:05d}", ("alpha", "beta", "shredded")[n % 3], states[n % 4], n)
            )
            for n in range(1234)
        )
    )


async def everything(store: Store) -> dict[str, object]:
    async with store.snapshot() as snap:
        objects = [o async for o in snap.objects]
    return {"tenants": snap.tenants, "clients": snap.clients, "objects": objects}


def make_source(tmp_path: Path, url: str) -> tuple[Path, Path, dict[str, object]]:
    """A populated store ``url`` with data dir ``src``, backed up to ``backup.kmipfast``."""
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "backup.kmipfast"

    async def go() -> dict[str, object]:
        async with open_store(url, src) as store:
            await populate(store, src)
            summary = await bk.backup(store, src, out)
            assert summary.counts == {"tenants": 3, "clients": 3, "files": 2, "objects": 1234}
            assert summary.missing_pems == ["lost"]
            return await everything(store)

    return src, out, run(go())  # type: ignore[return-value]


def restore_into(data_dir: Path, path: Path, url: str) -> bk.Summary:
    data_dir.mkdir(exist_ok=True)
    config = Config(data_dir=data_dir, store=StoreConfig(url=url))
    return run(bk.restore_to_config(config, path))  # type: ignore[return-value]


def read_all(url: str, data_dir: Path) -> dict[str, object]:
    async def go() -> dict[str, object]:
        async with open_store(url, data_dir) as store:
            return await everything(store)

    return run(go())  # type: ignore[return-value]


def untouched(url: str) -> bool:
    """No store file, or a database without a single table (not even kmipfast's schema)."""
    if url.startswith("sqlite:///"):
        return not Path(url[len("sqlite:///") :]).exists()

    async def tables() -> int:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            )
        finally:
            await conn.close()

    return run(tables()) == 0


# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"), [(a, b) for a in BACKENDS for b in BACKENDS], ids=lambda b: b[:2]
)
def test_backup_restore_round_trip_keeps_every_row_byte_for_byte(
    tmp_path: Path, new_store: Any, source: str, target: str
) -> None:
    """Tenants (rotation in progress, shredded), clients, objects in every state with
    multi-instance attributes come back identical, in the same order, on either backend
    and across them; the client certificate files come back; the backup file is 0600 and
    no temporary file is left."""
    src_url, dst_url = new_store(source), new_store(target)
    src, out, before = make_source(tmp_path, src_url)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    others = {p.name for p in tmp_path.iterdir() if not p.name.startswith("store")}
    assert others == {"backup.kmipfast", "src"}, "the backup left a temporary file"

    dst = tmp_path / "dst"
    summary = restore_into(dst, out, dst_url)
    assert summary.counts["objects"] == 1234
    after = read_all(dst_url, dst)
    assert after == before  # dataclass equality covers the wrapped bytes too
    assert sorted(p.name for p in (dst / "clients").iterdir()) == sorted(
        p.name for p in (src / "clients").iterdir()
    )
    for pem in (dst / "clients").iterdir():
        assert pem.read_bytes() == (src / "clients" / pem.name).read_bytes()
    # A temporary database was renamed into place; nothing else is left behind.
    assert sorted(p.name for p in dst.iterdir()) == ["clients"]
    assert not list(tmp_path.glob(".*")), "the restore left a temporary file"
    for url in (src_url, dst_url):
        assert not url.startswith("sqlite") or Path(url[len("sqlite:///") :]).is_file()

    async def locate_order(url: str, data_dir: Path) -> list[str]:
        async with open_store(url, data_dir) as store:
            return await store.locate("alpha")

    assert run(locate_order(dst_url, dst)) == run(locate_order(src_url, src))


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_refuses_a_store_that_holds_anything(
    tmp_path: Path, new_store: Any, backend: str
) -> None:
    """Restore never overwrites: a store with a tenant (as `kmipfast init` leaves it) is
    refused with one line, and left exactly as it was."""
    _src, out, _before = make_source(tmp_path, new_store("sqlite"))
    dst, dst_url = tmp_path / "dst", new_store(backend)
    dst.mkdir()

    async def seed() -> None:
        async with open_store(dst_url, dst) as store:
            await store.create_tenant(TenantRecord("alpha", "root-new", b"new", 1, T0, None))
            await store.create_object(obj("mine", "alpha"))

    run(seed())
    before = read_all(dst_url, dst)
    with pytest.raises(bk.BackupError, match=r"already holds 1 tenant.*1 object.*never over"):
        restore_into(dst, out, dst_url)
    assert read_all(dst_url, dst) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_into_an_existing_empty_store(tmp_path: Path, new_store: Any, backend: str) -> None:
    """An existing but empty store (a database whose schema a server already made, a
    store file made by another command) is restored in place."""
    _src, out, before = make_source(tmp_path, new_store("sqlite"))
    dst, dst_url = tmp_path / "dst", new_store(backend)
    dst.mkdir()

    async def touch() -> None:
        async with open_store(dst_url, dst):
            pass

    run(touch())
    restore_into(dst, out, dst_url)
    assert read_all(dst_url, dst) == before


def round_of(o: dict[str, Any]) -> int:
    """The x-round attribute of a backed-up object, checked against its state (which the
    same write set)."""
    r = int(base64.b64decode(o["attributes"]["x-round"][0]))
    want = (ACTIVE if r % 2 else DEACTIVATED) if r else ACTIVE
    assert o["state"] == want, f"{o['uid']}: state and attribute torn apart"
    return r


def check_pairs(lines: list[bytes], span: int, pairs: int) -> None:
    backed_up = {
        o["uid"]: o
        for o in (json.loads(line)["object"] for line in lines if line.startswith(b'{"object"'))
    }
    header = json.loads(lines[0])
    assert len(backed_up) == header["counts"]["objects"] >= span + pairs
    for i in range(pairs):
        first = round_of(backed_up[f"o{i:05d}"])
        second = round_of(backed_up[f"o{i + span:05d}"])
        assert first - second in (0, 1), (
            f"pair {i}: rounds {first} and {second} are not of one instant"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_backup_is_one_consistent_snapshot_while_writers_change_objects(
    tmp_path: Path, new_store: Any, backend: str
) -> None:
    """A backup taken while writers keep changing and creating objects holds one instant.
    Each writer moves a pair of objects to round r in order, first one of the first page
    (the first read), then one of the last page, each change acknowledged before the
    next: in any single instant the first is at the second's round or one ahead.  A
    backup reading page by page in separate transactions sees the later page further
    along, and fails this; so does one that tears an object from its attributes."""
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "b"
    pairs, span = 64, 1000  # objects i and i + span are a pair: pages of 500 apart
    url = new_store(backend)

    async def go() -> None:
        async with open_store(url, src) as store:
            await store.create_tenant(TenantRecord("t", "root", b"sealed", 1, T0, None))
            recs = [obj(f"o{i:05d}", "t", ACTIVE, i) for i in range(span + pairs)]
            for rec in recs:
                rec.attributes["x-round"] = [b"0"]
            await asyncio.gather(*(store.create_object(rec) for rec in recs))
            stop = asyncio.Event()
            progress = [0] * pairs  # rounds each writer has finished

            async def churn(i: int) -> int:
                r = 0
                while not stop.is_set():
                    r += 1
                    for k in (i, i + span):
                        rec = recs[k]
                        nxt = replace(
                            rec,
                            state=ACTIVE if r % 2 else DEACTIVATED,
                            attributes={**rec.attributes, "x-round": [str(r).encode()]},
                        )
                        await store.update_object(nxt, rec.version)
                        recs[k] = nxt
                    progress[i] = r
                return r

            async def creator() -> None:
                i = 0
                while not stop.is_set():
                    await store.create_object(obj(f"new{i}", "t", PRE_ACTIVE, i))
                    i += 1

            workers = [asyncio.ensure_future(churn(i)) for i in range(pairs)]
            creating = asyncio.ensure_future(creator())
            try:
                for _ in range(3):
                    # Every writer is mid-way through its pairs while the backup runs.
                    start, deadline = list(progress), time.monotonic() + 30
                    while any(a <= b for a, b in zip(progress, start, strict=True)):
                        assert time.monotonic() < deadline, "the writers stopped"
                        await asyncio.sleep(0.01)
                    await bk.backup(store, src, out)
                    check_pairs(out.read_bytes().splitlines(), span, pairs)
            finally:
                stop.set()
                rounds = await asyncio.gather(*workers, creating, return_exceptions=True)
            assert all(isinstance(r, int) or r is None for r in rounds), rounds

    asyncio.run(go())


# ---------------------------------------------------------------------------
# Bad input: one-line error, nothing written


def rewrite(path: Path, lines: list[bytes], *, rehash: bool = True) -> None:
    """Writes ``lines`` (records without the end record) with a correct end record, as a
    forger would: the structural checks must still refuse what the digest does not."""
    body = b"".join(line + b"\n" for line in lines)
    digest = hashlib.sha256(body).hexdigest() if rehash else "0" * 64
    end = json.dumps({"end": {"sha256": digest, "records": len(lines) - 1}}).encode()
    path.write_bytes(body + end + b"\n")


def bad_files(out: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    data = out.read_bytes()
    lines = data.splitlines()
    mid = len(data) // 2
    flipped = data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1 :]
    cases: dict[str, tuple[bytes | None, str]] = {
        "empty": (b"", "not a kmipfast backup"),
        "garbage": (bytes(range(256)) * 40, "not a kmipfast backup"),
        "json-but-not-ours": (b'{"format": "other"}\n', "not a kmipfast backup"),
        "newer-format": (
            lines[0].replace(b'"version":1', b'"version":99') + b"\n",
            "format version 99",
        ),
        "cut-after-header": (data[: len(lines[0]) + 1], "truncated"),
        "cut-mid-record": (data[: len(data) // 2], "truncated"),
        "cut-before-end": (data[: data.rindex(b'{"end"')], "truncated"),
        "cut-inside-end": (data[:-10], "truncated"),
        "one-bit-flipped": (flipped, "damaged|altered"),
        "state-changed": (data.replace(b'"state":6', b'"state":2', 1), "altered"),
        "record-removed": (b"\n".join(lines[:5] + lines[6:]) + b"\n", "altered"),
        "trailing-data": (data + b"{}\n", "after its end record"),
    }
    out_files: dict[str, tuple[Path, str]] = {}
    for name, (content, error) in cases.items():
        path = tmp / f"{name}.bad"
        assert content is not None
        path.write_bytes(content)
        out_files[name] = (path, error)
    # Forged with a recomputed digest: structure is still checked.
    body = lines[:-1]
    pem_line = next(i for i, line in enumerate(body) if line.startswith(b'{"file"'))
    forged = json.loads(body[pem_line])
    forged["file"]["path"] = "../../kmipfast.toml"
    rewrite(
        tmp / "traversal.bad",
        [*body[:pem_line], json.dumps(forged).encode(), *body[pem_line + 1 :]],
    )
    out_files["traversal"] = (tmp / "traversal.bad", "is not clients/<fingerprint>.pem")
    forged = json.loads(body[pem_line])
    real = forged["file"]["path"]
    forged["file"]["path"] = "clients/" + "0" * 64 + ".pem"
    rewrite(
        tmp / "wrong-fp.bad", [*body[:pem_line], json.dumps(forged).encode(), *body[pem_line + 1 :]]
    )
    out_files["wrong-fp"] = (tmp / "wrong-fp.bad", "another fingerprint")
    assert real != forged["file"]["path"]
    tenant_line = json.loads(body[1])
    tenant_line["tenant"]["colour"] = "red"
    rewrite(tmp / "unknown-field.bad", [body[0], json.dumps(tenant_line).encode(), *body[2:]])
    out_files["unknown-field"] = (tmp / "unknown-field.bad", "unknown to kmipfast")
    rewrite(tmp / "order.bad", [*body[:pem_line], *body[pem_line + 1 :], body[pem_line]])
    out_files["order"] = (tmp / "order.bad", "after the object records")
    rewrite(tmp / "counts.bad", body[:-1])
    out_files["counts"] = (tmp / "counts.bad", "but its header says")
    rewrite(tmp / "twice.bad", [*body, body[-1]])
    out_files["twice"] = (tmp / "twice.bad", "appears twice")
    orphan = json.loads(body[-1])
    orphan["object"]["tenant"] = "nobody"
    orphan["object"]["uid"] = "orphan"
    rewrite(tmp / "orphan.bad", [*body, json.dumps(orphan).encode()])
    out_files["orphan"] = (tmp / "orphan.bad", "of tenant 'nobody', which the backup does not")
    return out_files


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_refuses_truncated_altered_or_garbage_files_and_writes_nothing(
    tmp_path: Path, new_store: Any, backend: str
) -> None:
    """Every damaged, cut or forged file is refused with one line before anything is
    written: no row, no store file, no temporary database, no certificate file."""
    _src, out, _before = make_source(tmp_path, new_store("sqlite"))
    dst_url = new_store(backend)
    for name, (path, error) in bad_files(out, tmp_path).items():
        dst = tmp_path / f"dst-{name}"
        with pytest.raises(bk.BackupError, match=error) as info:
            restore_into(dst, path, dst_url)
        assert "\n" not in str(info.value), name
        assert list(dst.iterdir()) == [], f"{name}: restore left {list(dst.iterdir())}"
        assert untouched(dst_url), f"{name}: restore wrote to the store"
        assert not list(tmp_path.glob(".*restoring*")), f"{name}: a temporary database is left"
        with pytest.raises(bk.BackupError):
            bk.verify(path)


def test_cli_backup_and_restore_report_one_line_and_exit_non_zero(
    tmp_path: Path, new_store: Any
) -> None:
    """`kmipfast restore` of a bad file and `kmipfast backup` of a data dir: one plain
    line on stderr, exit 1, no traceback; a good file restores once, then is refused."""
    _src, out, _before = make_source(tmp_path, new_store("sqlite"))
    dst = tmp_path / "dst"
    write_default_config(dst)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli_command(), "--data-dir", str(dst), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    some = ("garbage", "cut-mid-record", "state-changed", "traversal")
    for name, (path, _error) in bad_files(out, tmp_path).items():
        if name not in some:
            continue
        done = cli("restore", str(path))
        assert done.returncode == 1, name
        assert done.stderr.startswith("kmipfast: error: ") and done.stderr.count("\n") == 1, (
            f"{name}: {done.stderr!r}"
        )
    assert not (dst / "store.sqlite3").exists()

    done = cli("restore", "--verify-only", str(out))
    assert done.returncode == 0 and "1234 objects" in done.stdout, done.stderr
    done = cli("restore", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 tenants, 3 clients, 1234 objects, 2 client certificates" in done.stdout
    done = cli("restore", str(out))
    assert done.returncode == 1 and "already holds 3 tenant" in done.stderr

    again = tmp_path / "again.kmipfast"
    done = cli("backup", "--out", str(again))
    assert done.returncode == 0, done.stderr
    assert "warning: client lost" in done.stderr
    assert stat.S_IMODE(again.stat().st_mode) == 0o600
    restored_twice = tmp_path / "dst2"
    twice_url = new_store("sqlite")
    restore_into(restored_twice, again, twice_url)
    assert read_all(twice_url, restored_twice) == read_all(
        f"sqlite:///{dst / 'store.sqlite3'}", dst
    )
    audit = (dst / "audit.log").read_text()
    assert '"store restored"' in audit and '"store backed up"' in audit


def test_restore_killed_part_way_leaves_no_store_and_can_be_run_again(
    tmp_path: Path, new_store: Any
) -> None:
    """A SQLite restore killed (SIGKILL) while it writes rows leaves no store file, so
    nothing can start on half a store; running it again restores everything."""
    src, out = tmp_path / "src", tmp_path / "big.kmipfast"
    src.mkdir()
    url = new_store("sqlite")

    async def make() -> dict[str, object]:
        async with open_store(url, src) as store:
            await store.create_tenant(TenantRecord("t", "root", b"sealed", 1, T0, None))
            await asyncio.gather(
                *(store.create_object(obj(f"o{i:06d}", "t", ACTIVE, i)) for i in range(6000))
            )
            await bk.backup(store, src, out)
            return await everything(store)

    before = run(make())
    dst = tmp_path / "dst"
    write_default_config(dst)
    cmd = [*cli_command(), "--data-dir", str(dst), "restore", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    temporary = dst / ".store.sqlite3.restoring"
    deadline = time.monotonic() + 120
    while not temporary.exists():
        assert proc.poll() is None, "restore ended before it began writing rows"
        assert time.monotonic() < deadline, "restore did not begin writing rows"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not (dst / "store.sqlite3").exists(), "a killed restore left a store"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(dst.glob(".*restoring*"))
    assert read_all(f"sqlite:///{dst / 'store.sqlite3'}", dst) == before


def test_pg_dump_and_pg_restore_as_docs_backup_md_says(tmp_path: Path, new_store: Any) -> None:
    """docs/backup.md, PostgreSQL's own way: ``pg_dump -Fc`` of a store in use and
    ``pg_restore --no-owner --role=kmipfast`` into a new database give a store kmipfast
    opens as it is (schema version included), with every row the same."""
    src_url, dst_url = new_store("postgresql"), new_store("postgresql")
    _src, _out, before = make_source(tmp_path, src_url)
    dump = tmp_path / "kmipfast.dump"
    for cmd in (
        ["pg_dump", "-Fc", "-d", src_url, "-f", str(dump)],
        ["pg_restore", "--no-owner", "--role=kmipfast", "-d", dst_url, str(dump)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{cmd[0]}: {done.stderr}"
    assert read_all(dst_url, tmp_path) == before
