"""kmipfast root ...: tenant root keys in the HSM."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmipfast import shredcert
from kmipfast.app import Runtime, runtime
from kmipfast.cli.common import Add, CliError, _config, _date, _run
from kmipfast.errors import HsmError

if TYPE_CHECKING:
    from kmipfast.keys.rotation import ShredReceipt


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

    out = args.certificate_out
    if out is not None and not Path(out).resolve().parent.is_dir():
        raise CliError(f"--certificate-out {out}: no such directory; nothing shredded")

    async def go() -> int:
        config = _config(args)
        async with runtime(config) as rt:
            receipt = await rotation.shred_with_receipt(rt.services.keys, args.tenant)
            # The shred's line, durably in the chain before the certificate cites it.
            seq, head = await asyncio.get_running_loop().run_in_executor(
                rt.executor, rt.services.audit.commit, shredcert.audit_event(receipt)
            )
            path = await _write_certificate(rt, receipt, seq, head, args.certificate_out)
            if receipt.lagging:
                raise CliError(
                    f"tenant {args.tenant} shredded, but server(s) {', '.join(receipt.lagging)} "
                    f"have not confirmed dropping its master key yet (certificate: {path})"
                )
            print(f"tenant {args.tenant} shredded: its root key is destroyed and no server "
                  "holds its master key")  # fmt: skip
            print(f"shred certificate: {path}")
            return 0

    return _run(go())


async def _write_certificate(
    rt: Runtime, receipt: ShredReceipt, seq: int, head: str, out: str | None
) -> Path:
    """Signs the shred certificate (in the HSM, off the event loop) and writes it, with
    the uid list it digests next to it (``.uids``)."""
    config = rt.config
    if receipt.handles_still_found or receipt.label_still_found:
        raise CliError(f"the HSM still finds root key {receipt.root_label} after destroying it; "
                       "no shred certificate written")  # fmt: skip
    signer = rt.services.audit.signer
    if signer is None:
        raise CliError("no audit signing key available: no shred certificate written")
    when = _date(int(time.time())) or ""
    hsm = ("software root (DEVELOPMENT ONLY)" if config.hsm.software_root
           else f"PKCS#11 token {config.hsm.token_label!r}")  # fmt: skip
    doc = shredcert.unsigned(receipt, time=when, hsm=hsm, audit_seq=seq, audit_hash=head)
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(rt.executor, shredcert.sign, doc, signer)
    except HsmError as e:
        raise CliError(f"tenant {receipt.tenant} shredded, but the certificate could not be "
                       f"signed: {e}") from None  # fmt: skip
    if out is not None:
        path = Path(out)
    else:
        stamp = when.replace(":", "").replace("-", "")
        path = config.data_dir / "shred-certificates" / f"{receipt.tenant}-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
        path.with_name(path.name + ".uids").write_text("\n".join(receipt.uids))
    except OSError as e:
        raise CliError(f"tenant {receipt.tenant} shredded, but the certificate could not be "
                       f"written to {path}: {e.strerror}") from None  # fmt: skip
    return path


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


def register(sub: Any, add: Add) -> None:
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
    sp.add_argument("--certificate-out", metavar="FILE",
                    help="where to write the signed shred certificate "
                         "(default: shred-certificates/ in the data dir)")  # fmt: skip
    sp = add(root, "status", cmd_root_status, "root keys, master key generations, holders")
    sp.add_argument("--tenant")
