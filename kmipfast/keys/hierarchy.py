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
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from kmipfast import _native, metrics
from kmipfast.auditchain import SigningKeys
from kmipfast.errors import (
    HsmError,
    HsmIntegrityError,
    HsmKeyNotFound,
    HsmUnavailable,
    InvalidUnwrap,
)
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
    def shred_root_key(self, label: str) -> tuple[list[int], list[int], int]: ...
    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, _native.MasterKey]: ...
    def seal_master_key(self, label: str, master: _native.MasterKey, aad: bytes) -> bytes: ...
    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> _native.MasterKey: ...
    def ping(self) -> None: ...


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

    def shred_root_key(self, label: str) -> tuple[list[int], list[int], int]:
        """Like the HSM's: no handles here; the lookup afterwards is of the file."""
        self.destroy_root_key(label)
        return [], [], int(self._path(label).exists())

    def _signing_path(self, label: str) -> Path:
        return self._path(label).with_suffix(".signing.pem")

    def signing_public_key(self, label: str) -> bytes:
        """The audit signing key pair (P-256), a PEM file here, made on first use."""
        path = self._signing_path(label)
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
        public = self._signing_key(label).public_key()
        return public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def _signing_key(self, label: str) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(
                self._signing_path(label).read_bytes(), password=None
            )
        except FileNotFoundError:
            raise HsmKeyNotFound(f"signing key {label!r} not found") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise HsmError(f"signing key {label!r} is not an EC key")
        return key

    def sign_digest(self, label: str, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("the digest must be 32 bytes (SHA-256)")
        der = self._signing_key(label).sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32) + s.to_bytes(32)

    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, _native.MasterKey]:
        root = self._load(label)
        tmk = _native.MasterKey.generate()
        return root.seal_master(tmk, aad), tmk

    def seal_master_key(self, label: str, master: _native.MasterKey, aad: bytes) -> bytes:
        return self._load(label).seal_master(master, aad)

    def ping(self) -> None:
        if not self.directory.is_dir():
            raise HsmUnavailable(f"software root directory {self.directory} is missing")

    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> _native.MasterKey:
        root = self._load(label)
        try:
            return root.open_master(sealed, aad)
        except InvalidUnwrap as e:
            raise HsmIntegrityError(str(e)) from None


_REINIT_INTERVAL = 2.0  # seconds between attempts to re-initialize the PKCS#11 library


class ReconnectingRoot:
    """The HSM, opened on first use and again after it failed to open, with backoff
    (1 s doubling to 30 s), so a server starts and serves held master keys while the
    HSM is away and picks it up by itself when it is back.  Session-level faults of
    an open HSM are the native pool's to recover (it reopens sessions)."""

    def __init__(self, opener: Callable[[], RootKeys]) -> None:
        self._opener = opener
        self._root: RootKeys | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._delay = 1.0
        self.last_error: str | None = None
        self._reinit_at = -_REINIT_INTERVAL
        self._token_away = False

    def _get(self) -> RootKeys:
        with self._lock:
            if self._root is not None:
                return self._root
            now = time.monotonic()
            if now < self._retry_at:
                raise HsmUnavailable(
                    f"{self.last_error} (next attempt in {self._retry_at - now:.0f} s)"
                )
            try:
                self._root = self._opener()
            except HsmError as e:
                self.last_error = str(e)
                self._retry_at = now + self._delay
                self._delay = min(self._delay * 2, 30.0)
                log.warning("HSM not available: %s", e)
                raise HsmUnavailable(self.last_error) from None
            self._delay = 1.0
            self.last_error = None
            return self._root

    def generate_root_key(self, label: str) -> None:
        self._get().generate_root_key(label)

    def root_key_exists(self, label: str) -> bool:
        return self._get().root_key_exists(label)

    def destroy_root_key(self, label: str) -> None:
        self._get().destroy_root_key(label)

    def shred_root_key(self, label: str) -> tuple[list[int], list[int], int]:
        return self._get().shred_root_key(label)

    def signing_public_key(self, label: str) -> bytes:
        return self._signing().signing_public_key(label)

    def sign_digest(self, label: str, digest: bytes) -> bytes:
        return self._signing().sign_digest(label, digest)

    def _signing(self) -> SigningKeys:
        root = self._get()
        if not isinstance(root, SigningKeys):
            raise HsmError("this HSM binding cannot hold the audit signing key")
        return root

    def new_master_key(self, label: str, aad: bytes) -> tuple[bytes, _native.MasterKey]:
        return self._get().new_master_key(label, aad)

    def seal_master_key(self, label: str, master: _native.MasterKey, aad: bytes) -> bytes:
        return self._get().seal_master_key(label, master, aad)

    def unseal_master_key(self, label: str, sealed: bytes, aad: bytes) -> _native.MasterKey:
        root = self._get()
        try:
            return root.unseal_master_key(label, sealed, aad)
        except (HsmKeyNotFound, HsmUnavailable) as e:
            if isinstance(e, HsmUnavailable) and not self._token_away:
                raise  # the pool reopens sessions by itself; nothing to re-initialize
            # A root key the store still names is missing: either destroyed (then it
            # stays missing) or the token went away and came back, which some HSMs
            # (SoftHSM2) only notice after the library is re-initialized.
            reinitialize = getattr(root, "reinitialize", None)
            now = time.monotonic()
            if reinitialize is None:
                raise
            if now - self._reinit_at < _REINIT_INTERVAL:
                if self._token_away:
                    raise HsmUnavailable("the HSM token is not present") from None
                raise
            self._reinit_at = now
            try:
                reinitialize()
            except HsmError as e:
                self._token_away = True
                raise HsmUnavailable(str(e)) from None
            self._token_away = False
            return root.unseal_master_key(label, sealed, aad)

    def ping(self) -> None:
        self._get().ping()


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


