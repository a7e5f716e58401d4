"""Key administration from the command line: the day-2 tasks of vCenter and array admins.

Every change goes through the KMIP operation handlers themselves (Create, Revoke,
Destroy from :mod:`kmipfast.operations`), called with a context whose client is the OS
user, so a key made or destroyed here follows exactly the rules and the sealing a KMIP
client gets.  After a revoke or destroy the store's data version is moved on, and the
command waits until every running server reports having dropped its cached objects:
when it says "destroyed", no server serves that key any more (DESIGN §5).

Nothing here reads or prints key material; ``show`` prints attributes only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmipfast import _native
from kmipfast.app import Runtime
from kmipfast.audit import os_user
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import (
    CryptographicAlgorithm,
    NameType,
    ObjectType,
    Operation,
    RevocationReasonCode,
    RNGAlgorithm,
    State,
)
from kmipfast.protocol.errors import KmipError
from kmipfast.protocol.processor import Context, Session
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject, attribute_bytes

_USAGE_ENCRYPT_DECRYPT = 0x4 | 0x8
# Attributes `show` leaves out: the digest is derived from the key material.
_HIDDEN = frozenset({"Digest"})
_ENUMS: dict[str, Any] = {
    "State": State,
    "Object Type": ObjectType,
    "Cryptographic Algorithm": CryptographicAlgorithm,
}
_TAG_ENUMS: dict[int, Any] = {
    int(Tag.RNGAlgorithm): RNGAlgorithm,
    int(Tag.RevocationReasonCode): RevocationReasonCode,
    int(Tag.NameType): NameType,
}


class AdminError(Exception):
    """A refused or failed administrative action, said in one line."""


def _context(rt: Runtime, tenant: str, operation: Operation) -> Context:
    session = Session(client=f"cli:{os_user()}", tenant=tenant, fingerprint="", peer="local")
    return Context(
        session=session,
        services=rt.services,
        version=(1, 4),
        now=int(time.time()),
        operation=operation,
    )


async def run_operation(rt: Runtime, tenant: str, operation: Operation, payload: Item) -> Item:
    """One KMIP operation through its handler, as tenant ``tenant``; a KMIP error becomes
    an AdminError with the handler's message."""
    from kmipfast.operations import DISPATCH

    ctx = _context(rt, tenant, operation)
    try:
        return await DISPATCH[operation](ctx, payload)
    except KmipError as e:
        raise AdminError(e.message) from None


async def require_tenant(rt: Runtime, tenant: str) -> None:
    if await rt.store.get_tenant(tenant) is None:
        raise AdminError(f"no tenant {tenant!r} (see `kmipfast tenant list`)")


def _attribute(name: str, typ: int, value: Any) -> Item:
    return ttlv.struct(
        Tag.Attribute, ttlv.text(Tag.AttributeName, name), (int(Tag.AttributeValue), typ, value)
    )


def parse_algorithm(name: str) -> int:
    wanted = name.replace("-", "").replace("_", "").upper()
    for member in CryptographicAlgorithm:
        if member.name.replace("_", "").upper() == wanted:
            return int(member)
    raise AdminError(f"unknown algorithm {name!r} (e.g. AES, DES3, HMAC_SHA256)")


