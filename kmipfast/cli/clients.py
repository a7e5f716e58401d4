"""kmipfast client ...: the allow-list, roles, refusals and expiry."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import re
import shlex
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kmipfast import auth, pki
from kmipfast.app import Runtime, runtime
from kmipfast.auditchain import log_files
from kmipfast.auth import client_pem_path
from kmipfast.cli.common import Add, CliError, _config, _date, _run
from kmipfast.config import Config
from kmipfast.store.base import ClientRecord, StoreConflict

ROLE_HELP = "what the client may do: vcenter, array, readonly or full (default full)"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _check_tenant(rt: Runtime, tenant: str) -> None:
    if await rt.store.get_tenant(tenant) is None:
        raise CliError(f"no tenant {tenant!r}; create it with: kmipfast tenant create {tenant}")


# -- clients ------------------------------------------------------------------------------
async def _allow(
    rt: Runtime, cert_pem: bytes, name: str, tenant: str, role: str = auth.DEFAULT_ROLE
) -> ClientRecord:
    await _check_tenant(rt, tenant)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CliError("not a PEM certificate") from None
    info = pki.describe(cert)
    if info.not_after < _now():
        raise CliError(f"certificate expired on {info.not_after:%Y-%m-%d}")
    existing = await rt.store.get_client_by_fingerprint(info.fingerprint)
    if existing is not None and existing.name != name:
        raise CliError(f"that certificate is already allowed as client {existing.name!r}")
    path = client_pem_path(rt.config.data_dir, info.fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_certs(path, cert)
    rec = ClientRecord(
        name=name,
        tenant=tenant,
        fingerprint=info.fingerprint,
        subject=info.subject,
        issuer=info.issuer,
        not_after=int(info.not_after.timestamp()),
        created=int(_now().timestamp()),
        role=role,
    )
    try:
        await rt.store.put_client(rec)
    except StoreConflict:
        raise CliError("that certificate is already allowed under another name") from None
    rt.services.audit.admin(
        "client allowed",
        client=name,
        tenant=tenant,
        role=role,
        fingerprint=info.fingerprint,
        subject=info.subject,
        os_user=auth.require_admin(rt.config.data_dir),
    )
    return rec


def _issue_bundle(config: Config, name: str, out: Path, key_type: str) -> tuple[Path, Path, bytes]:
    ca = pki.load_cert(config.ca_cert_path)
    ca_key = pki.load_key(config.ca_key_path)
    cert, key = pki.issue_client_cert(ca, ca_key, name, key_type=key_type)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    pki.write_private_key(key_path, key)
    pki.write_certs(crt_path, cert)
    pki.write_certs(out / "ca.crt", ca)
    return crt_path, key_path, pki.cert_pem(cert)


def _admin_config(args: argparse.Namespace) -> Config:
    config = _config(args)
    auth.require_admin(config.data_dir)
    return config


def cmd_client_issue(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def go() -> int:
        async with runtime(config) as rt:
            await _check_tenant(rt, args.tenant)
            if await rt.store.get_client(args.name) is not None:
                raise CliError(f"a client named {args.name!r} exists; remove it first")
            crt, key, pem = _issue_bundle(config, args.name, Path(args.out), args.key_type)
            await _allow(rt, pem, args.name, args.tenant, args.role)
            print(
                f"issued {crt} and {key} (CA: {Path(args.out) / 'ca.crt'}) for tenant "
                f"{args.tenant}, role {args.role}"
            )
            return 0

    return _run(go())


def cmd_client_allow(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    pem = Path(args.cert).read_bytes()
    name = args.name or Path(args.cert).stem

    async def go() -> int:
        async with runtime(config) as rt:
            rec = await _allow(rt, pem, name, args.tenant, args.role)
            print(f"allowed {rec.name} ({rec.subject}, fingerprint {rec.fingerprint})")
            print(f"tenant: {rec.tenant}, role: {rec.role}")
            return 0

    return _run(go())


def cmd_client_allow_ca(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    certs = pki.load_certs(args.ca)
    ca = certs[0]
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CliError(f"{ca.subject.rfc4514_string()} is not a CA certificate (CA:true missing)")
    info = pki.describe(ca)
    if info.not_after < _now():
        raise CliError(f"CA certificate expired on {info.not_after:%Y-%m-%d}")
    pattern = args.subject_match or "*"
    if not pattern.strip() or any(ord(c) < 0x20 for c in pattern):
        raise CliError("--subject-match must be a non-empty shell-style pattern, e.g. 'esx-*'")
    cn = auth.common_name(ca) or info.fingerprint[:16]
    name = args.name or f"ca:{cn}:{pattern}"

    async def go() -> int:
        async with runtime(config) as rt:
            await _check_tenant(rt, args.tenant)
            existing = await rt.store.get_client(name)
            if existing is not None and existing.ca_pem is None:
                raise CliError(f"a client named {name!r} exists; choose another --name")
            rec = ClientRecord(
                name=name,
                tenant=args.tenant,
                fingerprint=None,
                subject=info.subject,
                issuer=info.issuer,
                not_after=int(info.not_after.timestamp()),
                created=int(_now().timestamp()),
                ca_rule=pattern,
                role=args.role,
                ca_pem=pki.cert_pem(ca).decode(),
            )
            await rt.store.put_client(rec)
            rt.services.audit.admin(
                "client CA allowed",
                client=name,
                tenant=args.tenant,
                role=args.role,
                ca=info.subject,
                ca_fingerprint=info.fingerprint,
                subject_match=pattern,
                os_user=auth.require_admin(config.data_dir),
            )
            print(
                f"allowed {name}: certificates issued by {info.subject} whose CN matches "
                f"{pattern!r}"
            )
            print(f"tenant: {args.tenant}, role: {args.role}")
            return 0

    return _run(go())


def cmd_client_sign_csr(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    csr = Path(args.csr).read_bytes()
    ca = pki.load_cert(config.ca_cert_path)
    ca_key = pki.load_key(config.ca_key_path)
    cert = pki.sign_csr(ca, ca_key, csr, args.name)
    name = args.name or auth.common_name(cert) or pki.describe(cert).subject
    out = Path(args.out)
    chain = Path(args.chain_out) if args.chain_out else out.with_name("ca.crt")
    if not out.parent.is_dir():
        raise CliError(f"directory {out.parent} does not exist")

    async def go() -> int:
        async with runtime(config) as rt:
            await _check_tenant(rt, args.tenant)
            if await rt.store.get_client(name) is not None:
                raise CliError(f"a client named {name!r} exists; remove it or give --name")
            written: list[Path] = []
            try:
                for path, what in ((out, cert), (chain, ca)):
                    pki.write_certs(path, what)
                    written.append(path)
                await _allow(rt, pki.cert_pem(cert), name, args.tenant, args.role)
            except BaseException:
                for path in written:  # nothing half-done: no files without the client
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
        print(f"signed {out} (CA chain: {chain}) for tenant {args.tenant}, role {args.role}")
        return 0

    return _run(go())


def cmd_client_remove(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def go() -> int:
        async with runtime(config) as rt:
            old = await rt.store.get_client(args.name)
            if old is None or not await rt.store.remove_client(args.name):
                raise CliError(f"no client named {args.name!r}")
            rt.services.audit.admin(
                "client removed",
                client=args.name,
                tenant=old.tenant,
                fingerprint=old.fingerprint,
                os_user=auth.require_admin(config.data_dir),
            )
            print(f"removed {args.name}; its open sessions close within a second")
            return 0

    return _run(go())


def cmd_client_list(args: argparse.Namespace) -> int:
    config = _config(args)
    days = config.clients.expiry_warning_days

    async def go() -> int:
        async with runtime(config, audit=False) as rt:
            clients = await rt.store.list_clients()
            soon = {c.name for c, _ in auth.expiring(clients, days)}
            now = _now().timestamp()
            for c in clients:
                expires = _date(c.not_after) or "-"
                if c.name in soon:
                    ended = c.not_after is not None and c.not_after <= now
                    expires += " (EXPIRED)" if ended else " (EXPIRES SOON)"
                what = (
                    f"{c.subject}\t{c.fingerprint}"
                    if c.fingerprint
                    else f"CA {c.subject}\tCN matches {c.ca_rule!r}"
                )
                print(f"{c.name}\ttenant={c.tenant}\trole={c.role}\texpires={expires}\t{what}")
            return 0

    return _run(go())


def cmd_client_renew(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    ca = pki.load_cert(config.ca_cert_path)
    ca_key = pki.load_key(config.ca_key_path)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CliError(f"directory {out.parent} does not exist")

    async def go() -> int:
        async with runtime(config) as rt:
            old = await rt.store.get_client(args.name)
            if old is None:
                raise CliError(f"no client named {args.name!r}")
            if not old.fingerprint:
                raise CliError(f"{args.name} is a CA rule: renew certificates at that CA")
            try:
                old_cert = pki.load_cert(client_pem_path(config.data_dir, old.fingerprint))
            except pki.PkiError:
                raise CliError(f"the certificate of {args.name} is not in the data dir") from None
            if not auth.issued_by(old_cert, ca):
                raise CliError(
                    f"{args.name}'s certificate was not issued by kmipfast (issuer "
                    f"{old.issuer}): its issuer must renew it, then: kmipfast client allow"
                )
            cert = pki.reissue_client_cert(ca, ca_key, old_cert)
            pki.write_certs(out, cert)
            try:
                rec = await _allow(rt, pki.cert_pem(cert), old.name, old.tenant, old.role)
            except BaseException:
                with contextlib.suppress(OSError):
                    out.unlink()
                raise
            print(
                f"renewed {rec.name}: {out} valid until {_date(rec.not_after)} (same key); "
                "the old certificate is no longer accepted: install the new one on the client"
            )
            return 0

    return _run(go())


# -- refusals -----------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w`` (a bare number is seconds)."""
    m = _DURATION.match(text)
    if m is None:
        raise CliError(f"bad duration {text!r}: use e.g. 30m, 1h, 2d")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def refusals(audit_path: Path, since: dt.datetime) -> list[dict[str, Any]]:
    """Refused-client audit lines since ``since`` (rotated files too), newest first, one per
    certificate.  Lines are JSON objects; fields other than ours are ignored."""
    lines: list[dict[str, Any]] = []
    for path in log_files(audit_path):
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                for raw in f:
                    if '"refused"' not in raw:
                        continue
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue  # a torn last line, or not ours
                    if not isinstance(event, dict) or event.get("kind") != "refused":
                        continue
                    try:
                        when = dt.datetime.strptime(str(event.get("time")), "%Y-%m-%dT%H:%M:%SZ")
                    except ValueError:
                        continue
                    when = when.replace(tzinfo=dt.UTC)
                    if when >= since:
                        event["_when"] = when
                        lines.append(event)
        except FileNotFoundError:
            continue  # rotated away while reading
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for event in reversed(lines):
        key = event.get("fingerprint") or f"{event.get('peer')}|{event.get('reason')}"
        if key in seen:
            seen[key]["_count"] += 1
            continue
        event["_count"] = 1
        seen[key] = event
        out.append(event)
    return out


