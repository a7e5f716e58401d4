"""Root-key lifecycle (DESIGN §3): rotation, re-encryption, crypto-shredding, status.

These run in the administrative process (``kmipfast root ...``) against the same store
and HSM as the running servers, which follow through the store's data version.

Rotation.  A new root key (CRK) is generated, the tenant's master key (TMK) is
resealed under it, the tenant record is switched durably, and only then is the old
root key destroyed.  Interrupted anywhere, the record still names a root key that
exists and a sealed TMK it opens; at worst an unused new root key is left behind.

Re-encryption (``--reencrypt``).  The rotation also makes a new TMK generation; the
record keeps the previous one (sealed under the same new root key) until every object
has been resealed from it to the new one, object by object with optimistic
concurrency, then drops it.  Rerunning resumes where it stopped.  Servers serve each
object with the generation its row names, so nothing waits.

Shredding.  The root key is destroyed in the HSM, the sealed TMKs are removed from
the store, and the command returns only when every live server has acted on that
change (it reports the data version it has seen), i.e. has wiped the TMKs it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from kmipfast import _native
from kmipfast.errors import HsmError, HsmKeyNotFound
from kmipfast.keys.hierarchy import KeyHierarchy, master_aad, new_root_label
from kmipfast.store.base import NodeRecord, Store, StoreConflict, StoreError, TenantRecord
from kmipfast.vault import binding_of, generation_of

# A node that has not reported for this long is considered gone.
NODE_LIVENESS = 15.0
_CONCURRENCY = 64
_GRACE = 2.0  # seconds for a Create that read the old generation to reach the store


class RootKeyError(Exception):
    """A root-key operation cannot be done (one line for the operator)."""


@dataclass
class Progress:
    """Callbacks for a progress display."""

    start: Callable[[int], None] = lambda total: None
    advance: Callable[[int], None] = lambda n: None


async def _tenant(store: Store, tenant: str) -> TenantRecord:
    rec = await store.get_tenant(tenant)
    if rec is None:
        raise RootKeyError(f"no tenant {tenant!r}")
    if rec.sealed_master_key is None:
        raise RootKeyError(f"tenant {tenant!r} has been shredded")
    return rec


async def rotate(keys: KeyHierarchy, tenant: str, *, reencrypt: bool) -> TenantRecord:
    """A new root key for ``tenant``; with ``reencrypt`` also a new master key
    generation (objects move by :func:`reencrypt_objects`)."""
    store, root, run = keys.store, keys.root, keys.in_executor
    rec = await _tenant(store, tenant)
    if rec.previous_sealed_master_key is not None and reencrypt:
        return rec  # an interrupted re-encryption: resume it, don't start another
    new_label = new_root_label(tenant)

    async def rewrap(sealed: bytes, generation: int) -> bytes:
        """A master key generation, from under the old root key to under the new one."""
        aad = master_aad(tenant, generation)
        key = await run(root.unseal_master_key, rec.root_label, sealed, aad)
        return await run(root.seal_master_key, new_label, key, aad)

    await run(root.generate_root_key, new_label)
    try:
        assert rec.sealed_master_key is not None  # _tenant refuses shredded tenants
        resealed = await rewrap(rec.sealed_master_key, rec.master_key_version)
        previous = None
        if rec.previous_sealed_master_key is not None and rec.previous_master_key_version:
            previous = await rewrap(rec.previous_sealed_master_key, rec.previous_master_key_version)
        now = int(time.time())
        if reencrypt:
            version = rec.master_key_version + 1
            sealed, _new_key = await run(
                root.new_master_key, new_label, master_aad(tenant, version)
            )
            new_rec = replace(
                rec,
                root_label=new_label,
                sealed_master_key=sealed,
                master_key_version=version,
                previous_sealed_master_key=resealed,
                previous_master_key_version=rec.master_key_version,
                rotated=now,
            )
        else:
            new_rec = replace(
                rec,
                root_label=new_label,
                sealed_master_key=resealed,
                previous_sealed_master_key=previous,
                rotated=now,
            )
        await store.update_tenant(new_rec)
    except BaseException:
        # Nothing points at the new root key yet: remove it.
        with contextlib.suppress(HsmError):
            await run(root.destroy_root_key, new_label)
        raise
    # The new wrapping is durable: the old root key can go.
    with contextlib.suppress(HsmKeyNotFound):
        await run(root.destroy_root_key, rec.root_label)
    return new_rec


async def reencrypt_objects(
    keys: KeyHierarchy, tenant: str, progress: Progress | None = None
) -> int:
    """Moves every object still sealed under the previous generation to the current
    one; then forgets the previous generation.  Returns how many objects moved."""
    store = keys.store
    progress = progress or Progress()
    rec = await _tenant(store, tenant)
    old_gen = rec.previous_master_key_version
    if rec.previous_sealed_master_key is None or old_gen is None:
        return 0
    new_gen = rec.master_key_version
    old_key = await keys.master(tenant, old_gen)
    new_key = await keys.master(tenant, new_gen)
    todo = await _sealed_under(store, tenant, old_gen)
    progress.start(len(todo))
    moved = await _move_all(store, tenant, todo, old_gen, new_gen, old_key, new_key, progress)
    # Servers seal new objects under the generation they last read; once each has
    # acted on the new one (and a grace period for creates already in flight has
    # passed), a last sweep picks up what they sealed under the old one meanwhile.
    await wait_for_nodes(store, 10.0)
    await asyncio.sleep(_GRACE)
    while late := await _sealed_under(store, tenant, old_gen):
        moved += await _move_all(store, tenant, late, old_gen, new_gen, old_key, new_key, None)
    done = replace(
        await _tenant(store, tenant),
        previous_sealed_master_key=None,
        previous_master_key_version=None,
    )
    await store.update_tenant(done)
    keys.drop(tenant)
    return moved


async def _sealed_under(store: Store, tenant: str, gen: int) -> list[str]:
    return [
        obj.uid
        async for obj in store.list_objects(tenant)
        if obj.key_blob is not None and _generation(obj.key_meta) == gen
    ]


async def _move_all(
    store: Store,
    tenant: str,
    uids: list[str],
    old_gen: int,
    new_gen: int,
    old_key: _native.MasterKey,
    new_key: _native.MasterKey,
    progress: Progress | None,
) -> int:
    moved = 0
    # Many moves in flight let the store commit them in groups.
    for i in range(0, len(uids), _CONCURRENCY):
        chunk = uids[i : i + _CONCURRENCY]
        results = await asyncio.gather(
            *(_move(store, tenant, uid, old_gen, new_gen, old_key, new_key) for uid in chunk)
        )
        moved += sum(results)
        if progress is not None:
            progress.advance(len(chunk))
    return moved


def _generation(key_meta: bytes) -> int:
    return generation_of(json.loads(key_meta or b"{}"))


async def _move(
    store: Store,
    tenant: str,
    uid: str,
    old_gen: int,
    new_gen: int,
    old_key: _native.MasterKey,
    new_key: _native.MasterKey,
) -> int:
    binding = binding_of(tenant, uid)
    for _attempt in range(8):
        rec = await store.get_object(tenant, uid)
        if rec is None or rec.key_blob is None or _generation(rec.key_meta) != old_gen:
            return 0  # destroyed, deleted or already moved meanwhile
        meta = json.loads(rec.key_meta)
        meta["tmk"] = new_gen
        expected = rec.version
        rec.key_blob = old_key.reseal(rec.key_blob, binding, new_key, binding)
        rec.key_meta = json.dumps(meta, separators=(",", ":")).encode()
        try:
            await store.update_object(rec, expected)
            return 1
        except StoreConflict:
            continue  # a server changed it meanwhile: read again
    raise StoreError(f"object {uid} kept changing during re-encryption; run again")


@dataclass
class ShredReceipt:
    """What a shred did, for its certificate: the root key, what the HSM said when asked
    for it again after the destroy, and the keys made unrecoverable."""

    tenant: str
    root_label: str
    handles: list[int]  # the root key's handles before the destroy ([] for a software root)
    handles_still_found: list[int]  # those that still named it after (empty: gone)
    label_still_found: int  # keys its label still found after (0: gone)
    already_gone: bool  # the root key was not in the HSM any more when the shred began
    uids: list[str]  # sorted uids of the tenant's objects that carried key material
    lagging: list[str]  # servers that did not confirm dropping the master key

    @property
    def uids_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.uids).encode()).hexdigest()


async def shred(keys: KeyHierarchy, tenant: str, *, wait: float = 10.0) -> list[str]:
    """Destroys the tenant's root key and sealed master keys; returns the nodes that
    did not confirm within ``wait`` seconds (empty when all did)."""
    return (await shred_with_receipt(keys, tenant, wait=wait)).lagging


async def shred_with_receipt(
    keys: KeyHierarchy, tenant: str, *, wait: float = 10.0
) -> ShredReceipt:
    """:func:`shred`, returning what a shred certificate states."""
    store = keys.store
    rec = await store.get_tenant(tenant)
    if rec is None:
        raise RootKeyError(f"no tenant {tenant!r}")
    # Already gone from the HSM is fine: what the store holds is removed all the same.
    try:
        handles, still, by_label = await keys.in_executor(keys.root.shred_root_key, rec.root_label)
        already_gone = False
    except HsmKeyNotFound:
        handles, still, by_label, already_gone = [], [], 0, True
    if already_gone or by_label == 0:
        # Confirm with a lookup of its own that the label finds nothing now.
        by_label = int(await keys.in_executor(keys.root.root_key_exists, rec.root_label))
    await store.update_tenant(
        replace(
            rec,
            sealed_master_key=None,
            previous_sealed_master_key=None,
            previous_master_key_version=None,
            rotated=int(time.time()),
        )
    )
    keys.drop(tenant)
    lagging = await wait_for_nodes(store, wait)
    # Listed once servers have dropped the master key: none can seal another one now.
    uids = sorted([obj.uid async for obj in store.list_objects(tenant) if obj.key_blob is not None])
    return ShredReceipt(
        tenant=tenant,
        root_label=rec.root_label,
        handles=handles,
        handles_still_found=still,
        label_still_found=by_label,
        already_gone=already_gone,
        uids=uids,
        lagging=lagging,
    )


async def wait_for_nodes(store: Store, wait: float) -> list[str]:
    """Waits until every live server reports having acted on the current data version."""
    target = await store.data_version()
    deadline = time.monotonic() + wait
    while True:
        now = time.time()
        lagging = [
            n.id
            for n in await store.list_nodes()
            if now - n.seen < NODE_LIVENESS and n.data_version < target and _alive(n)
        ]
        if not lagging or time.monotonic() > deadline:
            return lagging
        await asyncio.sleep(0.1)


def _alive(node: NodeRecord) -> bool:
    """False for a node of this host whose process is gone (killed: it holds nothing)."""
    if node.host != socket.gethostname():
        return True
    try:
        os.kill(node.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RootStatus:
    tenant: str
    root_label: str
    root_present: bool | None  # None: the HSM could not be asked
    hsm_error: str | None
    created: int
    rotated: int | None
    generation: int
    reencrypting_from: int | None
    objects_to_move: int
    shredded: bool
    held_by: list[str]


async def status(keys: KeyHierarchy, tenant: str | None = None) -> list[RootStatus]:
    store = keys.store
    tenants = [t for t in await store.list_tenants() if tenant in (None, t.name)]
    if tenant is not None and not tenants:
        raise RootKeyError(f"no tenant {tenant!r}")
    nodes = [
        n for n in await store.list_nodes() if time.time() - n.seen < NODE_LIVENESS and _alive(n)
    ]
    out = []
    for t in tenants:
        present: bool | None
        error = None
        try:
            present = await keys.in_executor(keys.root.root_key_exists, t.root_label)
        except HsmError as e:
            present, error = None, str(e)
        pending = 0
        if t.previous_master_key_version is not None:
            async for obj in store.list_objects(t.name):
                if (
                    obj.key_blob is not None
                    and _generation(obj.key_meta) == t.previous_master_key_version
                ):
                    pending += 1
        out.append(
            RootStatus(
                tenant=t.name,
                root_label=t.root_label,
                root_present=present,
                hsm_error=error,
                created=t.created,
                rotated=t.rotated,
                generation=t.master_key_version,
                reencrypting_from=t.previous_master_key_version,
                objects_to_move=pending,
                shredded=t.sealed_master_key is None,
                held_by=[n.id for n in nodes if t.name in n.held.split(",")],
            )
        )
    return out