# -- create --------------------------------------------------------------------------------
async def create_key(rt: Runtime, tenant: str, name: str, algorithm: str, length: int) -> str:
    """A new symmetric key, generated and sealed like a KMIP Create, Active at once (a
    key made by an administrator is made to be used); returns its uid."""
    if not name.strip():
        raise AdminError("--name must not be empty")
    await require_tenant(rt, tenant)
    alg = parse_algorithm(algorithm)
    name_value = ttlv.struct(
        Tag.AttributeValue,
        ttlv.text(Tag.NameValue, name),
        ttlv.enum(Tag.NameType, NameType.UninterpretedTextString),
    )
    template = ttlv.struct(
        Tag.TemplateAttribute,
        _attribute("Cryptographic Algorithm", ttlv.ENUMERATION, alg),
        _attribute("Cryptographic Length", ttlv.INTEGER, length),
        _attribute("Cryptographic Usage Mask", ttlv.INTEGER, _USAGE_ENCRYPT_DECRYPT),
        _attribute("Name", ttlv.STRUCTURE, name_value[2]),
        # Active from the start, in the same durable write: never left half made.
        _attribute("Activation Date", ttlv.DATE_TIME, int(time.time())),
    )
    payload = ttlv.struct(
        Tag.RequestPayload, ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey), template
    )
    if await find_by_name(rt, tenant, name):
        raise AdminError(f"tenant {tenant} already has an object named {name!r}")
    created = await run_operation(rt, tenant, Operation.Create, payload)
    uid = str(ttlv.value(created, Tag.UniqueIdentifier))
    rt.services.audit.admin("key created", tenant=tenant, uid=uid)
    return uid


async def find_by_name(rt: Runtime, tenant: str, name: str) -> list[str]:
    value = ttlv.struct(
        Tag.AttributeValue,
        ttlv.text(Tag.NameValue, name),
        ttlv.enum(Tag.NameType, NameType.UninterpretedTextString),
    )
    return await rt.store.locate(tenant, attr_equals=[("Name", _native.encode(value))])


# -- show ----------------------------------------------------------------------------------
async def find_object(rt: Runtime, uid: str, tenant: str | None) -> ManagedObject:
    """The object ``uid``, in ``tenant`` or (without one) in whichever tenant has it."""
    tenants = [tenant] if tenant else [t.name for t in await rt.store.list_tenants()]
    if tenant:
        await require_tenant(rt, tenant)
    for name in tenants:
        rec = await rt.store.get_object(name, uid)
        if rec is not None:
            return ManagedObject.from_record(rec)
    where = f" in tenant {tenant}" if tenant else ""
    raise AdminError(f"no object with uid {uid!r}{where}")


def render_value(name: str, item: Item) -> str:
    """One attribute value as text; never key material (Digest is left out by callers)."""
    _tag, typ, value = item
    if typ == ttlv.DATE_TIME:
        return iso(value)
    if typ == ttlv.ENUMERATION and _tag in _TAG_ENUMS:
        return enum_name(_TAG_ENUMS[_tag], value)
    if typ == ttlv.ENUMERATION and name in _ENUMS:
        try:
            return str(_ENUMS[name](value).name)
        except ValueError:
            return str(value)
    if name == "Name" and typ == ttlv.STRUCTURE:
        return str(ttlv.value(item, Tag.NameValue))
    if typ == ttlv.STRUCTURE:
        return "; ".join(
            f"{ttlv.tag_name(c[0])}={render_value(name, c)}" for c in ttlv.children(item)
        )
    if typ == ttlv.BYTE_STRING:
        return f"<{len(value)} bytes>"
    if typ == ttlv.INTEGER and name == "Cryptographic Usage Mask":
        return f"0x{value:X}"
    return str(value)


