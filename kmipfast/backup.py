"""Backup and restore of the store (DESIGN §5, issue #8).

A backup is one file of JSON lines, written atomically with mode 0600::

    {"format": "kmipfast-backup", "version": 1, "kmipfast": ..., "created": ...,
     "store": "sqlite", "counts": {"tenants": 2, "clients": 3, "files": 3, "objects": 120}}
    {"tenant": {...}}      every tenant: root key label, sealed master key(s), generations
    {"client": {...}}      the allow-list
    {"file": {...}}        the PEM of each allowed client certificate (clients/<sha256>.pem)
    {"object": {...}}      every object: wrapped key bytes, key metadata, attributes, state
    {"end": {"sha256": ..., "records": N}}

Byte fields are base64.  The ``sha256`` of the end record covers every byte before it,
so a truncated or altered file is refused before anything is written.  It is a check
against damage, not a signature: whoever can write the file can rewrite the digest.

What the file holds is exactly what the store holds: key material wrapped by tenant
master keys, which are themselves sealed by root keys that never leave the HSM.  Without
that HSM a backup opens nothing; after ``root shred`` the tenant's part of any older
backup opens nothing either.  The rows come from :meth:`Store.snapshot`, one instant of
the store while a server goes on serving and writing.

Restore writes only into an empty store (no tenant, hence no client and no object): it
never overwrites.  The whole file is verified first; for a SQLite store that does not
exist yet the rows go into a temporary database renamed into place at the end, so a
failure leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import glob
import hashlib
import json
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kmipfast import __version__
from kmipfast.auth import client_pem_path
from kmipfast.config import Config
from kmipfast.pki import write_file_atomic
from kmipfast.store.base import ClientRecord, ObjectRecord, Store, TenantRecord, open_store

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BackupError",
    "Progress",
    "Summary",
    "backup",
    "restore",
    "restore_to_config",
    "verify",
]

FORMAT = "kmipfast-backup"
FORMAT_VERSION = 1
# Record kinds in the order they must appear (tenants before what refers to them).
KINDS = ("tenant", "client", "file", "object")
_RECORDS: dict[str, type[Any]] = {
    "tenant": TenantRecord,
    "client": ClientRecord,
    "object": ObjectRecord,
}
_HEADER_MAX = 64 * 1024  # a header is small: a longer first line is not a backup
# One object per line; its size is bounded by limits.max_message_size (256 MiB at
# most), so a longer line is damage, never a record to buffer.
_LINE_MAX = 512 * 1024 * 1024
_IN_FLIGHT = 256  # object writes handed to the store at once (its group commit batches them)
_CLIENT_PEM = re.compile(r"clients/([0-9a-f]{64})\.pem")


class BackupError(Exception):
    """A backup could not be written or a file cannot be restored; one line."""


@dataclass
class Progress:
    """Callbacks for a progress display: a phase begins, units of it are done."""

    phase: Callable[[str, int], None] = lambda what, total: None
    advance: Callable[[int], None] = lambda n: None


@dataclass
class Summary:
    """What a backup file holds (or what a restore wrote)."""

    path: Path
    created: str
    kmipfast: str
    counts: dict[str, int]
    sha256: str = ""
    # Allowed clients whose certificate file was missing from the data dir at backup.
    missing_pems: list[str] = field(default_factory=list)


# -- record encoding ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise BackupError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BackupError(f"{what} is not valid base64") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _encode(rec: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(rec, f.name)) for f in dataclasses.fields(rec)}


def _decode_value(hint: Any, value: Any, what: str) -> Any:
    """``value`` as read from JSON, checked against the record field's type ``hint``
    (bytes from base64, containers element by element)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if hint is bytes:
        return _unb64(value, what)
    if origin is dict and isinstance(value, dict):
        key_hint, value_hint = typing.get_args(hint)
        return {
            _decode_value(key_hint, k, what): _decode_value(value_hint, v, f"{what}.{k}")
            for k, v in value.items()
        }
    if origin is list and isinstance(value, list):
        (item_hint,) = typing.get_args(hint)
        return [_decode_value(item_hint, v, f"{what}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and type(value) is hint:
        return value
    raise BackupError(f"{what} has the wrong type")


def _decode(kind: str, data: Any, where: str) -> Any:
    cls = _RECORDS[kind]
    if not isinstance(data, dict):
        raise BackupError(f"{where}: the {kind} record is not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BackupError(
            f"{where}: {kind} field {unknown[0]!r} is unknown to kmipfast {__version__} "
            "(a backup of a newer version?)"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _decode_value(hints[name], data[name], f"{where}: {kind}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BackupError(f"{where}: {kind} record without {name!r}")
    return cls(**values)


def _decode_file(data: Any, where: str) -> tuple[str, bytes]:
    """A client certificate file: its path must be clients/<fingerprint>.pem and its
    content a certificate with that fingerprint (a backup never plants anything else)."""
    from cryptography import x509

    from kmipfast import pki

    if not isinstance(data, dict) or set(data) != {"path", "data"}:
        raise BackupError(f"{where}: malformed file record")
    path = data["path"]
    match = _CLIENT_PEM.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise BackupError(f"{where}: file path {path!r} is not clients/<fingerprint>.pem")
    pem = _unb64(data["data"], f"{where}: {path}")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BackupError(f"{where}: {path} is not a PEM certificate") from None
    if pki.fingerprint(cert) != match.group(1):
        raise BackupError(f"{where}: {path} holds a certificate of another fingerprint")
    return path, pem


# -- backup ------------------------------------------------------------------------------


class _Writer:
    """Lines into a temporary file next to ``out``, hashed; renamed over ``out`` by
    :meth:`commit`, removed by :meth:`discard`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        self.tmp = Path(tmp)
        os.fchmod(fd, 0o600)
        self.fh: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)
        self.hash = hashlib.sha256()
        self.records = 0

    def line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.hash.update(data)
        self.fh.write(data)
        self.records += 1

    def commit(self) -> str:
        digest = self.hash.hexdigest()
        end = {"end": {"sha256": digest, "records": self.records - 1}}
        self.fh.write(json.dumps(end, separators=(",", ":")).encode() + b"\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.out)
        dir_fd = os.open(self.out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


async def backup(
    store: Store, data_dir: Path, out: Path, progress: Progress | None = None
) -> Summary:
    """Writes a backup of ``store`` (and of the client certificates under ``data_dir``)
    to ``out``: atomically, mode 0600, replacing ``out`` only once complete."""
    progress = progress or Progress()
    out = Path(out).absolute()
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with store.snapshot() as snap:
        pems: list[tuple[str, bytes]] = []
        missing = []
        # Read after the snapshot: a certificate file is written before its client row
        # and never removed, so every client of the snapshot has its file by now.
        for client in snap.clients:
            if not client.fingerprint:
                continue
            try:
                pems.append((client.fingerprint, client_pem_path(data_dir, client.fingerprint)
                             .read_bytes()))  # fmt: skip
            except FileNotFoundError:
                missing.append(client.name)
        counts = {
            "tenants": len(snap.tenants),
            "clients": len(snap.clients),
            "files": len(pems),
            "objects": snap.object_count,
        }
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kmipfast": __version__,
            "created": created,
            "store": type(store).__name__.removesuffix("Store").lower(),
            "counts": counts,
        }
        writer = _Writer(out)
        try:
            writer.line(header)
            progress.phase("backing up", len(snap.tenants) + len(snap.clients) + len(pems)
                           + snap.object_count)  # fmt: skip
            for tenant in snap.tenants:
                writer.line({"tenant": _encode(tenant)})
            for client in snap.clients:
                writer.line({"client": _encode(client)})
            progress.advance(len(snap.tenants) + len(snap.clients))
            for fingerprint, pem in pems:
                writer.line({"file": {"path": f"clients/{fingerprint}.pem", "data": _b64(pem)}})
            progress.advance(len(pems))
            n = 0
            async for obj in snap.objects:
                writer.line({"object": _encode(obj)})
                n += 1
                if n % 100 == 0:
                    progress.advance(100)
            progress.advance(n % 100)
            if n != snap.object_count:
                raise BackupError(f"snapshot yielded {n} objects, expected {snap.object_count}")
            digest = writer.commit()
        except BaseException:
            writer.discard()
            raise
    return Summary(out, created, __version__, counts, digest, missing)


# -- reading and verifying ---------------------------------------------------------------


def _header(fh: IO[bytes], path: Path) -> tuple[dict[str, Any], bytes]:
    line = fh.readline(_HEADER_MAX)
    try:
        header = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(f"{path} is not a kmipfast backup")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise BackupError(
            f"{path} is a backup of format version {version!r}; kmipfast {__version__} "
            f"reads version {FORMAT_VERSION}"
        )
    counts = header.get("counts")
    if (
        not isinstance(counts, dict)
        or set(counts) != {k + "s" for k in KINDS}
        or not all(isinstance(v, int) and v >= 0 for v in counts.values())
    ):
        raise BackupError(f"{path}: the header's counts are malformed")
    return header, line


def _records(fh: IO[bytes], path: Path) -> Iterator[tuple[str, Any]]:
    """Yields ("header", dict), then (kind, decoded record) for each line; checks order,
    counts and the digest when it reaches the end record, and raises BackupError on
    anything else (a file cut short has no end record).  A damaged file is reported as
    damaged, not by the first oddity that damage produced: after a bad record the rest
    is only hashed, and the digest is judged before the record."""
    header, line = _header(fh, path)
    digest = hashlib.sha256(line)
    yield "header", header
    seen = dict.fromkeys(KINDS, 0)
    rank = 0
    number = 1
    problem: BackupError | None = None
    names: dict[str, set[str]] = {"tenant": set(), "client": set(), "fingerprint": set(),
                                  "file": set(), "object": set()}  # fmt: skip
    while True:
        line = fh.readline(_LINE_MAX)
        number += 1
        if not line.endswith(b"\n"):
            if len(line) >= _LINE_MAX:
                raise BackupError(f"{path} line {number} is longer than any record: damaged")
            raise BackupError(
                f"{path} is truncated: it ends after {number - 2} records, without its end record"
            )
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and list(rec) == ["end"]:
            end = rec["end"]
            break
        digest.update(line)
        if problem is not None:
            continue
        where = f"{path} line {number}"
        try:
            kind, decoded = _record(rec, where, rank)
            _check_unique(kind, decoded, names, where)
        except BackupError as e:
            problem = e
            continue
        rank = KINDS.index(kind)
        seen[kind] += 1
        yield kind, decoded
    if not isinstance(end, dict) or end.get("sha256") != digest.hexdigest():
        raise BackupError(f"{path} is damaged or was altered: its SHA-256 does not match")
    if fh.read(1):
        raise BackupError(f"{path} has data after its end record: damaged file")
    if problem is not None:
        raise problem
    got = {k + "s": n for k, n in seen.items()}
    if got != header["counts"]:
        raise BackupError(f"{path} holds {got}, but its header says {header['counts']}")


def _check_unique(kind: str, rec: Any, names: dict[str, set[str]], where: str) -> None:
    """What the store would refuse half-way through a restore is refused before it:
    a name used twice, a client or object of a tenant the backup does not hold."""
    if kind == "file":
        keys = [("file", rec[0])]
    else:
        keys = [(kind, rec.uid if kind == "object" else rec.name)]
        if kind == "client" and rec.fingerprint:
            keys.append(("fingerprint", rec.fingerprint))
        if kind != "tenant" and rec.tenant not in names["tenant"]:
            raise BackupError(f"{where}: {kind} {keys[0][1]!r} of tenant {rec.tenant!r}, "
                              "which the backup does not hold")  # fmt: skip
    for space, key in keys:
        if key in names[space]:
            raise BackupError(f"{where}: {space} {key!r} appears twice")
        names[space].add(key)


def _record(rec: Any, where: str, rank: int) -> tuple[str, Any]:
    if not isinstance(rec, dict) or len(rec) != 1:
        raise BackupError(f"{where} is not a record: damaged file")
    ((kind, data),) = rec.items()
    if kind not in KINDS:
        raise BackupError(f"{where}: unknown record kind {kind!r}")
    if KINDS.index(kind) < rank:
        raise BackupError(f"{where}: a {kind} record after the {KINDS[rank]} records")
    if kind == "file":
        return kind, _decode_file(data, where)
    return kind, _decode(kind, data, where)


def _summary(path: Path, header: dict[str, Any]) -> Summary:
    return Summary(
        path, str(header.get("created")), str(header.get("kmipfast")), dict(header["counts"])
    )


def verify(path: Path, progress: Progress | None = None) -> Summary:
    """Reads the whole file and checks it (format, every record, order, counts, SHA-256)."""
    progress = progress or Progress()
    with open(path, "rb") as fh:
        return _verify(fh, Path(path), progress)


def _verify(fh: IO[bytes], path: Path, progress: Progress) -> Summary:
    records = _records(fh, path)
    _, header = next(records)
    progress.phase("verifying", sum(header["counts"].values()))
    n = 0
    for _ in records:
        n += 1
        if n % 100 == 0:
            progress.advance(100)
    progress.advance(n % 100)
    return _summary(path, header)


# -- restore -----------------------------------------------------------------------------


async def _ensure_empty(store: Store) -> None:
    tenants = await store.list_tenants()
    if not tenants:
        return
    objects = 0
    for t in tenants:
        objects += sum((await store.count_objects(t.name)).values())
    names = ", ".join(t.name for t in tenants[:5]) + (", ..." if len(tenants) > 5 else "")
    raise BackupError(
        f"the store already holds {len(tenants)} tenant(s) ({names}) and {objects} object(s); "
        "restore writes only into an empty store (a new data dir or database), never over one"
    )


async def restore(
    store: Store,
    data_dir: Path,
    path: Path,
    progress: Progress | None = None,
    *,
    verified: bool = False,
) -> Summary:
    """Verifies ``path`` completely (unless the caller just did: ``verified``), checks
    that ``store`` is empty, then writes every row into it and the client certificates
    under ``data_dir``.  The digest is checked again as the rows are read."""
    progress = progress or Progress()
    path = Path(path)
    with open(path, "rb") as fh:
        if not verified:
            await asyncio.to_thread(_verify, fh, path, progress)
            fh.seek(0)
        records = _records(fh, path)
        summary = _summary(path, next(records)[1])
        await _ensure_empty(store)
        progress.phase("restoring", sum(summary.counts.values()))
        pending: list[ObjectRecord] = []
        pems: list[tuple[str, bytes]] = []  # written once every row is in

        async def flush() -> None:
            # Started in order, so the store keeps the objects' order (Locate's newest
            # first among equal creation times).
            await asyncio.gather(*(store.create_object(o) for o in pending))
            progress.advance(len(pending))
            pending.clear()

        try:
            for kind, rec in records:
                if kind == "tenant":
                    await store.create_tenant(rec)
                elif kind == "client":
                    await store.put_client(rec)
                elif kind == "file":
                    pems.append(rec)
                else:
                    pending.append(rec)
                    if len(pending) >= _IN_FLIGHT:
                        await flush()
                    continue
                progress.advance(1)
            await flush()
        except BackupError as e:
            raise BackupError(f"{path} changed while being restored: {e}") from None
    for rel, pem in pems:
        _restore_pem(data_dir, rel, pem)
    return summary


def _restore_pem(data_dir: Path, rel: str, pem: bytes) -> None:
    target = data_dir / rel
    if target.exists() and target.read_bytes() == pem:
        return
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file_atomic(target, pem, 0o644)


def _journals(db: Path) -> list[Path]:
    """SQLite's own files next to a database: a database file must never meet stale ones."""
    return [db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _remove_with_sidecars(db: Path) -> None:
    """A (temporary) database and every ``<db>-*`` file beside it: SQLite's journals and
    the store's own (e.g. its shared commit mark), none of which outlives the database."""
    for leftover in (db, *db.parent.glob(glob.escape(db.name) + "-*")):
        leftover.unlink(missing_ok=True)


async def restore_to_config(
    config: Config, path: Path, progress: Progress | None = None
) -> Summary:
    """:func:`restore` into the store ``config`` names.  A SQLite store that does not
    exist yet is built as a temporary file and renamed into place once complete."""
    target = config.store_path
    options = {"group_commit_max": config.store.group_commit_max}
    # A bad file is refused before any store is opened (opening creates a schema).
    await asyncio.to_thread(verify, path, progress)
    if target is None or target.exists():
        async with open_store(config.store.url, config.data_dir, **options) as store:
            try:
                return await restore(store, config.data_dir, path, progress, verified=True)
            except BackupError:
                raise
            except Exception as e:
                raise BackupError(
                    f"restore failed part way ({e}); the store is partly restored: empty it "
                    "(a new database or store file) before trying again"
                ) from None
    stale = [p for p in _journals(target) if p.exists()]
    if stale:
        raise BackupError(f"{stale[0]} is left from an earlier store; move it away first")
    tmp = target.with_name(f".{target.name}.restoring")
    _remove_with_sidecars(tmp)  # an earlier restore that was killed
    try:
        async with open_store(f"sqlite:///{tmp}", config.data_dir, **options) as store:
            summary = await restore(store, config.data_dir, path, progress, verified=True)
        wal = tmp.with_name(tmp.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise BackupError(f"the restored database did not close cleanly ({wal} remains)")
        os.replace(tmp, target)
    finally:
        _remove_with_sidecars(tmp)  # the journals are empty once the store closed
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return summary