class StaleGeneration(KmipError):
    """An object sealed under a master key generation the tenant no longer has (a
    re-encryption finished since the object was read): re-read it and retry."""


class KeyHierarchy:
    """Tenant master keys on demand, for a bounded time.

    A tenant has one current master key generation and, while a re-encryption runs,
    the previous one; every sealed object records its generation (``meta["tmk"]``).
    """

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
        self._held: dict[tuple[str, int], _Held] = {}
        self._current: dict[str, int] = {}
        self._pending: dict[tuple[str, int | None], asyncio.Future[tuple[int, _Held]]] = {}

    async def in_executor(self, fn: Callable[..., T], *args: object) -> T:
        """Runs an HSM call on the bounded HSM executor, off the event loop."""
        loop = asyncio.get_running_loop()
        return await metrics.hsm_call(fn, loop.run_in_executor(self.executor, fn, *args))

    async def master(self, tenant: str, version: int | None = None) -> _native.MasterKey:
        """The master key of ``tenant`` (generation ``version``, default the current)."""
        return (await self.current(tenant, version))[1]

    async def current(
        self, tenant: str, version: int | None = None
    ) -> tuple[int, _native.MasterKey]:
        """``(generation, key)``: the current generation unless ``version`` is given."""
        gen = self._current.get(tenant) if version is None else version
        if gen is not None:
            key = self._holding(tenant, gen, version)
            if key is not None:
                return gen, key
        fut = self._pending.get((tenant, version)) or self._start_unseal(tenant, version)
        got_gen, got = await asyncio.shield(fut)
        return got_gen, got.key

    def held(self, tenant: str, version: int) -> _native.MasterKey | None:
        """Generation ``version`` of the tenant's master key if it is held now, without
        waiting (None: :meth:`master` unseals it)."""
        return self._holding(tenant, version, version)

    def _holding(self, tenant: str, gen: int, version: int | None) -> _native.MasterKey | None:
        held = self._held.get((tenant, gen))
        if held is None:
            return None
        age = time.monotonic() - held.since
        if age >= self.hold_seconds:
            self._drop_key(tenant, gen)
            return None
        if age > 0.8 * self.hold_seconds and (tenant, version) not in self._pending:
            self._start_unseal(tenant, version)  # refreshed before it expires
        return held.key

    def _start_unseal(self, tenant: str, version: int | None) -> asyncio.Future[tuple[int, _Held]]:
        fut: asyncio.Future[tuple[int, _Held]] = asyncio.get_running_loop().create_future()
        # A background refresh may fail with nobody waiting: mark it retrieved.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[(tenant, version)] = fut
        task = asyncio.ensure_future(self._unseal(tenant, version, fut))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return fut

    async def _unseal(
        self, tenant: str, version: int | None, fut: asyncio.Future[tuple[int, _Held]]
    ) -> None:
        try:
            rec = await self.store.get_tenant(tenant)
            if rec is None or rec.sealed_master_key is None:
                self.drop(tenant)
                raise KmipError(
                    ResultReason.CryptographicFailure,
                    f"tenant {tenant!r} has no master key (shredded or never created)",
                )
            self._current[tenant] = rec.master_key_version
            gen = rec.master_key_version if version is None else version
            if gen == rec.master_key_version:
                sealed = rec.sealed_master_key
            elif gen == rec.previous_master_key_version and rec.previous_sealed_master_key:
                sealed = rec.previous_sealed_master_key
            else:
                self._drop_key(tenant, gen)
                raise StaleGeneration(
                    ResultReason.CryptographicFailure,
                    f"master key generation {gen} of tenant {tenant!r} no longer exists",
                )
            try:
                key = await self.in_executor(
                    self.root.unseal_master_key, rec.root_label, sealed, master_aad(tenant, gen)
                )
            except HsmError as e:
                if isinstance(e, HsmKeyNotFound):
                    self.drop(tenant)
                raise hsm_failure(e, tenant) from None
            held = _Held(key=key, since=time.monotonic())
            old = self._held.get((tenant, gen))
            self._held[(tenant, gen)] = held
            if old is not None and old.key is not key:
                old.key.wipe()
            if self.on_unseal is not None:
                self.on_unseal(tenant)
            fut.set_result((gen, held))
        except BaseException as e:
            fut.set_exception(e)
        finally:
            self._pending.pop((tenant, version), None)

    def _drop_key(self, tenant: str, gen: int) -> None:
        held = self._held.pop((tenant, gen), None)
        if held is not None:
            held.key.wipe()

    def drop(self, tenant: str) -> None:
        """Forget (and wipe) every held master key of a tenant, e.g. after a shred."""
        for key in [k for k in self._held if k[0] == tenant]:
            self._drop_key(*key)
        self._current.pop(tenant, None)

    def drop_all(self) -> None:
        for tenant in {k[0] for k in self._held}:
            self.drop(tenant)

    def holds(self, tenant: str) -> bool:
        return any(k[0] == tenant for k in self._held)

    def held_tenants(self) -> list[str]:
        return sorted({k[0] for k in self._held})

    async def sync(self) -> list[str]:
        """Brings held keys in line with the tenant records (after another process
        rotated, re-encrypted or shredded): drops what is gone.  Returns the tenants
        whose keys changed, so cached objects of theirs can be re-read."""
        changed = []
        for tenant in self.held_tenants():
            rec = await self.store.get_tenant(tenant)
            if rec is None or rec.sealed_master_key is None:
                self.drop(tenant)
                changed.append(tenant)
                continue
            live = {rec.master_key_version}
            if rec.previous_sealed_master_key is not None and rec.previous_master_key_version:
                live.add(rec.previous_master_key_version)
            stale = [k for k in self._held if k[0] == tenant and k[1] not in live]
            if stale or self._current.get(tenant) != rec.master_key_version:
                changed.append(tenant)
            for key in stale:
                self._drop_key(*key)
            self._current[tenant] = rec.master_key_version
        return changed

    async def create_tenant(self, name: str) -> TenantRecord:
        """A new tenant: a root key in the HSM and a master key sealed by it."""
        if await self.store.get_tenant(name) is not None:
            raise StoreConflict(f"tenant {name!r} already exists")
        label = new_root_label(name)
        await self.in_executor(self.root.generate_root_key, label)
        try:
            sealed, key = await self.in_executor(
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
            await self.in_executor(self.root.destroy_root_key, label)
            raise
        self._held[(name, 1)] = _Held(key=key, since=time.monotonic())
        self._current[name] = 1
        return rec


def new_root_label(tenant: str) -> str:
    return f"kmipfast-root-{tenant}-{secrets.token_hex(4)}"
