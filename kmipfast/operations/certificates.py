"""Attributes a server derives from a registered X.509 certificate (KMIP 1.4 §3.6–§3.16).

Both the 1.0 forms (Certificate Identifier/Subject/Issuer, text) and the 1.1 forms
(X.509 Certificate Identifier/Subject/Issuer, DER) are kept; the attribute table shows
each to the versions that define it.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from kmipfast.protocol import ttlv
from kmipfast.protocol.attributes import T_VALUE
from kmipfast.protocol.enums import (
    CertificateType,
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
)
from kmipfast.protocol.errors import invalid_field
from kmipfast.protocol.tags import Tag
from kmipfast.protocol.ttlv import Item

_SIGNATURES: dict[str, int] = {
    "1.2.840.113549.1.1.2": DigitalSignatureAlgorithm.MD2WithRSAEncryption,
    "1.2.840.113549.1.1.4": DigitalSignatureAlgorithm.MD5WithRSAEncryption,
    "1.2.840.113549.1.1.5": DigitalSignatureAlgorithm.SHA_1WithRSAEncryption,
    "1.2.840.113549.1.1.14": DigitalSignatureAlgorithm.SHA_224WithRSAEncryption,
    "1.2.840.113549.1.1.11": DigitalSignatureAlgorithm.SHA_256WithRSAEncryption,
    "1.2.840.113549.1.1.12": DigitalSignatureAlgorithm.SHA_384WithRSAEncryption,
    "1.2.840.113549.1.1.13": DigitalSignatureAlgorithm.SHA_512WithRSAEncryption,
    "1.2.840.113549.1.1.10": DigitalSignatureAlgorithm.RSASSA_PSS,
    "1.2.840.10040.4.3": DigitalSignatureAlgorithm.DSAWithSHA_1,
    "2.16.840.1.101.3.4.3.1": DigitalSignatureAlgorithm.DSAWithSHA224,
    "2.16.840.1.101.3.4.3.2": DigitalSignatureAlgorithm.DSAWithSHA256,
    "1.2.840.10045.4.1": DigitalSignatureAlgorithm.ECDSAWithSHA_1,
    "1.2.840.10045.4.3.1": DigitalSignatureAlgorithm.ECDSAWithSHA224,
    "1.2.840.10045.4.3.2": DigitalSignatureAlgorithm.ECDSAWithSHA256,
    "1.2.840.10045.4.3.3": DigitalSignatureAlgorithm.ECDSAWithSHA384,
    "1.2.840.10045.4.3.4": DigitalSignatureAlgorithm.ECDSAWithSHA512,
}


def _value(*children: Item | None) -> Item:
    return ttlv.struct(T_VALUE, *children)


def certificate_attributes(item: Item) -> dict[str, tuple[int, Any]]:
    """Attribute name -> (type, value) for a Certificate object item."""
    der = ttlv.value(item, int(Tag.CertificateValue))
    if not isinstance(der, bytes):
        raise invalid_field("Certificate has no Certificate Value")
    out: dict[str, tuple[int, Any]] = {
        "Certificate Type": (ttlv.ENUMERATION, ttlv.value(item, int(Tag.CertificateType))),
        "Certificate Length": (ttlv.INTEGER, len(der)),
    }
    if out["Certificate Type"][1] != CertificateType.X_509:
        return out
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise invalid_field("Certificate Value is not a DER X.509 certificate") from None
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    issuer, subject = cert.issuer.rfc4514_string(), cert.subject.rfc4514_string()
    structs = {
        "X.509 Certificate Identifier": _value(
            ttlv.byte_string(Tag.IssuerDistinguishedName, cert.issuer.public_bytes()),
            ttlv.byte_string(Tag.CertificateSerialNumber, serial),
        ),
        "X.509 Certificate Subject": _value(
            ttlv.byte_string(Tag.SubjectDistinguishedName, cert.subject.public_bytes())
        ),
        "X.509 Certificate Issuer": _value(
            ttlv.byte_string(Tag.IssuerDistinguishedName, cert.issuer.public_bytes())
        ),
        "Certificate Identifier": _value(
            ttlv.text(Tag.Issuer, issuer), ttlv.text(Tag.SerialNumber, serial.hex())
        ),
        "Certificate Subject": _value(ttlv.text(Tag.CertificateSubjectDistinguishedName, subject)),
        "Certificate Issuer": _value(ttlv.text(Tag.CertificateIssuerDistinguishedName, issuer)),
    }
    for name, struct in structs.items():
        out[name] = (ttlv.STRUCTURE, struct[2])
    signature = _SIGNATURES.get(cert.signature_algorithm_oid.dotted_string)
    if signature is not None:
        out["Digital Signature Algorithm"] = (ttlv.ENUMERATION, signature)
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        out["Cryptographic Algorithm"] = (ttlv.ENUMERATION, CryptographicAlgorithm.RSA)
        out["Cryptographic Length"] = (ttlv.INTEGER, key.key_size)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        out["Cryptographic Algorithm"] = (ttlv.ENUMERATION, CryptographicAlgorithm.ECDSA)
        out["Cryptographic Length"] = (ttlv.INTEGER, key.key_size)
    elif isinstance(key, dsa.DSAPublicKey):
        out["Cryptographic Algorithm"] = (ttlv.ENUMERATION, CryptographicAlgorithm.DSA)
        out["Cryptographic Length"] = (ttlv.INTEGER, key.key_size)
    return out
