"""kmipfast.pki: the CA, server/client certificates, CSR signing (DESIGN §4), PEM files."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmipfast import pki
from kmipfast.pki import PkiError

CaPair = tuple[x509.Certificate, pki.SigningKey]


@pytest.fixture(scope="module")
def ca() -> CaPair:
    return pki.create_ca("kmipfast test CA")


@pytest.fixture(scope="module")
def other_ca() -> CaPair:
    return pki.create_ca("some other CA")


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _csr(key: pki.SigningKey, cn: str | None = "array-01", sans: list[str] | None = None) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Storage Inc")]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([pki.parse_san(s) for s in sans]), critical=False
        )
    # A CSR asking to be a CA: sign_csr must not honour it.
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --- the CA ---------------------------------------------------------------------------


def test_create_ca_is_p256_ca_pathlen0_keycertsign_ten_years(ca: CaPair) -> None:
    cert, key = ca
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3653)
    info = pki.describe(cert)
    assert info.is_self_signed and info.subject == info.issuer == "CN=kmipfast test CA"


# --- server certificates and a real mTLS handshake -----------------------------------------


def _write_pair(directory: Path, name: str, cert: x509.Certificate, key: pki.SigningKey) -> None:
    pki.write_certs(directory / f"{name}.crt", cert)
    pki.write_private_key(directory / f"{name}.key", key)


def _handshake(
    tmp_path: Path,
    ca: CaPair,
    client_issuer: CaPair,
    server_hostname: str,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake between two in-memory SSLObjects; the server requires a client cert."""
    server_cert, server_key = pki.issue_server_cert(*ca, ["DNS:kms.example.com", "IP:127.0.0.1"])
    client_cert, client_key = pki.issue_client_cert(*client_issuer, "vcenter-01")
    _write_pair(tmp_path, "server", server_cert, server_key)
    _write_pair(tmp_path, "client", client_cert, client_key)
    ca_pem = pki.cert_pem(ca[0]).decode()

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=ca_pem)

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on by default
    client_ctx.load_verify_locations(cadata=ca_pem)
    client_ctx.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):  # a TLS 1.3 handshake needs ~3 flights; 20 bounds a stuck loop
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server learns of a refused client certificate on the first read.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return client, server
    raise AssertionError("handshake did not finish")


def test_server_cert_verifies_against_ca_in_mtls_handshake_by_dns_name(
    tmp_path: Path, ca: CaPair
) -> None:
    client, server = _handshake(tmp_path, ca, ca, "kms.example.com")
    peer_der = server.getpeercert(binary_form=True)
    assert peer_der is not None
    client_cert = pki.load_cert(tmp_path / "client.crt")
    assert hashlib.sha256(peer_der).hexdigest() == pki.fingerprint(client_cert)
    server_der = client.getpeercert(binary_form=True)
    assert server_der is not None
    assert x509.load_der_x509_certificate(server_der) == pki.load_cert(tmp_path / "server.crt")


def test_server_cert_verifies_in_mtls_handshake_by_ip_san(tmp_path: Path, ca: CaPair) -> None:
    _handshake(tmp_path, ca, ca, "127.0.0.1")


def test_server_cert_refused_for_a_name_not_in_its_sans(tmp_path: Path, ca: CaPair) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, ca, ca, "other.example.com")


