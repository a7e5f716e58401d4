"""What handlers reach through ``ctx.services``: one object built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from kmipfast.audit import AuditLog
from kmipfast.keys.hierarchy import KeyHierarchy
from kmipfast.store.base import Store
from kmipfast.vault import Vault


@dataclass(slots=True)
class Services:
    store: Store
    vault: Vault
    keys: KeyHierarchy
    audit: AuditLog
    vendor: str = "kmipfast"
    server_info: str = ""
