"""Shred certificates: a signed statement that a tenant's root key is gone.

``kmipfast root shred`` writes one after the root key was destroyed and the shred's
audit line is on disk.  The document states the tenant, the root key (label and HSM
handles), the time, what the HSM answered when asked for the key again after the
destroy, how many keys became unrecoverable with a SHA-256 of their sorted uid list
(one uid per line, no trailing newline), and the audit line (``seq`` and hash) that
records the shred.  It is signed with the audit signing key (ECDSA P-256 in the HSM)
over the compact, key-sorted JSON of everything but ``signature``, and written in one
fixed form (sorted keys, 2-space indent), so that any changed byte is detected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmipfast import auditchain

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from kmipfast.keys.rotation import ShredReceipt

CERT_TYPE = "kmipfast-shred-certificate/v1"
_CONTEXT = b"kmipfast/shred-certificate/v1\x00"
SHRED_ACTION = "tenant shredded"
ALGORITHM = "ECDSA-P256-SHA256"


def audit_event(receipt: ShredReceipt) -> dict[str, Any]:
    """The shred's audit line (the certificate cites it)."""
    return {
        "kind": "admin",
        "action": SHRED_ACTION,
        "tenant": receipt.tenant,
        "root": receipt.root_label,
        "keys": len(receipt.uids),
        "uids_sha256": receipt.uids_sha256,
    }


def unsigned(
    receipt: ShredReceipt, *, time: str, hsm: str, audit_seq: int, audit_hash: str
) -> dict[str, Any]:
    return {
        "type": CERT_TYPE,
        "tenant": receipt.tenant,
        "time": time,
        "root_key": {"label": receipt.root_label, "handles": receipt.handles, "hsm": hsm},
        "hsm_confirmation": {
            "lookup_after_destroy": {
                "handles_still_found": receipt.handles_still_found,
                "label_still_found": receipt.label_still_found,
            },
            "already_gone_before_shred": receipt.already_gone,
            "gone": not receipt.handles_still_found and receipt.label_still_found == 0,
        },
        "keys_unrecoverable": {
            "count": len(receipt.uids),
            "uid_list_sha256": receipt.uids_sha256,
        },
        "servers_not_confirmed": receipt.lagging,
        "audit_chain": {"seq": audit_seq, "hash": audit_hash, "action": SHRED_ACTION},
    }


def digest(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    compact = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(_CONTEXT + compact.encode()).digest()


def render(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def sign(doc: dict[str, Any], signer: auditchain.Signer) -> bytes:
    """The certificate file's bytes (an HSM call: run it off the event loop)."""
    key, sig = signer.sign(digest(doc))
    return render({**doc, "signature": {"algorithm": ALGORITHM, "key": key, "value": sig}})


@dataclass
class Verified:
    tenant: str
    root_label: str
    time: str
    keys: int
    uid_list_sha256: str
    audit_file: str
    audit_line: int
    audit_seq: int


def verify(
    data: bytes, keys: dict[str, ec.EllipticCurvePublicKey], audit_files: list[Path]
) -> Verified:
    """Checks the signature, the exact form, and that the intact audit chain in
    ``audit_files`` holds the shred line the certificate cites.  Raises
    :class:`~kmipfast.auditchain.AuditChainError` naming the first thing wrong."""
    fail = auditchain.AuditChainError
    try:
        doc = json.loads(data)
    except ValueError:
        raise fail("not a shred certificate: not JSON (altered?)") from None
    if not isinstance(doc, dict) or doc.get("type") != CERT_TYPE:
        raise fail(f"not a shred certificate (type is not {CERT_TYPE})")
    if render(doc) != data:
        raise fail("altered: the file is not byte for byte the form it was signed in")
    sig = doc.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
        raise fail("the certificate carries no signature")
    if sig.get("algorithm") != ALGORITHM:
        raise fail(f"unknown signature algorithm {sig.get('algorithm')!r}")
    key = keys.get(str(sig.get("key")))
    if key is None:
        raise fail(f"signed by key {sig.get('key')!r}, which is not a trusted audit key")
    if not auditchain.verify_signature(key, digest(doc), sig["value"]):
        raise fail("the signature does not verify: the certificate was altered")
    try:
        tenant = str(doc["tenant"])
        root_label = str(doc["root_key"]["label"])
        count = int(doc["keys_unrecoverable"]["count"])
        uid_digest = str(doc["keys_unrecoverable"]["uid_list_sha256"])
        seq = int(doc["audit_chain"]["seq"])
        head = str(doc["audit_chain"]["hash"])
        gone = doc["hsm_confirmation"]["gone"] is True
    except (KeyError, TypeError, ValueError):
        raise fail("the certificate lacks required fields") from None
    if not gone:
        raise fail("the certificate does not confirm that the HSM no longer has the root key")
    if not audit_files:
        raise fail("no audit log files to check the certificate against")
    report = auditchain.verify(audit_files, keys, from_genesis=False, want={seq})
    if report.problem is not None:
        raise fail(f"the audit chain is broken: {report.problem}")
    found = report.found.get(seq)
    if found is None:
        raise fail(f"the audit log has no line with seq {seq}")
    file, line_digest, number, event = found
    if line_digest != head:
        raise fail(f"{file}:{number}: the audit line has another hash than the certificate's")
    expected = {
        "action": SHRED_ACTION,
        "tenant": tenant,
        "root": root_label,
        "keys": count,
        "uids_sha256": uid_digest,
    }
    if {k: event.get(k) for k in expected} != expected:
        raise fail(f"{file}:{number}: the audit line does not record this shred")
    return Verified(
        tenant=tenant,
        root_label=root_label,
        time=str(doc.get("time")),
        keys=count,
        uid_list_sha256=uid_digest,
        audit_file=file,
        audit_line=number,
        audit_seq=seq,
    )
