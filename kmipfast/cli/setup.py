"""init, serve and selfcheck."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmipfast import __version__, pki
from kmipfast.app import Runtime, runtime
from kmipfast.cli.clients import _allow, _issue_bundle
from kmipfast.cli.common import DEFAULT_TENANT, Add, CliError, _run
from kmipfast.config import Config, data_dir_from, load_config, parse_listen, write_default_config
from kmipfast.store.base import NodeRecord

if TYPE_CHECKING:
    from kmipfast.admin import AdminServer
    from kmipfast.server import KmipServer


# -- init -----------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args.data_dir)
    fresh = not (data_dir / "kmipfast.toml").exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if fresh:
        choices: dict[str, Any] = {}
        if args.software_root:
            choices["software_root"] = True
        if args.store:
            choices["store_url"] = args.store
        write_default_config(data_dir, **choices)
    config = load_config(data_dir)
    if args.store and args.store != config.store.url:
        raise CliError(
            f"{data_dir / 'kmipfast.toml'} already names another store: edit [store] url there"
        )
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
            if not sans or not _sans_differ(cert_path, ca, names):
                continue
            print(f"server certificate {cert_path.name}: new SANs {', '.join(names)}")
        cert, key = pki.issue_server_cert(ca, ca_key, names, key_type=key_type)  # type: ignore[arg-type]
        pki.write_private_key(key_path, key)
        pki.write_certs(cert_path, [cert, ca])


def _sans_differ(cert_path: Path, ca: Any, names: list[str]) -> bool:
    """Whether `init --san` asks for other names than the existing certificate has; an
    operator's own certificate (not issued by the kmipfast CA) is never replaced."""
    from kmipfast.auth import issued_by

    cert = pki.load_cert(cert_path)
    wanted = {str(pki.parse_san(n).value) for n in names}
    have = {n.split(":", 1)[1] for n in pki.sans_of(cert)}
    if wanted == have:
        return False
    if not issued_by(cert, ca):
        raise CliError(
            f"{cert_path} is not issued by the kmipfast CA (installed by the operator): "
            "replace it with kmipfast server cert install"
        )
    return True


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
    overrides = {"server.tls_engine": args.tls_engine} if args.tls_engine else {}
    if args.admin_listen is not None:
        overrides["server.admin_listen"] = args.admin_listen
    if os.environ.get("KMIPFAST_WORKER_INDEX", "0") != "0":
        overrides["server.admin_listen"] = "off"  # one admin listener: worker 0's
    config = load_config(data_dir_from(args.data_dir), overrides or None)
    listen = args.listen or config.server.listen
    host, port = parse_listen(listen)
    workers = args.workers if args.workers is not None else config.server.workers
    if workers < 1:
        raise CliError(f"--workers must be at least 1 (got {workers})")
    if workers > 1:
        from kmipfast import workers as supervisor

        command = [sys.executable, "-m", "kmipfast.cli", "--data-dir", str(config.data_dir),
                   "serve"]  # fmt: skip
        for flag, value in (("--tls-engine", args.tls_engine),
                            ("--admin-listen", args.admin_listen)):  # fmt: skip
            if value is not None:
                command += [flag, value]
        if args.verbose:
            command.append("--verbose")
        return supervisor.supervise(command, host, port, workers)
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
    return asyncio.run(_serve(config, host, port, reuse_port=args.reuse_port))


async def _serve(config: Config, host: str, port: int, *, reuse_port: bool = False) -> int:
    from kmipfast.auth import AllowList
    from kmipfast.operations import DISPATCH, QUICK
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
            quick=QUICK,
        )

        def ready(h: str, p: int) -> None:
            print(f"kmipfast listening on {h}:{p}", flush=True)
            _print_how_to_connect(config, h, p)

        node_id = f"{socket.gethostname()}:{os.getpid()}"

        async def on_data_change() -> None:
            # Tenant and root-key changes; object changes made by other processes reach
            # the cache on the next request (Store.foreign_epoch).
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
        admin = await _start_admin(config, rt, server, node_id)
        try:
            preload = asyncio.ensure_future(_preload_master_keys(rt))
            await server.serve(host, port, reuse_port=reuse_port)
            preload.cancel()
        finally:
            if admin is not None:
                await admin.close()
        rt.services.keys.drop_all()
        # Stopped cleanly and holds no key: `root shred` need not wait for this node.
        await rt.store.put_node(
            NodeRecord(id=node_id, pid=os.getpid(), host=socket.gethostname(),
                       data_version=0, seen=0, held="")
        )  # fmt: skip
    print("kmipfast stopped", flush=True)
    return 0


async def _start_admin(
    config: Config, rt: Runtime, server: KmipServer, node_id: str
) -> AdminServer | None:
    """The admin listener (/metrics, /healthz, /readyz), or None when it is off or its
    address is taken: KMIP is served either way, the failure is logged."""
    from kmipfast.admin import AdminServer, admin_address

    listen = admin_address(config.server.admin_listen)
    if listen is None:
        return None
    admin = AdminServer(rt, server, node_id)
    try:
        h, p = await admin.start(*parse_listen(listen))
    except OSError as e:
        logging.getLogger("kmipfast").warning("admin listener not started on %s: %s", listen, e)
        return None
    shown = f"[{h}]" if ":" in h else h
    print(f"kmipfast admin listening on http://{shown}:{p} (/metrics /healthz /readyz)", flush=True)
    return admin


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


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from kmipfast import _native

    tree: _native.Item = (0x420078, 1, [(0x420069, 1, [(0x42006A, 2, 1), (0x42006B, 2, 4)])])
    assert _native.decode(_native.encode(tree)) == tree
    print(f"kmipfast {__version__}, native module {_native.__version__}: self-check ok")
    return 0


def register(sub: Any, add: Add) -> None:
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
    sp.add_argument(
        "--store",
        metavar="URL",
        help="where objects, tenants and clients live (written into the config): "
        "sqlite:///FILE (default, in the data dir) or postgresql://USER@HOST[:PORT][,HOST2...]/DB"
        " to share them between nodes",
    )
    sp = add(sub, "serve", cmd_serve, "serve KMIP over mutually authenticated TLS")
    sp.set_defaults(logs=True)
    sp.add_argument("--listen", help="HOST:PORT (default from config, 127.0.0.1:5696)")
    sp.add_argument("--tls-engine", choices=("auto", "rustls", "openssl"),
                    help="TLS engine (default from config: auto)")  # fmt: skip
    sp.add_argument("--admin-listen", metavar="HOST:PORT",
                    help="admin HTTP listener for /metrics, /healthz, /readyz "
                         "(default from config, 127.0.0.1:9696; off to disable)")  # fmt: skip
    sp.add_argument("--workers", type=int, metavar="N",
                    help="N server processes on one port, sharing the store "
                         "(default from config: 1)")  # fmt: skip
    sp.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument("-v", "--verbose", action="store_true")
    add(sub, "selfcheck", cmd_selfcheck, "check the native module")
