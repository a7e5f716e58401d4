"""Managed objects as handlers see them, and the cache in front of the store.

The cache holds what the store holds (sealed key bytes, attributes), never plaintext:
a Get of a cached object does no I/O and no HSM call when the tenant's master key is
held.  Writes go to the store first and reach the cache only once they are durable,
so after Revoke or Destroy has answered success no request can see the old state.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kmipfast import _native
from kmipfast.protocol import ttlv
from kmipfast.protocol.attributes import T_VALUE
from kmipfast.protocol.errors import not_found
from kmipfast.protocol.ttlv import Item
from kmipfast.store.base import ObjectRecord, Store, StoreConflict

T = TypeVar("T")
_UPDATE_ATTEMPTS = 4


@dataclass(slots=True)
class ManagedObject:
    uid: str
    tenant: str
    object_type: int
    state: int
    key_blob: bytes | None = field(repr=False)
    # How the sealed bytes are laid out (see operations/objects.py): never secret.
    meta: dict[str, Any]
    # Attribute name -> instances (AttributeValue items); list position is the index.
    attributes: dict[str, list[Item]] = field(repr=False)
    created: int
    updated: int
    version: int = 0
    # (master key, payload) of a plain Get of this object, made by the first one served
    # from the cache (operations/get.py); never copied, so a changed object has none.
    served: tuple[Any, Item] | None = field(default=None, repr=False, compare=False)

    @property
    def binding(self) -> bytes:
        """What every sealed blob of this object is bound to."""
        return binding_of(self.tenant, self.uid)

    def copy(self) -> ManagedObject:
        return ManagedObject(
            uid=self.uid,
            tenant=self.tenant,
            object_type=self.object_type,
            state=self.state,
            key_blob=self.key_blob,
            meta=dict(self.meta),
            attributes={k: list(v) for k, v in self.attributes.items()},
            created=self.created,
            updated=self.updated,
            version=self.version,
        )

    def first(self, name: str) -> Any:
        """The value of the first instance of an attribute, or None."""
        values = self.attributes.get(name)
        return values[0][2] if values else None

    def set(self, name: str, typ: int, value: Any) -> None:
        """Sets a single-instance attribute."""
        self.attributes[name] = [(T_VALUE, typ, value)]

    def touch(self, now: int) -> None:
        self.updated = now
        self.set("Last Change Date", ttlv.DATE_TIME, now)

    def to_record(self) -> ObjectRecord:
        return ObjectRecord(
            uid=self.uid,
            tenant=self.tenant,
            object_type=self.object_type,
            state=self.state,
            key_blob=self.key_blob,
            key_meta=json.dumps(self.meta, separators=(",", ":")).encode(),
            attributes={
                name: [_native.encode(v) for v in values]
                for name, values in self.attributes.items()
            },
            created=self.created,
            updated=self.updated,
            version=self.version,
        )

    @staticmethod
    def from_record(rec: ObjectRecord) -> ManagedObject:
        return ManagedObject(
            uid=rec.uid,
            tenant=rec.tenant,
            object_type=rec.object_type,
            state=rec.state,
            key_blob=rec.key_blob,
            meta=json.loads(rec.key_meta) if rec.key_meta else {},
            attributes={
                name: [_native.decode(v) for v in values] for name, values in rec.attributes.items()
            },
            created=rec.created,
            updated=rec.updated,
            version=rec.version,
        )


def generation_of(meta: dict[str, Any]) -> int:
    """The tenant master key generation a sealed key is under (``meta["tmk"]``, 1 before
    generations existed)."""
    return int(meta.get("tmk", 1))


def binding_of(tenant: str, uid: str) -> bytes:
    return f"{tenant}\x00{uid}".encode()


def attribute_bytes(value: Item) -> bytes:
    """Canonical bytes of an AttributeValue, as the store compares them (Locate)."""
    return _native.encode((T_VALUE, value[1], value[2]))


class Vault:
    """Objects by (tenant, uid), through a bounded LRU cache of stored rows."""

    def __init__(self, store: Store, *, cache_size: int = 100_000) -> None:
        self.store = store
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], ManagedObject] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.hits = 0
        self.misses = 0
        self._epoch = store.foreign_epoch()
        # Moves on with every change to the cache's contents other than a read filling
        # it: a read that was in flight across one must not put its row in the cache.
        self._generation = 0

    def lock(self, tenant: str, uid: str) -> asyncio.Lock:
        """Serializes read-modify-write of one object within this process."""
        key = (tenant, uid)
        found = self._locks.get(key)
        if found is None:
            found = asyncio.Lock()
            self._locks[key] = found
        return found

    def _remember(self, obj: ManagedObject) -> None:
        self._generation += 1
        self._put(obj)

    def _put(self, obj: ManagedObject) -> None:
        key = (obj.tenant, obj.uid)
        self._cache[key] = obj
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, tenant: str, uid: str | None = None) -> None:
        self._generation += 1
        if uid is not None:
            self._cache.pop((tenant, uid), None)
            return
        for key in [k for k in self._cache if k[0] == tenant]:
            del self._cache[key]

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()

    def cached(self, tenant: str, uid: str) -> ManagedObject | None:
        """The object if the cache holds it and no other process has written since it
        was cached.  Not counted: a caller that serves it counts the hit, one that
        does not goes on to :meth:`fetch`, which counts the hit or the miss."""
        epoch = self.store.foreign_epoch()
        if epoch != self._epoch:
            # Another process wrote: whatever it changed must not be served from here.
            self._epoch = epoch
            self.clear()
        key = (tenant, uid)
        obj = self._cache.get(key)
        if obj is not None:
            self._cache.move_to_end(key)
        return obj

    async def fetch(self, tenant: str, uid: str) -> ManagedObject:
        """The object; another tenant's uid is Item Not Found, like a missing one.
        The result is shared with the cache: copy() before changing it."""
        obj = self.cached(tenant, uid)
        if obj is not None:
            self.hits += 1
            return obj
        self.misses += 1
        generation = self._generation
        rec = await self.store.get_object(tenant, uid)
        if rec is None:
            raise not_found(uid)
        obj = ManagedObject.from_record(rec)
        # The row was read before a change heard meanwhile (another node's Destroy, a
        # write here) may have committed: cached, it would outlive that change.
        if generation == self._generation and self.store.foreign_epoch() == self._epoch:
            self._put(obj)
        return obj

    async def insert(self, obj: ManagedObject) -> None:
        await self.store.create_object(obj.to_record())
        self._remember(obj)

    async def save(self, obj: ManagedObject) -> None:
        """Writes a changed copy back; durable before it returns."""
        rec = obj.to_record()
        try:
            if obj.key_blob is None and obj.meta.get("destroyed"):
                await self.store.destroy_object(rec, obj.version)
            else:
                await self.store.update_object(rec, obj.version)
        except StoreConflict:
            self.forget(obj.tenant, obj.uid)
            raise
        obj.version = rec.version
        self._remember(obj)

    async def update(
        self, tenant: str, uid: str, change: Callable[[ManagedObject], T]
    ) -> tuple[ManagedObject, T]:
        """Read-modify-write of one object: ``change`` edits a private copy, which is
        saved durably.  If another process changed the row meanwhile (a re-encryption,
        another node), the write conflicts and the whole step runs again on a fresh read."""
        async with self.lock(tenant, uid):
            for attempt in range(_UPDATE_ATTEMPTS):
                obj = (await self.fetch(tenant, uid)).copy()
                result = change(obj)
                try:
                    await self.save(obj)
                except StoreConflict:
                    if attempt == _UPDATE_ATTEMPTS - 1:
                        raise
                    continue
                return obj, result
        raise AssertionError("unreachable")

    async def delete(self, tenant: str, uid: str) -> None:
        await self.store.delete_object(tenant, uid)
        self.forget(tenant, uid)

    @staticmethod
    def now() -> int:
        return int(time.time())