def iso(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(obj: ManagedObject) -> dict[str, Any]:
    """What `keys show` prints: identity, state, dates and every attribute but Digest."""
    attributes = {
        name: [render_value(name, v) for v in values]
        for name, values in sorted(obj.attributes.items())
        if name not in _HIDDEN
    }
    return {
        "uid": obj.uid,
        "tenant": obj.tenant,
        "type": enum_name(ObjectType, obj.object_type),
        "state": enum_name(State, obj.state),
        "has_material": obj.key_blob is not None,
        "attributes": attributes,
    }


def enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


# -- select, revoke, destroy ------------------------------------------------------------------
async def select(
    rt: Runtime, uid: str | None, x_identifier: str | None, tenant: str | None
) -> list[ManagedObject]:
    """The objects one command acts on: one uid, or every object whose x-Identifier is
    ``x_identifier`` (all keys of one VM or host), in one tenant or all."""
    if (uid is None) == (x_identifier is None):
        raise AdminError("name either a UID or --x-identifier ID")
    if uid is not None:
        return [await find_object(rt, uid, tenant)]
    assert x_identifier is not None
    if tenant:
        await require_tenant(rt, tenant)
    tenants = [tenant] if tenant else [t.name for t in await rt.store.list_tenants()]
    wanted = attribute_bytes((0, ttlv.TEXT_STRING, x_identifier))
    out = []
    for name in tenants:
        for found in await rt.store.locate(name, attr_equals=[("x-Identifier", wanted)]):
            rec = await rt.store.get_object(name, found)
            if rec is not None:
                out.append(ManagedObject.from_record(rec))
    if not out:
        raise AdminError(f"no object has x-Identifier {x_identifier!r}")
    return out


_REVOCATION_CODES = {
    "unspecified": RevocationReasonCode.Unspecified,
    "compromise": RevocationReasonCode.KeyCompromise,
    "superseded": RevocationReasonCode.Superseded,
    "cessation": RevocationReasonCode.CessationOfOperation,
    "withdrawn": RevocationReasonCode.PrivilegeWithdrawn,
    "affiliation": RevocationReasonCode.AffiliationChanged,
}
REVOCATION_REASONS = tuple(_REVOCATION_CODES)


async def revoke(rt: Runtime, obj: ManagedObject, reason: str = "cessation") -> None:
    """KMIP Revoke (§4.20) of one object: Active -> Deactivated (Compromised for
    ``compromise``)."""
    code = _REVOCATION_CODES.get(reason)
    if code is None:
        raise AdminError(f"unknown revocation reason {reason!r}")
    payload = ttlv.struct(
        Tag.RequestPayload,
        ttlv.text(Tag.UniqueIdentifier, obj.uid),
        ttlv.struct(Tag.RevocationReason, ttlv.enum(Tag.RevocationReasonCode, code)),
    )
    await _changing(rt, obj, Operation.Revoke, payload, "key revoked")


async def destroy(rt: Runtime, obj: ManagedObject) -> None:
    """KMIP Destroy (§4.21): the material is overwritten in the store; an Active key
    must be revoked first, as for any KMIP client."""
    payload = ttlv.struct(Tag.RequestPayload, ttlv.text(Tag.UniqueIdentifier, obj.uid))
    await _changing(rt, obj, Operation.Destroy, payload, "key destroyed")


async def _changing(
    rt: Runtime, obj: ManagedObject, operation: Operation, payload: Item, action: str
) -> None:
    try:
        await run_operation(rt, obj.tenant, operation, payload)
    except AdminError as e:
        rt.services.audit.admin(
            action.replace("key ", "key not "), tenant=obj.tenant, uid=obj.uid,
            reason=str(e),
        )  # fmt: skip
        raise AdminError(f"{obj.uid}: {e}") from None
    rt.services.audit.admin(action, tenant=obj.tenant, uid=obj.uid)


async def revoke_and_destroy(rt: Runtime, obj: ManagedObject) -> None:
    """Revoke if the state needs it, then destroy (orphan clean-up)."""
    if obj.state in (State.Active,):
        await revoke(rt, obj)
    await destroy(rt, obj)


# -- list -------------------------------------------------------------------------------------
_STATE_NAMES = {re.sub(r"[^a-z]", "", s.name.lower()): s for s in State}
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_state(text: str) -> State:
    found = _STATE_NAMES.get(re.sub(r"[^a-z]", "", text.lower()))
    if found is None:
        names = ", ".join(s.name for s in State)
        raise AdminError(f"unknown state {text!r} (one of {names})")
    return found


def parse_age(text: str) -> int:
    """``30d``, ``12h``, ``45m``, ``2w`` -> seconds."""
    m = _AGE.match(text)
    if m is None:
        raise AdminError(f"cannot read age {text!r}: use a number and s, m, h, d or w, e.g. 30d")
    return int(m.group(1)) * _AGE_SECONDS[m.group(2)]


@dataclass
class Filters:
    state: State | None = None
    name: str | None = None  # matches Name or x-Name
    x_identifier: str | None = None
    component: str | None = None
    older_than: int | None = None  # seconds

    def match(self, obj: ManagedObject, now: int) -> bool:
        if self.state is not None and obj.state != self.state:
            return False
        if self.name is not None and self.name not in names_of(obj):
            return False
        if self.x_identifier is not None and obj.first("x-Identifier") != self.x_identifier:
            return False
        if self.component is not None and obj.first("x-Component") != self.component:
            return False
        return not (self.older_than is not None and now - created_of(obj) < self.older_than)


def names_of(obj: ManagedObject) -> list[str]:
    out = [str(ttlv.value(v, Tag.NameValue)) for v in obj.attributes.get("Name", [])]
    out += [str(v[2]) for v in obj.attributes.get("x-Name", [])]
    return out


def created_of(obj: ManagedObject) -> int:
    """When the key was made: imported keys keep the date their first server gave them."""
    return int(obj.first("Original Creation Date") or obj.first("Initial Date") or obj.created)


async def list_objects(rt: Runtime, tenant: str | None, filters: Filters) -> list[ManagedObject]:
    if tenant:
        await require_tenant(rt, tenant)
    now = int(time.time())
    out = []
    async for rec in rt.store.list_objects(tenant):
        obj = ManagedObject.from_record(rec)
        if filters.match(obj, now):
            out.append(obj)
    return out


def age(obj: ManagedObject, now: int | None = None) -> str:
    seconds = max(0, (now or int(time.time())) - created_of(obj))
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


# -- orphans ----------------------------------------------------------------------------------
@dataclass
class Inventory:
    ids: set[str] = field(default_factory=set)
    garbage: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-{}]*$")


