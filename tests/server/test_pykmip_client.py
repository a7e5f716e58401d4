"""PyKMIP 0.11's ``ProxyKmipClient`` end to end against a live server (KMIP 1.2 on the wire).

PyKMIP builds its TLS context as ``ssl.SSLContext(ssl_version)`` and calls
``wrap_socket`` without a server name, so ``PROTOCOL_TLS_CLIENT`` (which insists on
hostname checking) fails on Python 3.11 with "check_hostname requires
server_hostname". ``PROTOCOL_TLS`` (deprecated alias, TLS 1.2+ here) works: the server
certificate is still verified against ``ca.crt`` (``cert_reqs`` defaults to
``CERT_REQUIRED``), only the host name is not checked.

Key material is compared through SHA-256 digests so a failing assertion never prints it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kmip.core import enums
from kmip.core.factories.attributes import AttributeFactory
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from tests.server.harness import KmipServer

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
]

SSL_VERSION = "PROTOCOL_TLS"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def client(kmip_server: KmipServer) -> Iterator[ProxyKmipClient]:
    c = ProxyKmipClient(
        hostname="127.0.0.1",
        port=kmip_server.port,
        cert=kmip_server.client_cert,
        key=kmip_server.client_key,
        ca=kmip_server.ca_cert,
        ssl_version=SSL_VERSION,
        config_file=None,
    )
    c.open()
    try:
        yield c
    finally:
        c.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def _certificate_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _unique("pykmip-cert"))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _attributes(client: ProxyKmipClient, uid: str, names: list[str]) -> dict[str, object]:
    got_uid, attrs = client.get_attributes(uid, names)
    assert got_uid == uid
    return {a.attribute_name.value: a.attribute_value for a in attrs}


def test_pykmip_create_aes_256_get_and_attributes(client: ProxyKmipClient) -> None:
    """Create (KMIP 1.2 §4.1) an AES-256 key; Get returns 32 bytes; attributes agree."""
    name = _unique("pykmip-create")
    uid = client.create(enums.CryptographicAlgorithm.AES, 256, name=name)
    assert isinstance(uid, str) and uid
    key = client.get(uid)
    assert isinstance(key, objects.SymmetricKey)
    assert key.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
    assert key.cryptographic_length == 256
    assert len(key.value) == 32
    attrs = _attributes(
        client, uid, ["State", "Cryptographic Algorithm", "Cryptographic Length", "Name"]
    )
    assert attrs["State"].value == enums.State.PRE_ACTIVE
    assert attrs["Cryptographic Algorithm"].value == enums.CryptographicAlgorithm.AES
    assert attrs["Cryptographic Length"].value == 256
    assert attrs["Name"].name_value.value == name


@pytest.mark.parametrize(
    "kind",
    ["symmetric key", "secret data", "opaque object", "certificate"],
)
def test_pykmip_register_and_get_returns_registered_material(
    client: ProxyKmipClient, kind: str
) -> None:
    """Register (KMIP 1.2 §4.3) each object type kmipfast stores; Get returns it unchanged."""
    name = _unique(f"pykmip-{kind.replace(' ', '-')}")
    if kind == "symmetric key":
        material = os.urandom(32)
        obj: objects.ManagedObject = objects.SymmetricKey(
            enums.CryptographicAlgorithm.AES,
            256,
            material,
            masks=[enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT],
            name=name,
        )
        cls: type = objects.SymmetricKey
    elif kind == "secret data":
        material = os.urandom(48)
        obj = objects.SecretData(
            material,
            enums.SecretDataType.PASSWORD,
            masks=[enums.CryptographicUsageMask.DERIVE_KEY],
            name=name,
        )
        cls = objects.SecretData
    elif kind == "opaque object":
        material = os.urandom(100)
        obj = objects.OpaqueObject(material, enums.OpaqueDataType.NONE, name=name)
        cls = objects.OpaqueObject
    else:
        material = _certificate_der()
        obj = objects.X509Certificate(material, name=name)
        cls = objects.X509Certificate
    uid = client.register(obj)
    got = client.get(uid)
    assert isinstance(got, cls)
    assert digest(got.value) == digest(material), f"{kind}: Get returned other bytes"
    assert client.locate(attributes=[_name_attribute(name)]) == [uid]
    client.destroy(uid)
    with pytest.raises(KmipOperationFailure):
        client.get(uid)


def _name_attribute(name: str) -> object:
    return AttributeFactory().create_attribute(enums.AttributeType.NAME, name)


def test_pykmip_lifecycle_locate_activate_revoke_destroy(client: ProxyKmipClient) -> None:
    """The life of a key as a client drives it: Locate by Name (§4.9), Activate (§4.19),
    Revoke (§4.20), Destroy (§4.21); Get after Destroy fails."""
    name = _unique("pykmip-lifecycle")
    uid = client.create(enums.CryptographicAlgorithm.AES, 256, name=name)
    other = client.create(enums.CryptographicAlgorithm.AES, 128, name=_unique("pykmip-other"))
    assert client.locate(attributes=[_name_attribute(name)]) == [uid]

    client.activate(uid)
    assert _attributes(client, uid, ["State"])["State"].value == enums.State.ACTIVE

    # An active key cannot be destroyed.
    with pytest.raises(KmipOperationFailure):
        client.destroy(uid)

    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    assert _attributes(client, uid, ["State"])["State"].value == enums.State.DEACTIVATED

    client.destroy(uid)
    with pytest.raises(KmipOperationFailure) as failure:
        client.get(uid)
    assert failure.value.status == enums.ResultStatus.OPERATION_FAILED

    # The other key is untouched.
    assert len(client.get(other).value) == 16
    client.destroy(other)


def test_pykmip_get_of_unknown_uid_is_item_not_found(client: ProxyKmipClient) -> None:
    with pytest.raises(KmipOperationFailure) as failure:
        client.get(str(uuid.uuid4()))
    assert failure.value.reason == enums.ResultReason.ITEM_NOT_FOUND