def _allow_command(args: argparse.Namespace, event: dict[str, Any], tenant: str) -> str | None:
    pem = event.get("certificate")
    if not pem or not Path(pem).is_file():
        return None
    reason = event.get("reason")
    if reason in (auth.EXPIRED, auth.NOT_YET_VALID):
        return None
    cmd = ["kmipfast"]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    name = None
    with contextlib.suppress(pki.PkiError):
        name = auth.common_name(pki.load_cert(pem))
    cmd += ["client", "allow", pem, "--tenant", tenant]
    if name:
        cmd += ["--name", name]
    return shlex.join(cmd)


async def _allowed_now(config: Config, events: list[dict[str, Any]]) -> set[str]:
    """Fingerprints of refused certificates that the allow-list admits today."""
    async with runtime(config, audit=False) as rt:
        allow = auth.AllowList(rt.store, config.data_dir)
        await allow.reload_if_changed()
    out = set()
    for event in events:
        fp = event.get("fingerprint")
        if not fp:
            continue
        if fp in allow.by_fingerprint:
            out.add(fp)
            continue
        pem = event.get("certificate")
        if pem and allow.ca_rules and Path(pem).is_file():
            with contextlib.suppress(pki.PkiError, ValueError):
                der = pki.load_cert(pem).public_bytes(serialization.Encoding.DER)
                if allow.identify(der).client is not None:
                    out.add(fp)
    return out