def read_inventory(path: Path) -> Inventory:
    """IDs still in vCenter's inventory: one a line, or a CSV with an ``id`` column (as
    exported from vCenter: VM and host UUIDs).  Blank lines and ``#`` comments are
    skipped; a line that is not an ID is recorded as garbage, never guessed at."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AdminError(f"inventory {path} is not a text file (UTF-8)") from None
    lines = text.splitlines()
    inv = Inventory()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    header = [h.strip().lower() for h in next(csv.reader([first]))] if first else []
    if "," in first or (header and header[0] == "id"):
        if "id" not in header:
            raise AdminError(
                f"inventory {path}: a CSV file needs an 'id' column (header: {first.strip()!r})"
            )
        column = header.index("id")
        reader = csv.reader(io.StringIO(text))
        started = False
        for number, row in enumerate(reader, 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if not started:
                started = True
                continue
            value = row[column].strip() if column < len(row) else ""
            _take(inv, number, value)
        return inv
    for number, line in enumerate(lines, 1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        _take(inv, number, value)
    return inv


def _take(inv: Inventory, number: int, value: str) -> None:
    if not value:
        inv.garbage.append((number, "no id"))
    elif not _ID.match(value) or len(value) > 256:
        shown = value if len(value) <= 40 else value[:37] + "..."
        inv.garbage.append((number, f"not an id: {shown!r}"))
    else:
        inv.ids.add(value)


async def orphans(rt: Runtime, tenant: str, inventory: Iterable[str]) -> list[ManagedObject]:
    """The tenant's live keys that carry an x-Identifier (vCenter set it) not in
    ``inventory``.  Keys without one (made by an administrator, a trusted key
    provider's top-level key) are never orphans."""
    await require_tenant(rt, tenant)
    known = set(inventory)
    out = []
    async for rec in rt.store.list_objects(tenant):
        if rec.state in (State.Destroyed, State.DestroyedCompromised):
            continue
        obj = ManagedObject.from_record(rec)
        ident = obj.first("x-Identifier")
        if ident is not None and str(ident) not in known:
            out.append(obj)
    return out


async def each(
    objs: list[ManagedObject],
    step: Callable[[ManagedObject], Awaitable[None]],
    advance: Callable[[], None],
) -> list[tuple[ManagedObject, str]]:
    """Runs ``step`` on every object; returns the failures with their reasons."""
    failed = []
    for obj in objs:
        try:
            await step(obj)
        except AdminError as e:
            failed.append((obj, str(e)))
        advance()
    return failed
