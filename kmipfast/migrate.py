"""Migration that keeps key IDs: `kmipfast import` from a PyKMIP database or a live KMIP
server.

vCenter and storage arrays remember only a key's Unique Identifier, so every object is
registered here under the uid it had in the source, sealed like any registered object
(:func:`kmipfast.operations.objects.seal_registered`), with its names, usage mask,
custom ``x-`` attributes, state and dates carried over.

Theory of operation: a *source* yields :class:`SourceObject` s (the object item exactly
as a Register request would carry it, and its attributes); :func:`import_one` decides
for each one:

- the uid is not here: imported;
- the uid is here, in this tenant, with the same key material (compared by the SHA-256
  Digest both sides compute the same way): skipped, so the import can be run again
  after an interruption and carries on where it stopped (idempotent, resumable);
- the uid is here with other material, or taken by another tenant: a conflict, reported
  and never overwritten.

Plaintext key material passes through this process (it comes over the wire or out of
the source database): it is sealed at once and never printed or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmipfast import _native
from kmipfast.admin_keys import AdminError, require_tenant
from kmipfast.app import Runtime
from kmipfast.audit import os_user
from kmipfast.errors import TtlvError
from kmipfast.operations import certificates, common, objects
from kmipfast.protocol import attributes as attrs
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import (
    KeyFormatType,
    NameType,
    ObjectType,
    Operation,
    ResultStatus,
    State,
)
from kmipfast.protocol.errors import KmipError, invalid_field
from kmipfast.protocol.processor import Context, Session
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.store.base import StoreConflict
from kmipfast.vault import ManagedObject

# Attributes the server sets on Register that an import carries over from the source
# instead: the object's history stays what it was.
_CARRIED = frozenset({
    "State", "Initial Date", "Activation Date", "Deactivation Date", "Compromise Date",
    "Compromise Occurrence Date", "Revocation Reason", "Original Creation Date",
    "Protect Stop Date", "Process Start Date",
})  # fmt: skip
# Set here from the object itself, or meaningless once moved.
_DROPPED = frozenset({
    "Unique Identifier", "Object Type", "Digest", "Last Change Date", "Fresh", "Lease Time",
    "Cryptographic Algorithm", "Cryptographic Length", "Certificate Type",
    "Certificate Identifier", "Certificate Subject", "Certificate Issuer",
    "X.509 Certificate Identifier", "X.509 Certificate Subject", "X.509 Certificate Issuer",
    "Digital Signature Algorithm", "Destroy Date", "Operation Policy Name",
})  # fmt: skip
_GONE = frozenset({State.Destroyed, State.DestroyedCompromised})


class SourceError(Exception):
    """The source cannot be read any more (dropped connection, unreadable file)."""


class Refused(Exception):
    """The source answered an operation with a failure."""


@dataclass
class SourceObject:
    uid: str
    object_type: int
    item: Item = field(repr=False)  # the object as a Register carries it
    attributes: list[tuple[str, Item]] = field(default_factory=list, repr=False)


@dataclass
class Outcome:
    uid: str
    result: str  # "imported", "skipped", "failed"
    reason: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str = ""  # why the source stopped answering, if it did

    def of(self, result: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == result]

    def line(self) -> str:
        return (
            f"imported {len(self.of('imported'))}, skipped {len(self.of('skipped'))}, "
            f"failed {len(self.of('failed'))}"
        )


# -- the import of one object -------------------------------------------------------------
def _context(rt: Runtime, tenant: str) -> Context:
    return Context(
        session=Session(client=f"import:{os_user()}", tenant=tenant, fingerprint="", peer="local"),
        services=rt.services,
        version=(1, 4),
        now=int(time.time()),
        operation=Operation.Register,
    )


async def build(rt: Runtime, tenant: str, src: SourceObject) -> ManagedObject:
    """The object ``src`` becomes here, sealed, under its own uid (not yet stored)."""
    ctx = _context(rt, tenant)
    if objects.OBJECT_TAGS.get(src.object_type) != src.item[0]:
        raise invalid_field("the object does not match its Object Type")
    obj = common.new_object(ctx, src.object_type, uid=src.uid)
    sealer = await rt.services.keys.current(tenant)
    found = objects.seal_registered(obj, sealer, src.item)
    if src.object_type == ObjectType.Certificate:
        found.update(certificates.certificate_attributes(src.item))
    for name, (typ, value) in found.items():
        obj.set(name, typ, value)
    args: list[attrs.AttributeArg] = []
    carried: dict[str, Item] = {}
    for name, item in src.attributes:
        value = (attrs.T_VALUE, item[1], item[2])
        rule = attrs.rule_for(name)
        if name in _DROPPED or name in found or rule is None:
            continue
        try:
            attrs.check_type(name, value)
        except KmipError:
            continue  # a value of the wrong type is the source's problem: left behind
        if name in _CARRIED:
            carried.setdefault(name, value)
        elif rule.init:
            args.append(attrs.AttributeArg(name, None, value))
    common.finish_new_object(ctx, obj, args)
    # Registered here now (Initial Date); created when the source made it.
    first = carried.pop("Original Creation Date", None) or carried.pop("Initial Date", None)
    carried.pop("Initial Date", None)
    if first is not None:
        obj.attributes["Original Creation Date"] = [first]
    for name, value in carried.items():
        obj.attributes[name] = [value]
    state = carried.get("State")
    if state is not None:
        try:
            obj.state = int(State(state[2]))
        except ValueError:
            raise invalid_field(f"the source gives an unknown State {state[2]}") from None
        if obj.state in (State.Active, State.Deactivated) and "Activation Date" not in carried:
            obj.set("Activation Date", ttlv.DATE_TIME, obj.first("Original Creation Date"))
    obj.set("Fresh", ttlv.BOOLEAN, False)  # it was (or could have been) served before
    return obj


def _digest(obj: ManagedObject) -> bytes | None:
    value = obj.first("Digest")
    if value is None:
        return None
    found = ttlv.value((0, ttlv.STRUCTURE, value), Tag.DigestValue)
    return found if isinstance(found, bytes) else None


async def import_one(rt: Runtime, tenant: str, src: SourceObject) -> Outcome:
    state = next((v[2] for n, v in src.attributes if n == "State"), None)
    if state in _GONE:
        return Outcome(src.uid, "skipped", "destroyed in the source: no key material to import")
    try:
        obj = await build(rt, tenant, src)
    except KmipError as e:
        return Outcome(src.uid, "failed", f"cannot be registered: {e.message}")
    for _attempt in range(2):
        rec = await rt.store.get_object(tenant, src.uid)
        if rec is not None:
            here = ManagedObject.from_record(rec)
            theirs, ours = _digest(obj), _digest(here)
            if here.object_type == obj.object_type and theirs is not None and theirs == ours:
                return Outcome(src.uid, "skipped", "already imported")
            return Outcome(
                src.uid,
                "failed",
                "conflict: this uid already exists here with different key material; "
                "left unchanged",
            )
        try:
            await rt.services.vault.insert(obj)
        except StoreConflict:
            continue  # another tenant's, or imported meanwhile: look again
        rt.services.audit.admin("object imported", tenant=tenant, uid=src.uid)
        return Outcome(src.uid, "imported")
    return Outcome(src.uid, "failed", "conflict: this uid is taken by an object of another tenant")


async def run_import(
    rt: Runtime,
    tenant: str,
    source: Iterator[SourceObject | Outcome],
    advance: Callable[[], object],
) -> Summary:
    """Imports everything ``source`` yields (an Outcome is an object the source could
    not give); stops at a SourceError, keeping what was done."""
    await require_tenant(rt, tenant)
    summary = Summary()
    try:
        while True:
            # Reading the source blocks (network, file): off the event loop.
            src = await asyncio.to_thread(next, source, None)
            if src is None:
                break
            if isinstance(src, Outcome):
                summary.outcomes.append(src)
            else:
                summary.outcomes.append(await import_one(rt, tenant, src))
            advance()
    except SourceError as e:
        summary.stopped = str(e)
    return summary


# -- source: a PyKMIP server's SQLite database ----------------------------------------------
# PyKMIP (kmip/pie/objects.py, sqltypes.py) stores one row per object in managed_objects
# (uid INTEGER, class_type, value = the raw bytes), with keys, crypto_objects,
# secret_data_objects, opaque_objects, certificates and managed_object_names beside it.
# Its enumerations are stored as their KMIP numbers (-1 for none).
_PYKMIP_KEYS = {"SymmetricKey": ObjectType.SymmetricKey, "PublicKey": ObjectType.PublicKey,
                "PrivateKey": ObjectType.PrivateKey}  # fmt: skip


class PykmipDatabase:
    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise AdminError(f"{path} does not exist")
        try:
            # Read from a worker thread, one call at a time.
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            raise AdminError(f"{path} is not an SQLite database ({e})") from None
        if not {"managed_objects", "managed_object_names"} <= tables:
            raise AdminError(f"{path} is not a PyKMIP server database (no managed_objects)")
        self.tables = tables

    def uids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT uid FROM managed_objects ORDER BY uid")]

    def _one(self, sql: str, uid: int) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.db.execute(sql, (uid,)).fetchone()
        return row

    def objects(self) -> Iterator[SourceObject | Outcome]:
        for uid in self.uids():
            try:
                yield self.read(uid)
            except sqlite3.DatabaseError as e:
                raise SourceError(f"reading the PyKMIP database failed at uid {uid}: {e}") from None
            except ValueError as e:
                yield Outcome(str(uid), "failed", str(e))

    def read(self, uid: int) -> SourceObject:
        row = self._one(
            "SELECT class_type, value, initial_date FROM managed_objects WHERE uid = ?", uid
        )
        assert row is not None
        class_type, raw, initial = row
        raw = bytes(raw or b"")
        crypto = self._one(
            "SELECT cryptographic_usage_mask, state FROM crypto_objects WHERE uid = ?", uid
        )
        out: list[tuple[str, Item]] = []
        for name, name_type in self.db.execute(
            "SELECT name, name_type FROM managed_object_names WHERE mo_uid = ? "
            "ORDER BY name_index, id",
            (uid,),
        ):
            kind = name_type if name_type and name_type > 0 else NameType.UninterpretedTextString
            out.append(("Name", ttlv.struct(
                attrs.T_VALUE, ttlv.text(Tag.NameValue, name), ttlv.enum(Tag.NameType, kind)
            )))  # fmt: skip
        if crypto is not None:
            mask, state = crypto
            if mask:
                out.append(("Cryptographic Usage Mask", ttlv.integer(attrs.T_VALUE, mask)))
            if state is not None and state > 0:
                out.append(("State", ttlv.enum(attrs.T_VALUE, state)))
        if initial:
            out.append(("Initial Date", ttlv.date_time(attrs.T_VALUE, initial)))
        if "object_group_map" in self.tables:
            for (group,) in self.db.execute(
                "SELECT g.object_group FROM object_group_map m JOIN object_groups g "
                "ON g.id = m.object_group_id WHERE m.managed_object_id = ?",
                (uid,),
            ):
                out.append(("Object Group", ttlv.text(attrs.T_VALUE, group)))
        object_type, item = self._item(uid, class_type, raw)
        return SourceObject(str(uid), object_type, item, out)

    def _item(self, uid: int, class_type: str, raw: bytes) -> tuple[int, Item]:
        material = ttlv.struct(Tag.KeyValue, ttlv.byte_string(Tag.KeyMaterial, raw))
        if class_type in _PYKMIP_KEYS:
            key = self._one(
                "SELECT cryptographic_algorithm, cryptographic_length, key_format_type, "
                "_kdw_wrapping_method FROM keys WHERE uid = ?",
                uid,
            )
            if key is None:
                raise ValueError("its key row is missing from the PyKMIP database")
            alg, length, fmt, wrapping = key
            if wrapping is not None and wrapping > 0:
                raise ValueError("stored wrapped by another key; import it with --from-kmip")
            object_type = _PYKMIP_KEYS[class_type]
            block = ttlv.struct(
                Tag.KeyBlock,
                ttlv.enum(Tag.KeyFormatType, fmt if fmt and fmt > 0 else KeyFormatType.Raw),
                material,
                ttlv.enum(Tag.CryptographicAlgorithm, alg) if alg and alg > 0 else None,
                ttlv.integer(Tag.CryptographicLength, length) if length and length > 0 else None,
            )
            return object_type, ttlv.struct(objects.OBJECT_TAGS[object_type], block)
        if class_type == "SecretData":
            kind = self._one("SELECT data_type FROM secret_data_objects WHERE uid = ?", uid)
            block = ttlv.struct(
                Tag.KeyBlock, ttlv.enum(Tag.KeyFormatType, KeyFormatType.Opaque), material
            )
            return ObjectType.SecretData, ttlv.struct(
                Tag.SecretData,
                ttlv.enum(Tag.SecretDataType, kind[0] if kind and kind[0] > 0 else 1),
                block,
            )
        if class_type == "OpaqueData":
            kind = self._one("SELECT opaque_type FROM opaque_objects WHERE uid = ?", uid)
            return ObjectType.OpaqueObject, ttlv.struct(
                Tag.OpaqueObject,
                ttlv.enum(Tag.OpaqueDataType, kind[0] if kind else 0x80000000),
                ttlv.byte_string(Tag.OpaqueDataValue, raw),
            )
        if class_type in ("X509Certificate", "Certificate"):
            kind = self._one("SELECT certificate_type FROM certificates WHERE uid = ?", uid)
            return ObjectType.Certificate, ttlv.struct(
                Tag.Certificate,
                ttlv.enum(Tag.CertificateType, kind[0] if kind and kind[0] > 0 else 1),
                ttlv.byte_string(Tag.CertificateValue, raw),
            )
        raise ValueError(f"PyKMIP object class {class_type!r} is not imported")

    def close(self) -> None:
        self.db.close()


# -- source: a live KMIP server ----------------------------------------------------------------
_HEADER = struct.Struct(">3sBI")
_MAX_MESSAGE = 16 * 1024 * 1024
# Asked for first; the highest 1.x version both sides speak is used after that.
_VERSIONS = ((1, 4), (1, 3), (1, 2), (1, 1), (1, 0))
_PAGE = 1000  # Locate page size where the source speaks 1.3+ (Offset Items)


class KmipSource:
    """A small blocking KMIP 1.2 client over mutually authenticated TLS: Locate, Get,
    Get Attributes; a dropped connection is retried once, then the source is gone."""

    def __init__(self, address: str, cert: str, key: str, ca: str, timeout: float = 30.0) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AdminError(f"--from-kmip wants HOST:PORT, not {address!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout = timeout
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self.ctx.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as e:
            raise AdminError(f"cannot read the CA file {ca}: {e}") from None
        try:
            self.ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise AdminError(f"cannot use client certificate {cert} with key {key}: {e}") from None
        self.sock: ssl.SSLSocket | None = None
        self.answered = False  # a first failure is "cannot reach", later ones "stopped"
        self.version = (1, 2)

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            return self.ctx.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _recv(self, sock: ssl.SSLSocket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the source closed the connection")
            buf += chunk
        return bytes(buf)

    def _roundtrip(self, request: bytes) -> bytes:
        for attempt in range(2):
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(request)
                head = self._recv(self.sock, 8)
                length = _HEADER.unpack(head)[2]
                if length > _MAX_MESSAGE:
                    raise SourceError(f"the source answered with a {length}-byte message")
                body = self._recv(self.sock, length)
                self.answered = True
                return head + body
            except (OSError, ssl.SSLError) as e:
                self.close()
                if not self.answered:
                    raise SourceError(
                        f"cannot reach the source {self.host}:{self.port}: {e}"
                    ) from None
                if attempt == 1:
                    raise SourceError(
                        f"the source {self.host}:{self.port} stopped answering ({e})"
                    ) from None
        raise AssertionError("unreachable")

    def call(self, operation: Operation, *payload: Item | None) -> Item:
        """One operation; its response payload, or Refused with the source's message."""
        message = ttlv.struct(
            Tag.RequestMessage,
            ttlv.struct(
                Tag.RequestHeader,
                ttlv.struct(
                    Tag.ProtocolVersion,
                    ttlv.integer(Tag.ProtocolVersionMajor, self.version[0]),
                    ttlv.integer(Tag.ProtocolVersionMinor, self.version[1]),
                ),
                ttlv.integer(Tag.BatchCount, 1),
            ),
            ttlv.struct(
                Tag.BatchItem,
                ttlv.enum(Tag.Operation, operation),
                ttlv.struct(Tag.RequestPayload, *payload),
            ),
        )
        try:
            response = _native.decode(self._roundtrip(_native.encode(message)))
        except TtlvError as e:
            raise SourceError(f"the source sent a message that is not KMIP: {e}") from None
        item = ttlv.find(response, Tag.BatchItem)
        status = ttlv.value(item, Tag.ResultStatus)
        if status != ResultStatus.Success:
            text = ttlv.value(item, Tag.ResultMessage) or "no message"
            raise Refused(f"{operation.name} failed at the source: {text}")
        found = ttlv.find(item, Tag.ResponsePayload)
        return found if found is not None else ttlv.struct(Tag.ResponsePayload)

    def negotiate(self) -> None:
        """Discover Versions (§4.26): speak the highest 1.x version the source offers."""
        try:
            offered = self.call(
                Operation.DiscoverVersions,
                *(
                    ttlv.struct(
                        Tag.ProtocolVersion,
                        ttlv.integer(Tag.ProtocolVersionMajor, major),
                        ttlv.integer(Tag.ProtocolVersionMinor, minor),
                    )
                    for major, minor in _VERSIONS
                ),
            )
        except Refused:
            return  # a 1.0 server without Discover Versions: stay at 1.2, it may answer
        versions = [
            (ttlv.value(v, Tag.ProtocolVersionMajor), ttlv.value(v, Tag.ProtocolVersionMinor))
            for v in ttlv.find_all(offered, Tag.ProtocolVersion)
        ]
        usable = [v for v in versions if v in _VERSIONS]
        if usable:
            self.version = max(usable)

    def locate(self) -> list[str]:
        """Every uid the source's Locate finds, in pages where it speaks 1.3+."""
        out: list[str] = []
        seen: set[str] = set()
        offset = 0
        try:
            while True:
                paging = self.version >= (1, 3)
                payload = self.call(
                    Operation.Locate,
                    ttlv.integer(Tag.MaximumItems, _PAGE) if paging else None,
                    ttlv.integer(Tag.OffsetItems, offset) if paging and offset else None,
                )
                page = [str(v[2]) for v in ttlv.find_all(payload, Tag.UniqueIdentifier)]
                offset += len(page)
                out += [uid for uid in page if uid not in seen]
                seen.update(page)
                if not paging or len(page) < _PAGE:
                    return out
        except Refused as e:
            raise AdminError(str(e)) from None

    def fetch(self, uid: str) -> SourceObject | Outcome:
        """Get and Get Attributes of one uid; a KMIP failure is that object's outcome."""
        ident = ttlv.text(Tag.UniqueIdentifier, uid)
        try:
            listed = self.call(Operation.GetAttributes, ident)
        except Refused as e:
            return Outcome(uid, "failed", str(e))
        out: list[tuple[str, Item]] = []
        for attr in ttlv.find_all(listed, Tag.Attribute):
            name, value = ttlv.value(attr, Tag.AttributeName), ttlv.find(attr, Tag.AttributeValue)
            if isinstance(name, str) and value is not None:
                out.append((name, value))
        state = next((v[2] for n, v in out if n == "State"), None)
        if state in _GONE:
            return Outcome(uid, "skipped", "destroyed in the source: no key material to import")
        try:
            got = self.call(Operation.Get, ident)
        except Refused as e:
            return Outcome(uid, "failed", str(e))
        object_type = ttlv.value(got, Tag.ObjectType)
        tag = objects.OBJECT_TAGS.get(object_type) if isinstance(object_type, int) else None
        item = ttlv.find(got, tag) if tag is not None else None
        if item is None or object_type is None:
            return Outcome(uid, "failed", "the source's Get answer holds no object")
        return SourceObject(uid, int(object_type), item, out)

    def objects(self, uids: list[str]) -> Iterator[SourceObject | Outcome]:
        for uid in uids:
            yield self.fetch(uid)


def read_uids(path: Path) -> list[str]:
    """One uid a line; blank lines and ``#`` comments skipped, duplicates once."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AdminError(f"{path} is not a text file of uids") from None
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        uid = line.strip()
        if not uid or uid.startswith("#"):
            continue
        if any(c.isspace() for c in uid) or len(uid) > 256 or not uid.isprintable():
            raise AdminError(f"{path}:{number}: not a uid: {uid[:40]!r}")
        if uid not in out:
            out.append(uid)
    if not out:
        raise AdminError(f"{path} lists no uids")
    return out
