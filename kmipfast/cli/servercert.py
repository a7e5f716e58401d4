"""kmipfast server cert show|install: the certificate clients verify the server with.

``install`` checks the operator's certificate (key matches, currently valid, chain
issued link by link, serverAuth) before replacing anything; the files are replaced
atomically and a running server notices them at its next allow-list poll (both TLS
engines are rebuilt for new connections; open sessions are not touched).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kmipfast import auth, pki
from kmipfast.audit import AuditLog
from kmipfast.cli.common import Add, _config


def _trust_anchor(chain: list[x509.Certificate], ca: x509.Certificate) -> x509.Certificate:
    """The certificate a client must trust to verify ``chain``: its self-signed top, or
    the kmipfast CA when that issued the top, else the top itself."""
    top = chain[-1]
    if top.issuer == top.subject:
        return top
    if auth.issued_by(top, ca):
        return ca
    return top


def cmd_server_cert_show(args: argparse.Namespace) -> int:
    config = _config(args)
    chain = pki.load_certs(config.server_cert_path)
    ca = pki.load_cert(config.ca_cert_path)
    anchor = _trust_anchor(chain, ca)
    leaf = chain[0]
    now = dt.datetime.now(dt.UTC)
    days = (leaf.not_valid_after_utc - now).days
    print("# the CA certificate a client must trust to verify this server:")
    if anchor.issuer != anchor.subject:
        print(f"# (or its issuer, {anchor.issuer.rfc4514_string()}, which is not installed)")
    print(pki.cert_pem(anchor).decode(), end="")
    print(f"server certificate: {config.server_cert_path}")
    print(f"  subject:  {leaf.subject.rfc4514_string()}")
    print(f"  issuer:   {leaf.issuer.rfc4514_string()}")
    print(f"  SANs:     {', '.join(pki.sans_of(leaf)) or '(none)'}")
    print(f"  expires:  {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} ({days} days)")
    print(f"  fingerprint: {pki.fingerprint(leaf)}")
    if days < config.clients.expiry_warning_days:
        print("  warning: expires soon; kmipfast server cert install CERT KEY")
    rsa_cert = config.server_cert_path.with_name("server-rsa.crt")
    if rsa_cert.exists():
        extra = pki.load_cert(rsa_cert)
        print(f"second (RSA) certificate for RSA-only clients: {rsa_cert}")
        print(f"  SANs:     {', '.join(pki.sans_of(extra)) or '(none)'}")
        print(f"  expires:  {extra.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    print(f"client certificates are verified with the kmipfast CA: {config.ca_cert_path}")
    return 0


def cmd_server_cert_install(args: argparse.Namespace) -> int:
    config = _config(args)
    os_user = auth.require_admin(config.data_dir)
    chain = pki.load_certs(args.cert)
    key = pki.load_key(args.key)
    extra = pki.load_certs(args.chain) if args.chain else []
    full = pki.check_server_cert(chain, key, extra)
    leaf = full[0]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_path, key_path = config.server_cert_path, config.server_key_path
    # The key first: a server that reads the pair between the two renames fails to build
    # the new context, keeps the old one and retries at its next poll.
    backups: list[tuple[Path, bytes]] = []
    for path in (key_path, cert_path):
        with contextlib.suppress(FileNotFoundError):
            backups.append((path, path.read_bytes()))
    try:
        pki.write_file_atomic(key_path, key_pem, 0o600)
        pki.write_certs(cert_path, full)
    except BaseException:
        for path, data in backups:  # put the previous pair back
            with contextlib.suppress(OSError):
                pki.write_file_atomic(path, data, 0o600 if path == key_path else 0o644)
        raise
    retired = ""
    if isinstance(key, rsa.RSAPrivateKey):
        # An RSA certificate serves RSA-only clients itself: the kmipfast-made RSA
        # certificate (other names, other CA) would only confuse them.
        for path in (cert_path.with_name("server-rsa.crt"), key_path.with_name("server-rsa.key")):
            if path.exists():
                os.replace(path, path.with_name(path.name + ".retired"))
                retired = "; the kmipfast RSA certificate was retired"
    audit = AuditLog(config.audit_path)
    try:
        audit.admin(
            "server certificate installed",
            subject=leaf.subject.rfc4514_string(),
            fingerprint=pki.fingerprint(leaf),
            not_after=f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            os_user=os_user,
        )
    finally:
        audit.close()
    print(
        f"installed {leaf.subject.rfc4514_string()} (SANs {', '.join(pki.sans_of(leaf))}, "
        f"expires {leaf.not_valid_after_utc:%Y-%m-%d}){retired}"
    )
    print("a running server uses it for new connections within a second")
    return 0


def register(sub: Any, add: Add) -> None:
    server = sub.add_parser("server", help="the server's own certificate").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    cert = server.add_parser("cert", help="show or replace the server certificate")
    actions = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(
        actions,
        "show",
        cmd_server_cert_show,
        "print the CA clients must trust, the server certificate's SANs and expiry",
    )
    sp = add(
        actions,
        "install",
        cmd_server_cert_install,
        "install your own server certificate (picked up without restart)",
    )
    sp.add_argument("cert", help="PEM certificate (optionally followed by its chain)")
    sp.add_argument("key", help="PEM private key, unencrypted")
    sp.add_argument("--chain", help="PEM file with the intermediate CA certificates")
