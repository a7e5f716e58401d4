"""The key hierarchy (DESIGN §3): root keys in the HSM, tenant master keys held in
native memory for a bounded time, object keys sealed by the master key.

Theory of operation: a tenant's master key (TMK) is stored only sealed by the tenant's
root key (CRK).  The first request that needs it unseals it in the HSM, off the event
loop, and the resulting :class:`~kmipfast._native.MasterKey` is held for
``hold_seconds``; a refresh starts in the background once 80 % of that time has passed,
so a busy tenant never waits on the HSM, and an idle one re-proves that its root key
still exists when it comes back.  Concurrent misses share one HSM call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from kmipfast import _native
from kmipfast.errors import HsmError, HsmIntegrityError, HsmKeyNotFound, HsmUnavailable
from kmipfast.protocol.enums import ResultReason
from kmipfast.protocol.errors import KmipError
from kmipfast.store.base import Store, StoreConflict, TenantRecord

log = logging.getLogger("kmipfast.keys")
T = TypeVar("T")


class RootKeys(Protocol):
    """What the hierarchy needs from the place root keys live (the native ``Hsm``)."""

    def generate_root_key(self, label: str) -> None: ...
    def root_key_exists(self, label: str) -> bool: ...
    def destroy_root_key(self, label: str) -> None: ...
    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, _native.MasterKey]: ...
    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> _native.MasterKey: ...


class SoftwareRoot:
    """DEVELOPMENT ONLY: root keys as files under the data dir instead of an HSM.
    Anyone who can read the data dir can read every key.  Never use it in production."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        log.warning(
            "DEVELOPMENT ONLY: software root keys in %s; keys are NOT protected by an HSM",
            directory,
        )

    def _path(self, label: str) -> Path:
        if not label or "/" in label or label.startswith("."):
            raise HsmError(f"invalid root key label {label!r}")
        return self.directory / f"{label}.key"

    def _load(self, label: str) -> _native.MasterKey:
        path = self._path(label)
        try:
            raw = bytearray(path.read_bytes())
        except FileNotFoundError:
            raise HsmKeyNotFound(f"root key {label!r} not found") from None
        try:
            return _native.MasterKey.from_bytes(raw)
        finally:
            raw[:] = bytes(len(raw))

    def generate_root_key(self, label: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(label)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())

    def root_key_exists(self, label: str) -> bool:
        return self._path(label).exists()

    def destroy_root_key(self, label: str) -> None:
        path = self._path(label)
        try:
            with open(path, "r+b") as f:
                f.write(bytes(32))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()
        except FileNotFoundError:
            raise HsmKeyNotFound(f"root key {label!r} not found") from None

    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, _native.MasterKey]:
        root = self._load(label)
        tmk = _native.MasterKey.generate()
        return root.seal_master(tmk, aad), tmk

    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> _native.MasterKey:
        root = self._load(label)
        try:
            return root.open_master(sealed, aad)
        except _native.InvalidUnwrap as e:
            raise HsmIntegrityError(str(e)) from None


def master_aad(tenant: str, version: int) -> bytes:
    """What a sealed master key is bound to: its tenant and its generation."""
    return f"kmipfast/tmk/v1\x00{tenant}\x00{version}".encode()


def hsm_failure(exc: HsmError, tenant: str) -> KmipError:
    """The KMIP answer for an HSM fault while serving ``tenant``."""
    if isinstance(exc, HsmKeyNotFound):
        return KmipError(
            ResultReason.CryptographicFailure,
            f"the root key of tenant {tenant!r} is not in the HSM (shredded?)",
        )
    if isinstance(exc, HsmIntegrityError):
        return KmipError(
            ResultReason.CryptographicFailure,
            f"the master key of tenant {tenant!r} failed its integrity check",
        )
    if isinstance(exc, HsmUnavailable):
        return KmipError(ResultReason.GeneralFailure, f"the HSM is unavailable: {exc}")
    return KmipError(ResultReason.GeneralFailure, f"HSM error: {exc}")


