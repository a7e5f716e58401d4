"""The ``kmipfast`` command: parsing and printing only; the work is elsewhere.

Every command takes ``--data-dir`` (default ``$KMIPFAST_DATA_DIR``, else
``./kmipfast-data``).  Errors are one plain line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kmipfast import __version__, pki
from kmipfast.app import Runtime, runtime
from kmipfast.auth import client_pem_path
from kmipfast.config import (
    Config,
    ConfigError,
    data_dir_from,
    load_config,
    parse_listen,
    write_default_config,
)
from kmipfast.errors import HsmError
from kmipfast.keys.rotation import RootKeyError
from kmipfast.protocol.enums import ObjectType, State
from kmipfast.store.base import ClientRecord, NodeRecord, StoreConflict, StoreError

DEFAULT_TENANT = "default"


class CliError(Exception):
    """A failure reported as one line."""


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _config(args: argparse.Namespace) -> Config:
    return load_config(data_dir_from(args.data_dir))


# -- init -----------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args.data_dir)
    fresh = not (data_dir / "kmipfast.toml").exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if fresh:
        choices: dict[str, Any] = {}
        if args.software_root:
            choices["software_root"] = True
        write_default_config(data_dir, **choices)
    config = load_config(data_dir)
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if not config.hsm.software_root and config.hsm_module_path is None:
        _ensure_softhsm_installed()
    _ensure_pki(config, args.san or None)
    created = _run(_ensure_default_tenant(config))
    _run(_ensure_bundle(config))
    if fresh or created or not args.if_new:
        print(f"data dir:        {data_dir}")
        print(f"server CA:       {config.ca_cert_path}")
        print(f"server cert:     {config.server_cert_path}")
        print(f"tenant:          {DEFAULT_TENANT}" + (" (created)" if created else ""))
        print("next: kmipfast client issue NAME --tenant default --out DIR; kmipfast serve")
    return 0


def _ensure_softhsm_installed() -> None:
    """The built-in HSM is SoftHSM2: install Debian's package when it is missing."""
    from kmipfast.keys.softhsm import find_softhsm_module

    if find_softhsm_module() is not None and shutil.which("softhsm2-util"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise CliError("SoftHSM2 is missing: apt-get install softhsm2, or set hsm.module")
    print("installing softhsm2 (Debian package) for the built-in HSM", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "softhsm2"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise CliError(f"{' '.join(cmd)}: {last}")


def _ensure_pki(config: Config, sans: list[str] | None) -> None:
    tls = config.ca_cert_path.parent
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not config.ca_cert_path.exists():
        ca, ca_key = pki.create_ca(f"kmipfast CA {socket.gethostname()}")
        pki.write_private_key(config.ca_key_path, ca_key)
        pki.write_certs(config.ca_cert_path, ca)
    ca = pki.load_cert(config.ca_cert_path)
    ca_key = pki.load_key(config.ca_key_path)
    names = sans or pki.default_sans()
    for cert_path, key_path, key_type in (
        (config.server_cert_path, config.server_key_path, "ec"),
        (
            config.server_cert_path.with_name("server-rsa.crt"),
            config.server_key_path.with_name("server-rsa.key"),
            "rsa",
        ),
    ):
        if cert_path.exists() and key_path.exists():
            continue
        cert, key = pki.issue_server_cert(ca, ca_key, names, key_type=key_type)  # type: ignore[arg-type]
        pki.write_private_key(key_path, key)
        pki.write_certs(cert_path, [cert, ca])


async def _ensure_default_tenant(config: Config) -> int:
    async with runtime(config, provision=True) as rt:
        if await rt.store.get_tenant(DEFAULT_TENANT) is not None:
            return 0
        await rt.services.keys.create_tenant(DEFAULT_TENANT)
        rt.services.audit.admin("tenant created", tenant=DEFAULT_TENANT)
        return 1


BUNDLE_CLIENT = "local-admin"


def bundle_dir(config: Config) -> Path:
    return config.data_dir / "clients" / "bundle"


async def _ensure_bundle(config: Config) -> int:
    """A client bundle for tenant default, so a fresh install can be tried at once."""
    out = bundle_dir(config)
    if (out / f"{BUNDLE_CLIENT}.crt").exists():
        return 0
    async with runtime(config) as rt:
        if await rt.store.get_client(BUNDLE_CLIENT) is not None:
            return 0
        _crt, _key, pem = _issue_bundle(config, BUNDLE_CLIENT, out, "ec")
        await _allow(rt, pem, BUNDLE_CLIENT, DEFAULT_TENANT)
    host, port = parse_listen(config.server.listen)
    write_pykmip_conf(out, host, port)
    return 1


def write_pykmip_conf(out: Path, host: str, port: int) -> Path:
    """A PyKMIP client configuration for the bundle in ``out``."""
    path = out / "pykmip.conf"
    path.write_text(
        "[client]\n"
        f"host={host}\nport={port}\n"
        f"certfile={out / (BUNDLE_CLIENT + '.crt')}\n"
        f"keyfile={out / (BUNDLE_CLIENT + '.key')}\n"
        f"ca_certs={out / 'ca.crt'}\n"
        "cert_reqs=CERT_REQUIRED\nssl_version=PROTOCOL_TLS\ndo_handshake_on_connect=True\n"
        "suppress_ragged_eofs=True\n"
    )
    return path


# -- serve ----------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    overrides = {"server.tls_engine": args.tls_engine} if args.tls_engine else None
    config = load_config(data_dir_from(args.data_dir), overrides)
    listen = args.listen or config.server.listen
    host, port = parse_listen(listen)
    logging.basicConfig(
        level=logging.INFO if not args.verbose else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for warning in config.warnings():
        logging.getLogger("kmipfast").warning("%s", warning)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        logging.getLogger("kmipfast").warning("uvloop missing; using the default event loop")
    return asyncio.run(_serve(config, host, port))


async def _serve(config: Config, host: str, port: int) -> int:
    from kmipfast.auth import AllowList
    from kmipfast.operations import DISPATCH
    from kmipfast.protocol.processor import Processor
    from kmipfast.server import KmipServer

    async with runtime(config) as rt:
        limits = config.limits
        processor = Processor(
            rt.services,
            DISPATCH,
            max_message_size=limits.max_message_size,
            max_batch_items=limits.max_batch_items,
            max_response_size=limits.max_response_size,
        )

        def ready(h: str, p: int) -> None:
            print(f"kmipfast listening on {h}:{p}", flush=True)
            _print_how_to_connect(config, h, p)

        node_id = f"{socket.gethostname()}:{os.getpid()}"

        async def on_data_change() -> None:
            for tenant in await rt.services.keys.sync():
                rt.services.vault.forget(tenant)

        async def report(version: int) -> None:
            await rt.store.put_node(
                NodeRecord(
                    id=node_id,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    data_version=version,
                    seen=int(time.time()),
                    held=",".join(rt.services.keys.held_tenants()),
                )
            )

        server = KmipServer(
            config,
            processor,
            AllowList(rt.store, config.data_dir),
            rt.services.audit,
            on_ready=ready,
            on_data_change=on_data_change,
            report=report,
        )
        preload = asyncio.ensure_future(_preload_master_keys(rt))
        await server.serve(host, port)
        preload.cancel()
        rt.services.keys.drop_all()
        # Stopped cleanly and holds no key: `root shred` need not wait for this node.
        await rt.store.put_node(
            NodeRecord(id=node_id, pid=os.getpid(), host=socket.gethostname(),
                       data_version=0, seen=0, held="")
        )  # fmt: skip
    print("kmipfast stopped", flush=True)
    return 0


async def _preload_master_keys(rt: Runtime) -> None:
    """Unseal every tenant's master key at start, so the first requests after a restart
    (a cluster reboot storm) find them held instead of queueing on the HSM."""
    log = logging.getLogger("kmipfast")
    for tenant in await rt.store.list_tenants():
        try:
            await rt.services.keys.master(tenant.name)
        except Exception as e:  # reported again, as a KMIP error, to whoever needs it
            log.warning("master key of tenant %s not available: %s", tenant.name, e)


def _print_how_to_connect(config: Config, host: str, port: int) -> None:
    out = bundle_dir(config)
    if not (out / f"{BUNDLE_CLIENT}.crt").exists():
        return
    crt, key, ca = out / f"{BUNDLE_CLIENT}.crt", out / f"{BUNDLE_CLIENT}.key", out / "ca.crt"
    write_pykmip_conf(out, "127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
    print(f"client bundle (tenant default): cert {crt}, key {key}, CA {ca}", flush=True)
    print(f"PyKMIP client config: {out / 'pykmip.conf'}", flush=True)
    print(
        '  python -c "from kmip.pie.client import ProxyKmipClient; '
        f"from kmip import enums; c = ProxyKmipClient(config_file='{out / 'pykmip.conf'}'); "
        "c.open(); uid = c.create(enums.CryptographicAlgorithm.AES, 256); "
        'print(uid, len(c.get(uid).value)); c.close()"',
        flush=True,
    )


# -- tenants ----------------------------------------------------------------------------
def cmd_tenant_create(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args)) as rt:
            try:
                rec = await rt.services.keys.create_tenant(args.name)
            except StoreConflict:
                raise CliError(f"tenant {args.name!r} already exists") from None
            rt.services.audit.admin("tenant created", tenant=args.name)
            print(f"tenant {rec.name} created (root key {rec.root_label})")
            return 0

    return _run(go())


def cmd_tenant_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            for t in await rt.store.list_tenants():
                counts = await rt.store.count_objects(t.name)
                print(
                    f"{t.name}\troot={t.root_label}\tobjects={sum(counts.values())}\t"
                    f"created={_date(t.created)}"
                )
            return 0

    return _run(go())


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


# -- root keys ------------------------------------------------------------------------------
def cmd_root_rotate(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            keys = rt.services.keys
            rec = await rotation.rotate(keys, args.tenant, reencrypt=args.reencrypt)
            rt.services.audit.admin(
                "root key rotated", tenant=args.tenant, root=rec.root_label,
                generation=rec.master_key_version, reencrypt=args.reencrypt,
            )  # fmt: skip
            print(f"tenant {args.tenant}: root key is now {rec.root_label}")
            if args.reencrypt:
                moved = await _reencrypt_with_progress(keys, args.tenant)
                rt.services.audit.admin(
                    "master key re-encryption finished", tenant=args.tenant, objects=moved,
                    generation=rec.master_key_version,
                )  # fmt: skip
                print(f"tenant {args.tenant}: {moved} object keys moved to master key "
                      f"generation {rec.master_key_version}; the previous one is gone")  # fmt: skip
            return 0

    return _run(go())


async def _reencrypt_with_progress(keys: Any, tenant: str) -> int:
    from rich.progress import Progress as Bar

    from kmipfast.keys import rotation

    with Bar(transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"re-encrypting {tenant}", total=None)
        progress = rotation.Progress(
            start=lambda total: bar.update(task, total=total),
            advance=lambda n: bar.advance(task, n),
        )
        return int(await rotation.reencrypt_objects(keys, tenant, progress))


def cmd_root_shred(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    if not args.yes:
        raise CliError(f"shredding makes every key of tenant {args.tenant} unrecoverable; "
                       "add --yes to do it")  # fmt: skip

    async def go() -> int:
        async with runtime(_config(args)) as rt:
            lagging = await rotation.shred(rt.services.keys, args.tenant)
            rt.services.audit.admin("tenant shredded", tenant=args.tenant)
            if lagging:
                raise CliError(
                    f"tenant {args.tenant} shredded, but server(s) {', '.join(lagging)} have "
                    "not confirmed dropping its master key yet"
                )
            print(f"tenant {args.tenant} shredded: its root key is destroyed and no server "
                  "holds its master key")  # fmt: skip
            return 0

    return _run(go())


def cmd_root_status(args: argparse.Namespace) -> int:
    from kmipfast.keys import rotation

    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            rows = await rotation.status(rt.services.keys, args.tenant)
            for r in rows:
                hsm = {True: "present", False: "MISSING", None: f"unknown ({r.hsm_error})"}
                state = "shredded" if r.shredded else f"master key generation {r.generation}"
                if r.reencrypting_from is not None:
                    state += (f", re-encrypting from generation {r.reencrypting_from} "
                              f"({r.objects_to_move} objects left)")  # fmt: skip
                print(f"{r.tenant}\troot key {r.root_label} ({hsm[r.root_present]})\t{state}\t"
                      f"created {_date(r.created)}\trotated {_date(r.rotated) or '-'}\t"
                      f"held by {', '.join(r.held_by) or 'no running server'}")  # fmt: skip
            print(f"HSM contact: {_date(int(time.time()))} (now)")
            return 0

    return _run(go())


# -- keys ---------------------------------------------------------------------------------
def cmd_keys_list(args: argparse.Namespace) -> int:
    from kmipfast.vault import ManagedObject

    async def go() -> int:
        async with runtime(_config(args), audit=False) as rt:
            rows = []
            async for rec in rt.store.list_objects(args.tenant):
                obj = ManagedObject.from_record(rec)
                names = [v[2][0][2] for v in obj.attributes.get("Name", []) if v[2]]
                rows.append(
                    {
                        "uid": obj.uid,
                        "tenant": obj.tenant,
                        "type": _enum_name(ObjectType, obj.object_type),
                        "state": _enum_name(State, obj.state),
                        "names": names,
                        "x-Name": obj.first("x-Name"),
                        "x-Identifier": obj.first("x-Identifier"),
                        "created": _date(obj.first("Initial Date") or obj.created),
                        "activated": _date(obj.first("Activation Date")),
                        "last_change": _date(obj.first("Last Change Date")),
                    }
                )
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    print(
                        "\t".join(
                            str(r[k] or "-")
                            for k in ("uid", "tenant", "type", "state", "x-Name", "created")
                        )
                    )
            return 0

    return _run(go())


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _date(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from kmipfast import _native

    tree: _native.Item = (0x420078, 1, [(0x420069, 1, [(0x42006A, 2, 1), (0x42006B, 2, 4)])])
    assert _native.decode(_native.encode(tree)) == tree
    print(f"kmipfast {__version__}, native module {_native.__version__}: self-check ok")
    return 0


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="data directory (default $KMIPFAST_DATA_DIR or ./kmipfast-data)",
    )
    p = argparse.ArgumentParser(
        prog="kmipfast", description="a high-throughput KMIP key server", parents=[common]
    )
    p.add_argument("--version", action="version", version=f"kmipfast {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common])
        sp.set_defaults(fn=fn)
        return sp

    sp = add(
        sub, "init", cmd_init, "create config, CA, server certificate, HSM token, tenant default"
    )
    sp.add_argument("--if-new", action="store_true", help="quiet when everything already exists")
    sp.add_argument(
        "--san", action="append", help="server certificate SAN (DNS:name, IP:addr); repeatable"
    )
    sp.add_argument(
        "--software-root",
        action="store_true",
        help="DEVELOPMENT ONLY: root keys in a file instead of an HSM",
    )
    sp = add(sub, "serve", cmd_serve, "serve KMIP over mutually authenticated TLS")
    sp.add_argument("--listen", help="HOST:PORT (default from config, 127.0.0.1:5696)")
    sp.add_argument("--tls-engine", choices=("auto", "rustls", "openssl"),
                    help="TLS engine (default from config: auto)")  # fmt: skip
    sp.add_argument("-v", "--verbose", action="store_true")
    add(sub, "selfcheck", cmd_selfcheck, "check the native module")

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(tenant, "create", cmd_tenant_create, "create a tenant with its own root key")
    sp.add_argument("name")
    add(tenant, "list", cmd_tenant_list, "list tenants")

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

    root = sub.add_parser("root", help="tenant root keys in the HSM").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(root, "rotate", cmd_root_rotate, "new root key; the master key is rewrapped")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--reencrypt", action="store_true",
                    help="also move every object key to a new master key (resumable)")  # fmt: skip
    sp = add(root, "shred", cmd_root_shred, "destroy the root key: every key of the tenant is lost")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--yes", action="store_true", help="confirm")
    sp = add(root, "status", cmd_root_status, "root keys, master key generations, holders")
    sp.add_argument("--tenant")

    keys = sub.add_parser("keys", help="managed objects").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(keys, "list", cmd_keys_list, "list objects (never key material)")
    sp.add_argument("--tenant")
    sp.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fn is not cmd_serve:
        # Administrative commands speak in one line each; library chatter stays out.
        logging.basicConfig(level=logging.CRITICAL)
    if not hasattr(args, "data_dir"):
        args.data_dir = None
    try:
        return int(args.fn(args))
    except (CliError, ConfigError, pki.PkiError, StoreError, HsmError, RootKeyError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"kmipfast: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
