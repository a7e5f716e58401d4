"""Object, tenant and client storage (see base.py for the contract)."""

from kmipfast.store.base import (
    ClientRecord,
    NodeRecord,
    ObjectRecord,
    Store,
    StoreChange,
    StoreConflict,
    StoreError,
    StoreStats,
    TenantRecord,
    open_store,
)

__all__ = [
    "ClientRecord",
    "NodeRecord",
    "ObjectRecord",
    "Store",
    "StoreChange",
    "StoreConflict",
    "StoreError",
    "StoreStats",
    "TenantRecord",
    "open_store",
]