def cmd_client_refused(args: argparse.Namespace) -> int:
    config = _config(args)
    since = _now() - parse_duration(args.since)
    events = refusals(config.audit_path, since)
    if not events:
        print(f"no refused clients since {since:%Y-%m-%d %H:%M:%S}Z")
        return 0
    allowed = asyncio.run(_allowed_now(config, events))
    for event in events:
        times = f" ({event['_count']} times)" if event["_count"] > 1 else ""
        print(f"{event['_when']:%Y-%m-%dT%H:%M:%SZ}  {event.get('reason')}{times}")
        for key in ("subject", "issuer", "fingerprint", "peer", "detail"):
            if event.get(key):
                print(f"  {key}: {event[key]}")
        reason = event.get("reason")
        command = _allow_command(args, event, args.tenant)
        if event.get("fingerprint") in allowed:
            print("  allowed since then")
        elif command:
            print(f"  allow it: {command}")
        elif reason in (auth.EXPIRED, auth.NOT_YET_VALID):
            print("  the client needs a currently valid certificate from its issuer "
                  "(kmipfast client renew NAME, if kmipfast issued it)")  # fmt: skip
        elif reason in auth.REFUSAL_REASONS:
            print(
                "  its certificate was not seen (refused inside the TLS handshake): get it "
                f"from the client, then: kmipfast client allow CERT --tenant {args.tenant}"
            )
    return 0