@dataclass(slots=True)
class _Held:
    key: _native.MasterKey
    since: float
    version: int


class KeyHierarchy:
    """Tenant master keys on demand, for a bounded time."""

    def __init__(
        self,
        root: RootKeys,
        store: Store,
        executor: Executor,
        *,
        hold_seconds: float = 300.0,
        on_unseal: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.store = store
        self.executor = executor
        self.hold_seconds = hold_seconds
        self.on_unseal = on_unseal
        self._held: dict[str, _Held] = {}
        self._pending: dict[str, asyncio.Future[_Held]] = {}

    async def _in_executor(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def master(self, tenant: str) -> _native.MasterKey:
        held = self._held.get(tenant)
        now = time.monotonic()
        if held is not None:
            age = now - held.since
            if age < self.hold_seconds:
                if age > 0.8 * self.hold_seconds and tenant not in self._pending:
                    self._start_unseal(tenant)
                return held.key
            self.drop(tenant)
        fut = self._pending.get(tenant) or self._start_unseal(tenant)
        return (await asyncio.shield(fut)).key

    def _start_unseal(self, tenant: str) -> asyncio.Future[_Held]:
        fut: asyncio.Future[_Held] = asyncio.get_running_loop().create_future()
        # A background refresh may fail with nobody waiting: mark it retrieved.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[tenant] = fut
        task = asyncio.ensure_future(self._unseal(tenant, fut))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return fut

    async def _unseal(self, tenant: str, fut: asyncio.Future[_Held]) -> None:
        try:
            rec = await self.store.get_tenant(tenant)
            if rec is None or rec.sealed_master_key is None:
                raise KmipError(
                    ResultReason.CryptographicFailure,
                    f"tenant {tenant!r} has no master key (shredded or never created)",
                )
            try:
                key = await self._in_executor(
                    self.root.unseal_master_key,
                    rec.root_label,
                    rec.sealed_master_key,
                    master_aad(tenant, rec.master_key_version),
                )
            except HsmError as e:
                if isinstance(e, HsmKeyNotFound):
                    self.drop(tenant)
                raise hsm_failure(e, tenant) from None
            held = _Held(key=key, since=time.monotonic(), version=rec.master_key_version)
            old = self._held.get(tenant)
            self._held[tenant] = held
            if old is not None and old.key is not key and old.version != held.version:
                old.key.wipe()
            if self.on_unseal is not None:
                self.on_unseal(tenant)
            fut.set_result(held)
        except BaseException as e:
            fut.set_exception(e)
        finally:
            self._pending.pop(tenant, None)

    def drop(self, tenant: str) -> None:
        """Forget (and wipe) a held master key, e.g. after a shred."""
        held = self._held.pop(tenant, None)
        if held is not None:
            held.key.wipe()

    def drop_all(self) -> None:
        for tenant in list(self._held):
            self.drop(tenant)

    def holds(self, tenant: str) -> bool:
        return tenant in self._held

    async def create_tenant(self, name: str) -> TenantRecord:
        """A new tenant: a root key in the HSM and a master key sealed by it."""
        if await self.store.get_tenant(name) is not None:
            raise StoreConflict(f"tenant {name!r} already exists")
        label = f"kmipfast-root-{name}-{secrets.token_hex(4)}"
        await self._in_executor(self.root.generate_root_key, label)
        try:
            sealed, key = await self._in_executor(
                self.root.new_master_key, label, master_aad(name, 1)
            )
            now = int(time.time())
            rec = TenantRecord(
                name=name,
                root_label=label,
                sealed_master_key=sealed,
                master_key_version=1,
                created=now,
                rotated=None,
            )
            await self.store.create_tenant(rec)
        except BaseException:
            await self._in_executor(self.root.destroy_root_key, label)
            raise
        self._held[name] = _Held(key=key, since=time.monotonic(), version=1)
        return rec