def test_mtls_handshake_refuses_client_cert_from_another_ca(
    tmp_path: Path, ca: CaPair, other_ca: CaPair
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(tmp_path, ca, other_ca, "kms.example.com")


def test_server_cert_is_p256_serverauth_two_years_with_aki_ski(ca: CaPair) -> None:
    cert, key = pki.issue_server_cert(*ca, ["kms.example.com", "10.0.0.5", "DNS:kms", "IP:::1"])
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kms.example.com", "kms"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.rfc4514_string() == "CN=kms.example.com"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=729) <= lifetime <= datetime.timedelta(days=731)
    cert.verify_directly_issued_by(ca[0])


def test_server_cert_rsa_option_has_key_encipherment_for_rsa_key_exchange(ca: CaPair) -> None:
    cert, key = pki.issue_server_cert(*ca, ["kms"], key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("DNS:kms.example.com", x509.DNSName("kms.example.com")),
        ("KMS.Example.COM", x509.DNSName("kms.example.com")),
        ("*.example.com", x509.DNSName("*.example.com")),
        ("IP:192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
        ("192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
        ("[fe80::1]", x509.IPAddress(ipaddress.ip_address("fe80::1"))),
        ("::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("DNS:192.0.2.1", x509.DNSName("192.0.2.1")),  # explicit DNS: wins
    ],
)
def test_parse_san_accepts_prefixed_and_bare_names_and_addresses(
    entry: str, expected: x509.GeneralName
) -> None:
    assert pki.parse_san(entry) == expected


@pytest.mark.parametrize(
    "entry", ["IP:kms.example.com", "", "DNS:", "bad name", "ünï.example", "*"]
)
def test_parse_san_rejects_invalid_entries(entry: str) -> None:
    with pytest.raises(PkiError, match="SAN"):
        pki.parse_san(entry)


def test_issue_server_cert_without_sans_is_refused(ca: CaPair) -> None:
    with pytest.raises(PkiError, match="at least one SAN"):
        pki.issue_server_cert(*ca, [])


def test_issuing_with_a_key_that_is_not_the_cas_is_refused(ca: CaPair, other_ca: CaPair) -> None:
    with pytest.raises(PkiError, match="does not match"):
        pki.issue_server_cert(ca[0], other_ca[1], ["kms"])


def test_issuing_from_a_leaf_certificate_is_refused(ca: CaPair) -> None:
    leaf, leaf_key = pki.issue_client_cert(*ca, "not-a-ca")
    with pytest.raises(PkiError, match="not a CA"):
        pki.issue_client_cert(leaf, leaf_key, "x")


def test_default_sans_cover_localhost_loopbacks_and_hostname() -> None:
    sans = pki.default_sans()
    assert sans[:3] == ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    assert f"DNS:{socket.gethostname().lower()}" in sans
    assert len(sans) == len(set(sans))
    for entry in sans:
        pki.parse_san(entry)


def test_leaf_never_outlives_its_ca(ca: CaPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short-lived CA")])
    now = datetime.datetime.now(datetime.UTC)
    short_ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, _ = pki.issue_client_cert(short_ca, key, "c")
    assert cert.not_valid_after_utc == short_ca.not_valid_after_utc


# --- client certificates and CSRs ------------------------------------------------------------


def test_client_cert_is_p256_clientauth_with_cn(ca: CaPair) -> None:
    cert, key = pki.issue_client_cert(*ca, "vcenter-01")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.rfc4514_string() == "CN=vcenter-01"
    cert.verify_directly_issued_by(ca[0])


def test_client_cert_rsa_2048_option(ca: CaPair) -> None:
    cert, key = pki.issue_client_cert(*ca, "array-02", key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 65])
def test_client_cert_with_bad_name_is_refused(ca: CaPair, name: str) -> None:
    with pytest.raises(PkiError):
        pki.issue_client_cert(*ca, name)


def test_sign_csr_rsa_1024_is_refused_as_too_weak(ca: CaPair) -> None:
    csr = _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(PkiError, match="RSA key of 1024 bits is too weak") as err:
        pki.sign_csr(*ca, csr)
    assert "\n" not in str(err.value)


def test_sign_csr_dsa_is_refused(ca: CaPair) -> None:
    csr = _csr(dsa.generate_private_key(key_size=2048))
    with pytest.raises(PkiError, match="DSA keys are not accepted"):
        pki.sign_csr(*ca, csr)


def test_sign_csr_secp256k1_is_refused(ca: CaPair) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(PkiError, match="curve secp256k1 is not allowed"):
        pki.sign_csr(*ca, csr)


def test_sign_csr_with_bad_signature_is_refused(ca: CaPair) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(_csr(rsa.generate_private_key(65537, 2048))).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01  # last byte of the RSA signature
    with pytest.raises(PkiError, match="signature does not verify"):
        pki.sign_csr(*ca, bytes(der))


def test_sign_csr_garbage_is_refused(ca: CaPair) -> None:
    with pytest.raises(PkiError, match="not a valid certificate signing request"):
        pki.sign_csr(*ca, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END")


def test_sign_csr_p256_is_accepted_with_clientauth_and_csr_subject(ca: CaPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.sign_csr(*ca, _csr(key, sans=["DNS:array-01.example.com"]), name="ignored")
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key() == key.public_key()
    # The CSR's CN is kept; `name` only fills in a missing one.
    assert cert.subject.rfc4514_string() == "CN=array-01,O=Storage Inc"
    cert.verify_directly_issued_by(ca[0])
    # The CSR's request to be a CA is not honoured; its SAN is carried over.
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["array-01.example.com"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=729) <= lifetime <= datetime.timedelta(days=731)


def test_sign_csr_rsa_2048_der_is_accepted(ca: CaPair) -> None:
    key = rsa.generate_private_key(65537, 2048)
    der = x509.load_pem_x509_csr(_csr(key)).public_bytes(serialization.Encoding.DER)
    assert pki.sign_csr(*ca, der).public_key() == key.public_key()


def test_sign_csr_without_cn_takes_the_given_name(ca: CaPair) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP384R1()), cn=None)
    cert = pki.sign_csr(*ca, csr, name="array-03")
    assert cert.subject.rfc4514_string() == "CN=array-03,O=Storage Inc"


def test_sign_csr_without_cn_and_without_name_is_refused(ca: CaPair) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), cn=None)
    with pytest.raises(PkiError, match="no common name"):
        pki.sign_csr(*ca, csr)


# --- fingerprints, description, files ------------------------------------------------------


def test_fingerprint_is_lowercase_hex_sha256_of_der(ca: CaPair) -> None:
    der = ca[0].public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint(ca[0]) == hashlib.sha256(der).hexdigest()


def test_describe_leaf_names_issuer_validity_serial_not_self_signed(ca: CaPair) -> None:
    cert, _ = pki.issue_client_cert(*ca, "vcenter-01")
    info = pki.describe(cert)
    assert info.fingerprint == pki.fingerprint(cert)
    assert (info.subject, info.issuer) == ("CN=vcenter-01", "CN=kmipfast test CA")
    assert info.serial == cert.serial_number
    assert info.not_before < datetime.datetime.now(datetime.UTC) < info.not_after
    assert not info.is_self_signed


def test_write_private_key_is_0600_atomic_and_round_trips(tmp_path: Path, ca: CaPair) -> None:
    path = tmp_path / "tls" / "ca.key"
    path.parent.mkdir()
    path.write_bytes(b"old")
    path.chmod(0o644)
    pki.write_private_key(path, ca[1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["ca.key"]  # no temp file left
    assert pki.load_key(path).public_key() == ca[1].public_key()


def test_load_certs_reads_a_chain_leaf_first(tmp_path: Path, ca: CaPair) -> None:
    leaf, _ = pki.issue_server_cert(*ca, ["kms"])
    pki.write_certs(tmp_path / "chain.pem", [leaf, ca[0]])
    assert pki.load_certs(tmp_path / "chain.pem") == [leaf, ca[0]]
    assert pki.load_cert(tmp_path / "chain.pem") == leaf


def test_load_cert_missing_or_not_pem_gives_pki_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="does not exist"):
        pki.load_cert(tmp_path / "nope.crt")
    (tmp_path / "junk.crt").write_text("hello")
    with pytest.raises(PkiError, match="no PEM certificate"):
        pki.load_cert(tmp_path / "junk.crt")


def test_load_key_errors_never_echo_file_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("-----BEGIN PRIVATE KEY-----\nU2VjcmV0U2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PkiError) as err:
        pki.load_key(path)
    assert "U2VjcmV0" not in str(err.value)


def test_load_key_encrypted_is_refused_with_reason(tmp_path: Path, ca: CaPair) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(
        ca[1].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(PkiError, match="is encrypted"):
        pki.load_key(path)