def register(sub: Any, add: Add) -> None:
    client = sub.add_parser("client", help="allowed clients").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    roles = tuple(auth.ROLES)
    sp = add(client, "issue", cmd_client_issue, "issue a client certificate and allow it")
    sp.add_argument("name")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--out", required=True, help="directory for NAME.crt, NAME.key, ca.crt")
    sp.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    sp.add_argument("--role", choices=roles, default=auth.DEFAULT_ROLE, help=ROLE_HELP)
    sp = add(client, "allow", cmd_client_allow, "allow a client certificate (e.g. self-signed)")
    sp.add_argument("cert")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--name")
    sp.add_argument("--role", choices=roles, default=auth.DEFAULT_ROLE, help=ROLE_HELP)
    sp = add(
        client,
        "allow-ca",
        cmd_client_allow_ca,
        "allow every certificate a CA issued whose subject CN matches a pattern",
    )
    sp.add_argument("ca", help="PEM of the CA certificate")
    sp.add_argument("--tenant", required=True)
    sp.add_argument(
        "--subject-match", help="shell-style pattern for the subject CN (default '*': any)"
    )
    sp.add_argument("--name", help="name of the rule (default ca:CN:PATTERN)")
    sp.add_argument("--role", choices=roles, default=auth.DEFAULT_ROLE, help=ROLE_HELP)
    sp = add(
        client,
        "sign-csr",
        cmd_client_sign_csr,
        "sign a client's CSR with the server CA and allow it",
    )
    sp.add_argument("csr")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--name")
    sp.add_argument(
        "--chain-out", help="where to write the CA chain (default: ca.crt beside --out)"
    )
    sp.add_argument("--role", choices=roles, default=auth.DEFAULT_ROLE, help=ROLE_HELP)
    sp = add(client, "remove", cmd_client_remove, "remove a client; its sessions are closed")
    sp.add_argument("name")
    add(client, "list", cmd_client_list, "list allowed clients, their roles and expiry")
    sp = add(client, "renew", cmd_client_renew, "re-issue a certificate kmipfast issued")
    sp.add_argument("name")
    sp.add_argument("--out", required=True, help="where to write the new certificate")
    sp = add(
        client,
        "refused",
        cmd_client_refused,
        "list refused clients, newest first, with the command that would allow each",
    )
    sp.add_argument("--since", default="24h", help="how far back (e.g. 30m, 1h, 2d; default 24h)")
    sp.add_argument(
        "--tenant", default="default", help="tenant to name in the allow commands (default default)"
    )
