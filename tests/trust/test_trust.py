"""Trust set-up and permissions on a live server (issue #9; DESIGN §4).

vCenter's three ways (its own self-signed certificate, its own CA, a CSR the key server
signs), the array's CSR way, CA + subject rules for trusted hosts and storage nodes,
refusals an operator can act on, the operator's own server certificate, expiry and
roles.  Where the TLS engine matters the test runs on rustls and on OpenSSL.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmipfast import pki
from kmipfast.protocol.enums import Operation, ResultReason
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import value
from tests.server import kmipclient
from tests.server.harness import (
    POLL_INTERVAL,
    ClientBundle,
    KmipServer,
    cli_command,
    connect_when_admitted,
    self_signed_client,
)
from tests.server.kmipclient import ConnectionClosed, create_aes_payload, uid_payload
from tests.trust import certs

pytestmark = pytest.mark.server

DEADLINE = 5.0  # allow-list and certificate changes reach the server within ~1 s


# -- helpers ------------------------------------------------------------------------------
def cli_fails(server: KmipServer, *args: str) -> str:
    """Runs a command that must fail: non-zero exit, one plain line on stderr."""
    done = server.run_cli(*args, check=False)
    assert done.returncode != 0, f"`{' '.join(args)}` succeeded:\n{done.stdout}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{done.stderr}"
    assert lines[0].startswith("kmipfast: error: "), lines[0]
    return lines[0]


def refusal(server: KmipServer, bundle: ClientBundle) -> str | None:
    """Why ``bundle`` was refused, or None if it was served."""
    try:
        conn = server.connect(bundle, timeout=5.0)
    except (OSError, ConnectionClosed) as exc:
        return f"handshake: {exc!r}"
    with conn:
        try:
            result = conn.call(Operation.DiscoverVersions)
        except (OSError, ConnectionClosed) as exc:
            return f"closed: {exc!r}"
    return None if result.success else f"answered {result.describe()}"


def audit_lines(server: KmipServer) -> list[dict[str, Any]]:
    out = []
    path = server.data_dir / "audit.log"
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue  # a line being written
    return out


def wait_for_refusal(
    server: KmipServer, fingerprint: str | None, *, reason: str | None = None, after: int = 0
) -> dict[str, Any]:
    """The last refusal audit line (from line ``after`` on) of ``fingerprint`` (None: of a
    certificate OpenSSL refused unseen) with ``reason``; audit lines are flushed ~0.1 s."""
    end = time.monotonic() + DEADLINE
    while True:
        found = [
            e
            for e in audit_lines(server)[after:]
            if e.get("kind") == "refused"
            and e.get("fingerprint") == fingerprint
            and (reason is None or e.get("reason") == reason)
        ]
        if found:
            return found[-1]
        assert time.monotonic() < end, f"no refusal of {fingerprint} ({reason}) in the audit log"
        time.sleep(POLL_INTERVAL)


def engine_of(server: KmipServer) -> str:
    return "openssl" if server.data_dir.parent.name.startswith("trust-openssl") else "rustls"


def fingerprint_of(path: str | Path) -> str:
    return pki.fingerprint(pki.load_cert(path))


def refused_until(server: KmipServer, bundle: ClientBundle) -> str:
    """Refused now and still after the allow-list had time to change."""
    why = refusal(server, bundle)
    assert why is not None, f"{bundle.name} was served"
    return why


# -- server certificate -------------------------------------------------------------------
def test_init_san_and_server_cert_show(tmp_path: Path) -> None:
    """`init --san` sets the server certificate's names; `server cert show` prints the CA
    a client must trust, the SANs and the expiry; a second `init --san` re-issues it."""
    server = KmipServer(tmp_path / "data")
    server.run_cli("init", "--san", "DNS:kms.example.com", "--san", "IP:10.0.0.5")
    shown = server.run_cli("server", "cert", "show").stdout
    assert "DNS:kms.example.com, IP:10.0.0.5" in shown
    assert "expires:" in shown and "days)" in shown
    pem = shown[shown.index("-----BEGIN") : shown.index("-----END CERTIFICATE-----") + 25]
    assert x509.load_pem_x509_certificate(pem.encode()) == pki.load_cert(server.ca_cert)
    chain = pki.load_certs(server.data_dir / "tls" / "server.crt")
    assert pki.sans_of(chain[0]) == ["DNS:kms.example.com", "IP:10.0.0.5"]

    server.run_cli("init", "--san", "DNS:kms2.example.com")
    assert "SANs:     DNS:kms2.example.com\n" in server.run_cli("server", "cert", "show").stdout
    cli_fails(server, "init", "--san", "DNS:bad name")


def test_server_cert_install_is_picked_up_without_restart(
    engine_server: KmipServer, tmp_path: Path
) -> None:
    """`server cert install CERT KEY --chain` replaces the server certificate; clients
    that trust the operator's CA verify the running server at once, on both engines.
    Bad input (key of another certificate, expired certificate, broken chain) is one
    error line and leaves the installed certificate alone."""
    server = engine_server
    tls = server.data_dir / "tls"
    before = (tls / "server.crt").read_bytes()
    (tmp_path / "orig.crt").write_bytes(before)
    (tmp_path / "orig.key").write_bytes((tls / "server.key").read_bytes())
    root = certs.make_ca(tmp_path, "Operator Root")
    inter = certs.make_ca(tmp_path, "Operator Issuing")
    inter.cert = (  # the issuing CA, signed by the root
        x509.CertificateBuilder()
        .subject_name(inter.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(inter.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(inter.cert.not_valid_before_utc)
        .not_valid_after(inter.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    certs.write_cert(inter.path, inter.cert)
    crt, key, _ = certs.make_leaf(inter, tmp_path / "srv", "localhost", server=True, days=400)
    other_crt, other_key, _ = certs.make_leaf(inter, tmp_path / "other", "other", server=True)
    old_crt, old_key, _ = certs.make_leaf(
        inter, tmp_path / "old", "old", server=True, days=1, start_days=-10
    )

    assert "does not match" in cli_fails(
        server, "server", "cert", "install", str(crt), str(other_key), "--chain", str(inter.path)
    )
    assert "expired" in cli_fails(
        server, "server", "cert", "install", str(old_crt), str(old_key), "--chain", str(inter.path)
    )
    assert "chain broken" in cli_fails(
        server, "server", "cert", "install", str(crt), str(key), "--chain", str(root.path)
    )
    assert (tls / "server.crt").read_bytes() == before, "a refused install changed the cert"
    del other_crt

    chain = tmp_path / "chain.pem"
    certs.write_cert(chain, inter.cert, root.cert)
    server.run_cli("server", "cert", "install", str(crt), str(key), "--chain", str(chain))
    bundle = ClientBundle("tests", server.client_cert, server.client_key, str(root.path))
    end = time.monotonic() + DEADLINE
    while True:
        try:
            with server.connect(bundle, timeout=5.0) as conn:
                conn.ok(Operation.DiscoverVersions)
            break
        except (OSError, ConnectionClosed) as exc:
            assert time.monotonic() < end, f"new certificate not served: {exc!r}"
            time.sleep(POLL_INTERVAL)
    shown = server.run_cli("server", "cert", "show").stdout
    assert "DNS:localhost, IP:127.0.0.1" in shown
    assert pki.cert_pem(root.cert).decode() in shown
    # Clients that trust only the kmipfast CA no longer verify this server.
    with pytest.raises(ssl.SSLCertVerificationError):
        server.connect(timeout=5.0).close()

    # Back to the kmipfast certificate (its chain ends in the kmipfast CA).
    server.run_cli("server", "cert", "install", str(tmp_path / "orig.crt"),
                   str(tmp_path / "orig.key"))  # fmt: skip
    end = time.monotonic() + DEADLINE
    while True:
        try:
            with server.connect(timeout=5.0) as conn:
                conn.ok(Operation.DiscoverVersions)
            break
        except (OSError, ConnectionClosed) as exc:
            assert time.monotonic() < end, f"original certificate not served: {exc!r}"
            time.sleep(POLL_INTERVAL)


# -- sign-csr ----------------------------------------------------------------------------
def test_sign_csr_writes_chain_sets_client_auth_and_refuses_weak_keys(
    server: KmipServer, tmp_path: Path
) -> None:
    """The array's (and vCenter's) CSR way: the signed leaf holds clientAuth, the chain
    file holds the CA it must trust, and the client can connect.  A 1024-bit RSA CSR or
    a P-192 one is refused with one line and nothing is written or allowed."""
    weak = certs.make_csr(tmp_path, "array-weak", certs.rsa_key(1024))
    out = tmp_path / "array-weak.crt"
    line = cli_fails(server, "client", "sign-csr", str(weak), "--tenant", "default",
                     "--out", str(out))  # fmt: skip
    assert "1024 bits is too weak" in line
    p192 = certs.make_csr(tmp_path, "array-p192", ec.generate_private_key(ec.SECP192R1()))
    assert "not allowed" in cli_fails(
        server, "client", "sign-csr", str(p192), "--tenant", "default", "--out", str(out)
    )
    assert not out.exists() and not (tmp_path / "ca.crt").exists()
    assert "array-weak" not in server.run_cli("client", "list").stdout
    # A tenant that does not exist: refused before anything is written.
    key = ec.generate_private_key(ec.SECP256R1())
    good = certs.make_csr(tmp_path, "array-01", key)
    cli_fails(server, "client", "sign-csr", str(good), "--tenant", "nope", "--out", str(out))
    assert not out.exists()

    out = tmp_path / "array-01.crt"
    server.run_cli("client", "sign-csr", str(good), "--tenant", "default", "--out", str(out),
                   "--role", "array")  # fmt: skip
    leaf = pki.load_cert(out)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.load_certs(tmp_path / "ca.crt") == [pki.load_cert(server.ca_cert)]
    key_path = tmp_path / "array-01.key"
    certs.write_key(key_path, key)
    bundle = ClientBundle("array-01", str(out), str(key_path), str(tmp_path / "ca.crt"))
    with connect_when_admitted(server, bundle) as conn:
        conn.ok(Operation.DiscoverVersions)
    listed = [ln for ln in server.run_cli("client", "list").stdout.splitlines()
              if ln.startswith("array-01\t")]  # fmt: skip
    assert listed and "role=array" in listed[0] and "expires=20" in listed[0]


# -- CA + subject rules ------------------------------------------------------------------
def test_allow_ca_admits_matching_cn_and_refuses_the_rest(
    engine_server: KmipServer, tmp_path: Path
) -> None:
    """`client allow-ca CA --subject-match 'esx-*'`: every certificate of that CA whose CN
    matches is a client of the tenant (no per-host allow); another CN of the same CA is
    refused as "subject mismatch", a look-alike CA as "wrong CA" — on both engines."""
    server = engine_server
    tenant = f"hosts-{engine_of(server)}"
    server.run_cli("tenant", "create", tenant)
    vmca = certs.make_ca(tmp_path, "VMCA")
    esx1 = certs.leaf_bundle(vmca, tmp_path / "a", "esx-01", server.ca_cert)
    esx2 = certs.leaf_bundle(vmca, tmp_path / "b", "esx-02", server.ca_cert)
    stranger = certs.leaf_bundle(vmca, tmp_path / "c", "backup-01", server.ca_cert)
    impostor_ca = certs.make_ca(tmp_path / "impostor", "VMCA")  # same name, other key
    impostor = certs.leaf_bundle(impostor_ca, tmp_path / "d", "esx-03", server.ca_cert)

    assert refusal(server, esx1) is not None, "allowed before allow-ca"
    server.run_cli("client", "allow-ca", str(vmca.path), "--tenant", tenant,
                   "--subject-match", "esx-*", "--name", "vmca-hosts")  # fmt: skip
    with connect_when_admitted(server, esx1, DEADLINE) as conn:
        uid = value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
    with server.connect(esx2) as conn:  # another host of the rule: same tenant
        conn.ok(Operation.Get, uid_payload(uid))
    with server.connect() as conn:  # the client of tenant default does not see it
        conn.call(Operation.Get, uid_payload(uid)).expect_failure(ResultReason.ItemNotFound)

    refused_until(server, stranger)
    line = wait_for_refusal(server, fingerprint_of(stranger.cert))
    assert line["reason"] == "subject mismatch", line
    assert line["subject"] == "CN=backup-01"
    start = len(audit_lines(server))
    refused_until(server, impostor)
    # OpenSSL refuses a bad issuer signature inside the handshake, unseen: no fingerprint.
    seen = fingerprint_of(impostor.cert) if engine_of(server) == "rustls" else None
    line = wait_for_refusal(server, seen, reason="wrong CA", after=start)
    assert line["reason"] == "wrong CA", line

    listed = server.run_cli("client", "list").stdout
    assert "vmca-hosts\ttenant=" + tenant in listed and "CN matches 'esx-*'" in listed
    with server.connect(esx2) as narrowed, server.connect(esx1) as kept:
        narrowed.ok(Operation.DiscoverVersions)
        # The rule narrowed to one host: the other host's open session ends.
        server.run_cli("client", "allow-ca", str(vmca.path), "--tenant", tenant,
                       "--subject-match", "esx-01", "--name", "vmca-hosts")  # fmt: skip
        assert narrowed.wait_closed(DEADLINE), "session outside the narrowed rule still open"
        kept.ok(Operation.DiscoverVersions)
    with server.connect(esx1) as open_session:
        open_session.ok(Operation.DiscoverVersions)
        server.run_cli("client", "remove", "vmca-hosts")
        # Removing the rule also ends the sessions it admitted.
        assert open_session.wait_closed(DEADLINE), "session of a removed CA rule still open"
    end = time.monotonic() + DEADLINE
    while refusal(server, esx1) is None:
        assert time.monotonic() < end, "CA rule still admits after remove"
        time.sleep(POLL_INTERVAL)


def test_expired_and_not_yet_valid_certificates_are_refused_with_that_reason(
    engine_server: KmipServer, tmp_path: Path
) -> None:
    """Certificates of an allowed CA outside their validity are refused as "expired" and
    "not yet valid" (named by fingerprint where the engine saw the certificate)."""
    server = engine_server
    ca = certs.make_ca(tmp_path, "Storage CA")
    server.run_cli("client", "allow-ca", str(ca.path), "--tenant", "default", "--name",
                   "storage-nodes", "--role", "array")  # fmt: skip
    good = certs.leaf_bundle(ca, tmp_path / "ok", "node-ok", server.ca_cert)
    with connect_when_admitted(server, good, DEADLINE) as conn:  # the rule is in force
        conn.call(Operation.Query).expect_success()
    for cn, days, start_days, reason in (
        ("node-old", 2, -10, "expired"),
        ("node-new", 2, 5, "not yet valid"),
    ):
        crt, key, _ = certs.make_leaf(ca, tmp_path / cn, cn, days=days, start_days=start_days)
        bundle = ClientBundle(cn, str(crt), str(key), server.ca_cert)
        start = len(audit_lines(server))
        refused_until(server, bundle)
        seen = fingerprint_of(crt) if engine_of(server) == "rustls" else None
        line = wait_for_refusal(server, seen, reason=reason, after=start)
        assert line["reason"] == reason
    server.run_cli("client", "remove", "storage-nodes")


def test_allow_ca_bad_input(server: KmipServer, tmp_path: Path) -> None:
    leaf, _key, _ = certs.make_leaf(certs.make_ca(tmp_path, "Some CA"), tmp_path, "leaf")
    assert "not a CA certificate" in cli_fails(
        server, "client", "allow-ca", str(leaf), "--tenant", "default"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "no PEM certificate" in cli_fails(
        server, "client", "allow-ca", str(garbage), "--tenant", "default"
    )
    ca = certs.make_ca(tmp_path, "Other CA")
    assert "no tenant" in cli_fails(server, "client", "allow-ca", str(ca.path), "--tenant", "nope")
    assert "Other CA" not in server.run_cli("client", "list").stdout


# -- refusals ----------------------------------------------------------------------------
def test_refused_lists_newest_first_with_working_allow_commands(
    engine_server: KmipServer, tmp_path: Path
) -> None:
    """A refused self-signed certificate (vCenter's first way, before it is allowed) is
    logged with reason, fingerprint and subject; `client refused --since 1h` lists it
    newest first with a `client allow` command that, run as printed, admits it."""
    server = engine_server
    first = self_signed_client(tmp_path / "one", "vcenter-one")
    second = self_signed_client(tmp_path / "two", "vcenter-two")
    rustls = engine_of(server) == "rustls"
    for bundle in (first, second):
        bundle = ClientBundle(bundle.name, bundle.cert, bundle.key, server.ca_cert)
        start = len(audit_lines(server))
        refused_until(server, bundle)
        seen = fingerprint_of(bundle.cert) if rustls else None
        line = wait_for_refusal(server, seen, reason="unknown", after=start)
        if rustls:
            assert line["subject"] == f"CN={bundle.name}"
            assert Path(line["certificate"]).is_file()
    listing = server.run_cli("client", "refused", "--since", "1h").stdout
    fp1, fp2 = fingerprint_of(first.cert), fingerprint_of(second.cert)
    if engine_of(server) == "openssl":
        # OpenSSL refuses unknown self-signed certificates inside the handshake, before
        # anyone can see them: listed with the reason, without a command.
        assert "unknown" in listing
        return
    assert listing.index(fp2) < listing.index(fp1), "not newest first"
    commands = [ln.split("allow it: ", 1)[1] for ln in listing.splitlines() if "allow it: " in ln]
    command = next(c for c in commands if "vcenter-two" in c)
    argv = shlex.split(command)
    assert argv[0] == "kmipfast" and argv[3:5] == ["client", "allow"], argv
    assert argv[1:3] == ["--data-dir", str(server.data_dir)]
    done = subprocess.run(  # exactly as printed, `kmipfast` being this checkout's
        [*cli_command(), *argv[1:]], capture_output=True, text=True, timeout=60, check=True
    )
    assert "tenant: default" in done.stdout
    with connect_when_admitted(
        server, ClientBundle("vcenter-two", second.cert, second.key, server.ca_cert), DEADLINE
    ) as conn:
        conn.ok(Operation.DiscoverVersions)
    again = server.run_cli("client", "refused", "--since", "1h").stdout
    assert "allowed since then" in again
    assert not [ln for ln in again.splitlines() if "allow it:" in ln and "vcenter-two" in ln]
    # A removed client is refused as "removed".
    server.run_cli("client", "remove", "vcenter-two")
    bundle = ClientBundle("vcenter-two", second.cert, second.key, server.ca_cert)
    end = time.monotonic() + DEADLINE
    while True:
        if refusal(server, bundle) is not None:
            lines = [e for e in audit_lines(server) if e.get("fingerprint") == fp2
                     and e.get("kind") == "refused" and e.get("reason") == "removed"]  # fmt: skip
            if lines:
                break
        assert time.monotonic() < end, "removed client not refused as removed"
        time.sleep(POLL_INTERVAL)


def test_refused_bad_since(server: KmipServer) -> None:
    assert "bad duration" in cli_fails(server, "client", "refused", "--since", "soon")


# -- expiry ------------------------------------------------------------------------------
def test_expiring_clients_are_warned_at_start_and_renew_reissues(
    server: KmipServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client whose certificate ends within 30 days is named in the log at start, and
    the server certificate when it ends within `clients.expiry_warning_days`; `client
    renew` re-issues a certificate kmipfast issued (same key, new validity) and refuses
    one it did not issue."""
    short = self_signed_client(tmp_path, "short-lived")  # 30 days
    server.run_cli("client", "allow", short.cert, "--tenant", "default", "--name", "short-lived")
    listed = server.run_cli("client", "list").stdout
    assert "short-lived\t" in listed and "EXPIRES SOON" in listed
    monkeypatch.setenv("KMIPFAST_SERVER_TLS_ENGINE", "auto")  # as the fixture started it
    monkeypatch.setenv("KMIPFAST_CLIENTS_EXPIRY_WARNING_DAYS", "800")  # > the 2-year server cert
    server.restart()
    end = time.monotonic() + DEADLINE
    # The server certificate's warning is logged just after the clients' ones: wait for
    # both (reading between the two lines failed once on a loaded machine).
    wanted = ("client short-lived (tenant default): certificate expires", "install a new one")
    while not all(w in server.stderr() for w in wanted):
        assert time.monotonic() < end, f"no expiry warning:\n{server.stderr()}"
        time.sleep(POLL_INTERVAL)
    assert "server certificate" in server.stderr() and "install a new one" in server.stderr()
    assert "renew" in cli_fails(server, "client", "renew", "short-lived", "--out",
                                str(tmp_path / "x.crt"))  # fmt: skip
    assert not (tmp_path / "x.crt").exists()

    bundle = server.issue_client("renewed")
    old_fp = fingerprint_of(bundle.cert)
    new = tmp_path / "renewed.crt"
    server.run_cli("client", "renew", "renewed", "--out", str(new))
    assert pki.load_cert(new).public_key() == pki.load_cert(bundle.cert).public_key()
    assert fingerprint_of(new) != old_fp
    with connect_when_admitted(
        server, ClientBundle("renewed", str(new), bundle.key, bundle.ca), DEADLINE
    ) as conn:
        conn.ok(Operation.DiscoverVersions)
    assert "no client named" in cli_fails(server, "client", "renew", "ghost", "--out", str(new))


# -- roles -------------------------------------------------------------------------------
def test_roles_are_enforced_and_audited(server: KmipServer, tmp_path: Path) -> None:
    """readonly may read but not create; vcenter may create, add attributes and activate
    but not destroy; array may destroy.  A forbidden operation answers Permission Denied
    and is audited."""
    readonly = server.issue_client("ro-client")
    server.run_cli("client", "remove", "ro-client")
    server.run_cli("client", "allow", readonly.cert, "--tenant", "default", "--name",
                   "ro-client", "--role", "readonly")  # fmt: skip
    out = tmp_path / "vc-issued"
    server.run_cli("client", "issue", "vc-client", "--tenant", "default", "--out", str(out),
                   "--role", "vcenter")  # fmt: skip
    vcenter = ClientBundle("vc-client", str(out / "vc-client.crt"), str(out / "vc-client.key"),
                           str(out / "ca.crt"))  # fmt: skip
    with server.connect() as full:
        uid = value(full.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
    with connect_when_admitted(server, readonly, DEADLINE) as conn:
        conn.ok(Operation.Get, uid_payload(uid))
        conn.ok(Operation.Locate, [])
        conn.call(Operation.Create, create_aes_payload()).expect_failure(
            ResultReason.PermissionDenied
        )
        conn.call(Operation.Destroy, uid_payload(uid)).expect_failure(ResultReason.PermissionDenied)
    with connect_when_admitted(server, vcenter, DEADLINE) as conn:
        mine = value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        conn.ok(Operation.Activate, uid_payload(mine))
        conn.call(Operation.Destroy, uid_payload(uid)).expect_failure(ResultReason.PermissionDenied)
    end = time.monotonic() + DEADLINE
    while True:
        denied = [e for e in audit_lines(server) if e.get("kind") == "kmip"
                  and e.get("reason") == "PermissionDenied"]  # fmt: skip
        if {(e["client"], e["operation"]) for e in denied} >= {
            ("ro-client", "Create"),
            ("ro-client", "Destroy"),
            ("vc-client", "Destroy"),
        }:
            break
        assert time.monotonic() < end, f"denials not audited: {denied}"
        time.sleep(POLL_INTERVAL)
    with server.connect() as full:  # the key is untouched
        full.ok(Operation.Get, uid_payload(uid))
    arr_out = tmp_path / "array-issued"
    server.run_cli("client", "issue", "arr-client", "--tenant", "default", "--out",
                   str(arr_out), "--role", "array")  # fmt: skip
    array = ClientBundle("arr-client", str(arr_out / "arr-client.crt"),
                         str(arr_out / "arr-client.key"), str(arr_out / "ca.crt"))  # fmt: skip
    with connect_when_admitted(server, array, DEADLINE) as conn:  # arrays retire their keys
        own = value(conn.ok(Operation.Create, create_aes_payload()), Tag.UniqueIdentifier)
        conn.ok(Operation.Destroy, uid_payload(own))
    assert (
        "invalid choice"
        in server.run_cli(
            "client",
            "issue",
            "x",
            "--tenant",
            "default",
            "--out",
            str(out),
            "--role",
            "admin",
            check=False,
        ).stderr
    )


def test_admin_commands_are_audited_with_the_os_user(server: KmipServer, tmp_path: Path) -> None:
    import getpass

    bundle = self_signed_client(tmp_path, "audited")
    server.run_cli("client", "allow", bundle.cert, "--tenant", "default", "--name", "audited")
    server.run_cli("tenant", "create", "audited-tenant")
    end = time.monotonic() + DEADLINE
    while True:
        lines = [
            e
            for e in audit_lines(server)
            if e.get("kind") == "admin"
            and (e.get("client") == "audited" or e.get("tenant") == "audited-tenant")
            and e.get("action") != "master key unsealed"
        ]
        if len(lines) >= 2:
            break
        assert time.monotonic() < end, lines
        time.sleep(POLL_INTERVAL)
    assert {e.get("os_user") for e in lines} == {getpass.getuser()}, lines


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody"
)
def test_admin_commands_need_write_access_to_the_data_dir() -> None:
    """An OS user who can read the data dir but not write it gets one error line and
    changes nothing (here: `nobody`, with the data dir and config made readable)."""
    base = Path(tempfile.mkdtemp(prefix="kmipfast-readonly-"))  # pytest's tmp is root-only
    try:
        base.chmod(0o755)
        admin = KmipServer(base / "data")
        admin.run_cli("init", "--software-root")
        bundle = self_signed_client(base / "client", "outsider")
        for path in (base / "client", Path(bundle.cert), Path(bundle.key)):
            path.chmod(0o755 if path.is_dir() else 0o644)
        data = admin.data_dir
        data.chmod(0o755)
        (data / "kmipfast.toml").chmod(0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for args in (
            ["client", "allow", bundle.cert, "--tenant", "default"],
            ["tenant", "create", "outsiders"],
            ["server", "cert", "install", bundle.cert, bundle.key],
        ):
            done = subprocess.run(
                [*nobody, *cli_command(), "--data-dir", str(data), *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode != 0, done.stdout
            assert done.stderr.strip() == (
                f"kmipfast: error: administrative commands need write access to {data} "
                "(run them as the data dir's owner)"
            ), done.stderr
        assert "outsider" not in admin.run_cli("client", "list").stdout
        assert "outsiders" not in admin.run_cli("tenant", "list").stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _legacy_connect(server: KmipServer, bundle: ClientBundle) -> kmipclient.Conn:
    """What vCenter 7.0.3 negotiated: TLS 1.2, AES128-SHA256 (RSA key exchange), which the
    default engine (auto) hands to OpenSSL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA256")
    ctx.load_verify_locations(server.ca_cert)
    ctx.load_cert_chain(bundle.cert, bundle.key)
    raw = socket.create_connection((server.host, server.port), timeout=5.0)
    try:
        return kmipclient.Conn(ctx.wrap_socket(raw, server_hostname="localhost"))
    except BaseException:
        raw.close()
        raise


def test_refused_legacy_client_is_named_and_can_be_allowed(
    server: KmipServer, tmp_path: Path
) -> None:
    """OpenSSL refuses an unknown certificate inside the handshake; for TLS 1.2 (vCenter's
    way) the server still names it — fingerprint, subject, kept PEM — and the command
    `client refused` prints admits it."""
    me = self_signed_client(tmp_path, "vcenter-legacy")
    start = len(audit_lines(server))
    with pytest.raises((OSError, ConnectionClosed)), _legacy_connect(server, me) as conn:
        conn.ok(Operation.DiscoverVersions)
    line = wait_for_refusal(server, fingerprint_of(me.cert), reason="unknown", after=start)
    assert line["subject"] == "CN=vcenter-legacy"
    assert pki.load_cert(line["certificate"]) == pki.load_cert(me.cert)
    listing = server.run_cli("client", "refused", "--since", "1h").stdout
    [command] = [
        ln.split("allow it: ", 1)[1]
        for ln in listing.splitlines()
        if "allow it: " in ln and "vcenter-legacy" in ln
    ]
    subprocess.run(
        [*cli_command(), *shlex.split(command)[1:]], check=True, capture_output=True, timeout=60
    )
    end = time.monotonic() + DEADLINE
    while True:
        try:
            with _legacy_connect(server, me) as conn:
                conn.ok(Operation.DiscoverVersions)
            break
        except (OSError, ConnectionClosed) as exc:
            assert time.monotonic() < end, f"not admitted after allow: {exc!r}"
            time.sleep(POLL_INTERVAL)
