"""Activate (§4.19), Revoke (§4.20) and Destroy (§4.21) of KMIP 1.4: the state machine.

State changes follow the 1.x diagram (§3.22 / Figure 3):

    Pre-Active --Activate--> Active --Revoke--> Deactivated
    any live state --Revoke(compromise)--> Compromised
    Pre-Active, Deactivated --Destroy--> Destroyed; Compromised --Destroy--> Destroyed Compromised

Result Reasons: Item Not Found, Permission Denied (a transition the current state
does not allow: the 1.x answer, e.g. Destroy of an Active key), Invalid Field.
"""

from __future__ import annotations

from kmipfast.operations import common
from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import ResultReason, RevocationReasonCode, State
from kmipfast.protocol.errors import KmipError, missing
from kmipfast.protocol.processor import Context
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item
from kmipfast.vault import ManagedObject

T_REVOCATION_REASON = int(Tag.RevocationReason)
T_REVOCATION_CODE = int(Tag.RevocationReasonCode)
T_COMPROMISE_OCCURRENCE = int(Tag.CompromiseOccurrenceDate)

_COMPROMISE = frozenset({RevocationReasonCode.KeyCompromise, RevocationReasonCode.CACompromise})
_LIVE = frozenset({State.PreActive, State.Active, State.Deactivated, State.Compromised})
_DESTROY_TO = {
    State.PreActive: State.Destroyed,
    State.Deactivated: State.Destroyed,
    State.Compromised: State.DestroyedCompromised,
}


def _state_name(state: int) -> str:
    try:
        return State(state).name
    except ValueError:
        return str(state)


async def activate(ctx: Context, payload: Item | None) -> Item:
    """§4.19: Pre-Active -> Active, Activation Date = now."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> None:
        if obj.state != State.PreActive:
            raise KmipError(
                ResultReason.PermissionDenied,
                f"only a Pre-Active object can be activated; this one is {_state_name(obj.state)}",
            )
        obj.state = State.Active
        obj.set("State", ttlv.ENUMERATION, State.Active)
        obj.set("Activation Date", ttlv.DATE_TIME, ctx.now)
        obj.touch(ctx.now)

    await vault.update(ctx.tenant, uid, change)
    return common.payload(common.uid_item(uid))


async def revoke(ctx: Context, payload: Item | None) -> Item:
    """§4.20: Compromised for a compromise, else Deactivated."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    reason = ttlv.find(payload, T_REVOCATION_REASON)
    code = ttlv.typed(reason, T_REVOCATION_CODE, ttlv.ENUMERATION)
    if reason is None or code is None:
        raise missing("Revocation Reason Code")
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> None:
        if obj.state not in _LIVE:
            raise KmipError(ResultReason.PermissionDenied, "a destroyed object cannot be revoked")
        if code in _COMPROMISE:
            obj.state = State.Compromised
            obj.set("Compromise Date", ttlv.DATE_TIME, ctx.now)
            occurred = ttlv.typed(payload, T_COMPROMISE_OCCURRENCE, ttlv.DATE_TIME)
            obj.set("Compromise Occurrence Date", ttlv.DATE_TIME, occurred or ctx.now)
        elif obj.state == State.Compromised:
            raise KmipError(
                ResultReason.PermissionDenied, "a compromised object can only be destroyed"
            )
        else:
            obj.state = State.Deactivated
            obj.set("Deactivation Date", ttlv.DATE_TIME, ctx.now)
        obj.set("State", ttlv.ENUMERATION, obj.state)
        obj.attributes["Revocation Reason"] = [(int(Tag.AttributeValue), ttlv.STRUCTURE, reason[2])]
        obj.touch(ctx.now)

    await vault.update(ctx.tenant, uid, change)
    return common.payload(common.uid_item(uid))


async def destroy(ctx: Context, payload: Item | None) -> Item:
    """§4.21: key material removed for good (overwritten in the store), attributes kept."""
    uid = ctx.uid_from(payload)
    ctx.uid = uid
    vault = ctx.services.vault

    def change(obj: ManagedObject) -> None:
        target = _DESTROY_TO.get(State(obj.state))
        if target is None:
            raise KmipError(
                ResultReason.PermissionDenied,
                f"an object that is {_state_name(obj.state)} cannot be destroyed"
                + ("; revoke it first" if obj.state == State.Active else ""),
            )
        obj.state = target
        obj.key_blob = None
        obj.meta["destroyed"] = True
        obj.set("State", ttlv.ENUMERATION, target)
        obj.set("Destroy Date", ttlv.DATE_TIME, ctx.now)
        obj.touch(ctx.now)

    await vault.update(ctx.tenant, uid, change)
    return common.payload(common.uid_item(uid))
