"""kmipfast client ...: the allow-list."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from kmipfast import pki
from kmipfast.app import Runtime, runtime
from kmipfast.auth import client_pem_path
from kmipfast.cli.common import Add, CliError, _config, _date, _run
from kmipfast.config import Config
from kmipfast.store.base import ClientRecord, StoreConflict


# -- clients ------------------------------------------------------------------------------
async def _allow(rt: Runtime, cert_pem: bytes, name: str, tenant: str) -> ClientRecord:
    from cryptography import x509

    if await rt.store.get_tenant(tenant) is None:
        raise CliError(f"no tenant {tenant!r}; create it with: kmipfast tenant create {tenant}")
    cert = x509.load_pem_x509_certificate(cert_pem)
    info = pki.describe(cert)
    if info.not_after < dt.datetime.now(dt.UTC):
        raise CliError(f"certificate expired on {info.not_after:%Y-%m-%d}")
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
        created=int(dt.datetime.now(dt.UTC).timestamp()),
    )
    try:
        await rt.store.put_client(rec)
    except StoreConflict:
        raise CliError("that certificate is already allowed under another name") from None
    rt.services.audit.admin(
        "client allowed",
        client=name,
        tenant=tenant,
        fingerprint=info.fingerprint,
        subject=info.subject,
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


def cmd_client_issue(args: argparse.Namespace) -> int:
    config = _config(args)

    async def go() -> int:
        async with runtime(config) as rt:
            if await rt.store.get_client(args.name) is not None:
                raise CliError(f"a client named {args.name!r} exists; remove it first")
            crt, key, pem = _issue_bundle(config, args.name, Path(args.out), args.key_type)
            await _allow(rt, pem, args.name, args.tenant)
            print(
                f"issued {crt} and {key} (CA: {Path(args.out) / 'ca.crt'}) for tenant {args.tenant}"
            )
            return 0

    return _run(go())


def cmd_client_allow(args: argparse.Namespace) -> int:
    pem = Path(args.cert).read_bytes()
    name = args.name or Path(args.cert).stem

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            rec = await _allow(rt, pem, name, args.tenant)
            print(f"allowed {rec.name} ({rec.subject}, fingerprint {rec.fingerprint})")
            print(f"tenant: {rec.tenant}")
            return 0

    return _run(go())


def cmd_client_sign_csr(args: argparse.Namespace) -> int:
    config = _config(args)
    csr = Path(args.csr).read_bytes()
    ca = pki.load_cert(config.ca_cert_path)
    ca_key = pki.load_key(config.ca_key_path)
    cert = pki.sign_csr(ca, ca_key, csr, args.name)
    name = args.name or pki.describe(cert).subject
    out = Path(args.out)

    async def go() -> int:
        async with runtime(config) as rt:
            await _allow(rt, pki.cert_pem(cert), name, args.tenant)
        pki.write_certs(out, cert)
        chain = Path(args.chain_out) if args.chain_out else out.with_name("ca.crt")
        pki.write_certs(chain, ca)
        print(f"signed {out} (CA chain: {chain}) for tenant {args.tenant}")
        return 0

    return _run(go())


def cmd_client_remove(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args)) as rt:
            if not await rt.store.remove_client(args.name):
                raise CliError(f"no client named {args.name!r}")
            rt.services.audit.admin("client removed", client=args.name)
            print(f"removed {args.name}; its open sessions close within a second")
            return 0

    return _run(go())


def cmd_client_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            for c in await rt.store.list_clients():
                expires = _date(c.not_after) if c.not_after else "-"
                print(
                    f"{c.name}\ttenant={c.tenant}\texpires={expires}\t{c.subject}\t{c.fingerprint}"
                )
            return 0

    return _run(go())


def register(sub: Any, add: Add) -> None:
    client = sub.add_parser("client", help="allowed clients").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(client, "issue", cmd_client_issue, "issue a client certificate and allow it")
    sp.add_argument("name")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--out", required=True, help="directory for NAME.crt, NAME.key, ca.crt")
    sp.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    sp = add(client, "allow", cmd_client_allow, "allow a client certificate (e.g. self-signed)")
    sp.add_argument("cert")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--name")
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
    sp = add(client, "remove", cmd_client_remove, "remove a client; its sessions are closed")
    sp.add_argument("name")
    add(client, "list", cmd_client_list, "list allowed clients")
