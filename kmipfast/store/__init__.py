"""Object, tenant and client storage (see base.py for the contract)."""

from kmipfast.store.base import (
    ClientRecord,
    ObjectRecord,
    Store,
    StoreConflict,
    StoreError,
    StoreStats,
    TenantRecord,
    open_store,
)

__all__ = [
    "ClientRecord",
    "ObjectRecord",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreStats",
    "TenantRecord",
    "open_store",
]
