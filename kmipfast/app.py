"""Wiring: from a validated :class:`~kmipfast.config.Config` to running parts.

Shared by ``kmipfast serve`` and the administrative commands, so both open the store
and the root keys the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kmipfast import _native
from kmipfast.audit import AuditLog, audit_signer
from kmipfast.config import Config, read_pin
from kmipfast.errors import HsmError
from kmipfast.keys import softhsm
from kmipfast.keys.hierarchy import KeyHierarchy, ReconnectingRoot, RootKeys, SoftwareRoot
from kmipfast.services import Services
from kmipfast.store.base import Store, open_store
from kmipfast.vault import Vault

log = logging.getLogger("kmipfast")


def open_root_keys(config: Config, *, provision: bool = False) -> RootKeys:
    """The configured place of root keys: a PKCS#11 module, the SoftHSM2 token under the
    data dir, or (development only) the software root.  The HSM is opened on first use
    and reopened after failures (see ReconnectingRoot)."""
    if config.hsm.software_root:
        return SoftwareRoot(config.data_dir / "dev-root")
    if config.hsm_module_path is not None:
        # A missing or unreadable PIN is a configuration error: say so at start.
        pin = read_pin(config)
        pin[:] = bytes(len(pin))
    return ReconnectingRoot(lambda: _open_hsm(config, provision))


def _open_hsm(config: Config, provision: bool) -> RootKeys:
    module = config.hsm_module_path
    if module is None:
        if provision:
            settings = softhsm.ensure_token(config.data_dir, config.hsm.token_label)
        else:
            # Only `init` makes a token: a token directory gone missing is an HSM that
            # is away, never a reason to start an empty one.
            settings = softhsm.existing_token(config.data_dir, config.hsm.token_label)
        softhsm.activate(settings)
        module_path = settings.module
    else:
        module_path = str(module)
    pin = read_pin(config)
    label = config.hsm.token_label
    try:
        for attempt in range(_TOKEN_READ_ATTEMPTS):
            try:
                return _native.Hsm.open(module_path, label, pin, config.hsm.max_sessions)
            except HsmError as e:
                error = e
            # SoftHSM2 keeps its token in files that every process re-reads when it opens
            # the library: one opening it while another writes to the token (two
            # workers starting together) has been seen to find no token.  Moments later
            # it is there; a token that is really gone fails after ~0.75 s.
            if "no initialized token" not in str(error):
                break
            time.sleep(0.05 * (attempt + 1))
        raise HsmError(f"cannot open HSM token {label!r}: {error}") from None
    finally:
        pin[:] = bytes(len(pin))


_TOKEN_READ_ATTEMPTS = 5


@dataclass
class Runtime:
    config: Config
    store: Store
    services: Services
    executor: ThreadPoolExecutor


@contextlib.asynccontextmanager
async def runtime(
    config: Config, *, audit: bool = True, provision: bool = False
) -> AsyncIterator[Runtime]:
    """Opens store, HSM and audit log; closes them (store flushed) on exit."""
    executor = ThreadPoolExecutor(
        max_workers=max(2, config.hsm.max_sessions), thread_name_prefix="hsm"
    )
    store = open_store(
        config.store.url, config.data_dir, group_commit_max=config.store.group_commit_max
    )
    await store.open()
    audit_log = AuditLog(
        config.audit_path if audit else None,
        max_bytes=config.audit.max_bytes,
        checkpoint_interval=config.audit.checkpoint_interval,
    )
    try:
        root = open_root_keys(config, provision=provision)
        audit_log.signer = audit_signer(config, root)
        keys = KeyHierarchy(
            root,
            store,
            executor,
            hold_seconds=config.hsm.master_key_hold,
            on_unseal=lambda tenant: audit_log.admin("master key unsealed", tenant=tenant),
        )
        services = Services(store=store, vault=Vault(store), keys=keys, audit=audit_log)
        yield Runtime(config=config, store=store, services=services, executor=executor)
    finally:
        try:
            await store.close()
        finally:
            try:
                # Closing signs a last checkpoint in the HSM: off the event loop.
                await asyncio.get_running_loop().run_in_executor(executor, audit_log.close)
            finally:
                executor.shutdown(wait=True)
