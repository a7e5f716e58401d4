"""KMIP enumerations and bit masks, with the tables that tie them to tags and attributes.

Numbers are from the KMIP 1.4 specification section 9.1.3.2 (enumerations) and
9.1.3.3 (masks); later 2.0/2.1 values of the same enumerations are marked. Member
names are the normalised names the KMIP XML profile uses (KMIP Profiles 1.x
section 5.4.1.1), so ``Operation["DiscoverVersions"]`` resolves an XML value; a
name that is a Python keyword gets a trailing ``_`` (``PaddingMethod.None_``): use
:func:`member` to look names up. Values outside a class (vendor extensions
0x8XXXXXXX) stay plain ints in decoded trees.
"""

from __future__ import annotations

import enum
import keyword
import re
from typing import TypeVar

from kmipfast.protocol.tags import ItemType, Tag

__all__ = [
    "ATTRIBUTE_TYPES",
    "ENUM_FOR_TAG",
    "MASK_FOR_TAG",
    "AdjustmentType",
    "AlternativeNameType",
    "AsynchronousIndicator",
    "AttestationType",
    "BatchErrorContinuationOption",
    "BlockCipherMode",
    "CancellationResult",
    "CertificateRequestType",
    "CertificateType",
    "ClientRegistrationMethod",
    "CredentialType",
    "CryptographicAlgorithm",
    "CryptographicUsageMask",
    "DRBGAlgorithm",
    "Data",
    "DerivationMethod",
    "DestroyAction",
    "DigitalSignatureAlgorithm",
    "EncodingOption",
    "EndpointRole",
    "FIPS186Variation",
    "HashingAlgorithm",
    "InteropFunction",
    "KeyCompressionType",
    "KeyFormatType",
    "KeyRoleType",
    "KeyValueLocationType",
    "KeyWrapType",
    "LinkType",
    "MaskGenerator",
    "NISTKeyType",
    "NameType",
    "ObjectGroupMember",
    "ObjectType",
    "OpaqueDataType",
    "Operation",
    "PKCS_11Function",
    "PKCS_11ReturnCode",
    "PaddingMethod",
    "ProcessingStage",
    "ProfileName",
    "ProtectionLevel",
    "ProtectionStorageMask",
    "PutFunction",
    "QueryFunction",
    "RNGAlgorithm",
    "RNGMode",
    "RecommendedCurve",
    "ResultReason",
    "ResultStatus",
    "RevocationReasonCode",
    "SecretDataType",
    "ShreddingAlgorithm",
    "SplitKeyMethod",
    "State",
    "StorageStatusMask",
    "TicketType",
    "UniqueIdentifier",
    "UnwrapMode",
    "UsageLimitsUnit",
    "ValidationAuthorityType",
    "ValidationType",
    "ValidityIndicator",
    "WrappingMethod",
    "member",
    "parse_mask",
]


class CredentialType(enum.IntEnum):
    """Credential Type (KMIP 1.4 section 9.1.3.2.1)."""

    UsernameAndPassword = 0x00000001
    Device = 0x00000002
    Attestation = 0x00000003
    OneTimePassword = 0x00000004  # KMIP 2.0
    HashedPassword = 0x00000005  # KMIP 2.0
    Ticket = 0x00000006  # KMIP 2.0


class KeyCompressionType(enum.IntEnum):
    """Key Compression Type (KMIP 1.4 section 9.1.3.2.2)."""

    ECPublicKeyTypeUncompressed = 0x00000001
    ECPublicKeyTypeX9_62CompressedPrime = 0x00000002
    ECPublicKeyTypeX9_62CompressedChar2 = 0x00000003
    ECPublicKeyTypeX9_62Hybrid = 0x00000004


class KeyFormatType(enum.IntEnum):
    """Key Format Type (KMIP 1.4 section 9.1.3.2.3)."""

    Raw = 0x00000001
    Opaque = 0x00000002
    PKCS_1 = 0x00000003
    PKCS_8 = 0x00000004
    X_509 = 0x00000005
    ECPrivateKey = 0x00000006
    TransparentSymmetricKey = 0x00000007
    TransparentDSAPrivateKey = 0x00000008
    TransparentDSAPublicKey = 0x00000009
    TransparentRSAPrivateKey = 0x0000000A
    TransparentRSAPublicKey = 0x0000000B
    TransparentDHPrivateKey = 0x0000000C
    TransparentDHPublicKey = 0x0000000D
    TransparentECDSAPrivateKey = 0x0000000E
    TransparentECDSAPublicKey = 0x0000000F
    TransparentECDHPrivateKey = 0x00000010
    TransparentECDHPublicKey = 0x00000011
    TransparentECMQVPrivateKey = 0x00000012
    TransparentECMQVPublicKey = 0x00000013
    TransparentECPrivateKey = 0x00000014
    TransparentECPublicKey = 0x00000015
    PKCS_12 = 0x00000016


class WrappingMethod(enum.IntEnum):
    """Wrapping Method (KMIP 1.4 section 9.1.3.2.4)."""

    Encrypt = 0x00000001
    MACSign = 0x00000002
    EncryptThenMACSign = 0x00000003
    MACSignThenEncrypt = 0x00000004
    TR_31 = 0x00000005


class RecommendedCurve(enum.IntEnum):
    """Recommended Curve (KMIP 1.4 section 9.1.3.2.5)."""

    P_192 = 0x00000001
    K_163 = 0x00000002
    B_163 = 0x00000003
    P_224 = 0x00000004
    K_233 = 0x00000005
    B_233 = 0x00000006
    P_256 = 0x00000007
    K_283 = 0x00000008
    B_283 = 0x00000009
    P_384 = 0x0000000A
    K_409 = 0x0000000B
    B_409 = 0x0000000C
    P_521 = 0x0000000D
    K_571 = 0x0000000E
    B_571 = 0x0000000F
    SECP112R1 = 0x00000010
    SECP112R2 = 0x00000011
    SECP128R1 = 0x00000012
    SECP128R2 = 0x00000013
    SECP160K1 = 0x00000014
    SECP160R1 = 0x00000015
    SECP160R2 = 0x00000016
    SECP192K1 = 0x00000017
    SECP224K1 = 0x00000018
    SECP256K1 = 0x00000019
    SECT113R1 = 0x0000001A
    SECT113R2 = 0x0000001B
    SECT131R1 = 0x0000001C
    SECT131R2 = 0x0000001D
    SECT163R1 = 0x0000001E
    SECT193R1 = 0x0000001F
    SECT193R2 = 0x00000020
    SECT239K1 = 0x00000021
    ANSIX9P192V2 = 0x00000022
    ANSIX9P192V3 = 0x00000023
    ANSIX9P239V1 = 0x00000024
    ANSIX9P239V2 = 0x00000025
    ANSIX9P239V3 = 0x00000026
    ANSIX9C2PNB163V1 = 0x00000027
    ANSIX9C2PNB163V2 = 0x00000028
    ANSIX9C2PNB163V3 = 0x00000029
    ANSIX9C2PNB176V1 = 0x0000002A
    ANSIX9C2TNB191V1 = 0x0000002B
    ANSIX9C2TNB191V2 = 0x0000002C
    ANSIX9C2TNB191V3 = 0x0000002D
    ANSIX9C2PNB208W1 = 0x0000002E
    ANSIX9C2TNB239V1 = 0x0000002F
    ANSIX9C2TNB239V2 = 0x00000030
    ANSIX9C2TNB239V3 = 0x00000031
    ANSIX9C2PNB272W1 = 0x00000032
    ANSIX9C2PNB304W1 = 0x00000033
    ANSIX9C2TNB359V1 = 0x00000034
    ANSIX9C2PNB368W1 = 0x00000035
    ANSIX9C2TNB431R1 = 0x00000036
    BRAINPOOLP160R1 = 0x00000037
    BRAINPOOLP160T1 = 0x00000038
    BRAINPOOLP192R1 = 0x00000039
    BRAINPOOLP192T1 = 0x0000003A
    BRAINPOOLP224R1 = 0x0000003B
    BRAINPOOLP224T1 = 0x0000003C
    BRAINPOOLP256R1 = 0x0000003D
    BRAINPOOLP256T1 = 0x0000003E
    BRAINPOOLP320R1 = 0x0000003F
    BRAINPOOLP320T1 = 0x00000040
    BRAINPOOLP384R1 = 0x00000041
    BRAINPOOLP384T1 = 0x00000042
    BRAINPOOLP512R1 = 0x00000043
    BRAINPOOLP512T1 = 0x00000044
    CURVE25519 = 0x00000045  # KMIP 2.0
    CURVE448 = 0x00000046  # KMIP 2.0


class CertificateType(enum.IntEnum):
    """Certificate Type (KMIP 1.4 section 9.1.3.2.6)."""

    X_509 = 0x00000001
    PGP = 0x00000002


class DigitalSignatureAlgorithm(enum.IntEnum):
    """Digital Signature Algorithm (KMIP 1.4 section 9.1.3.2.7)."""

    MD2WithRSAEncryption = 0x00000001
    MD5WithRSAEncryption = 0x00000002
    SHA_1WithRSAEncryption = 0x00000003
    SHA_224WithRSAEncryption = 0x00000004
    SHA_256WithRSAEncryption = 0x00000005
    SHA_384WithRSAEncryption = 0x00000006
    SHA_512WithRSAEncryption = 0x00000007
    RSASSA_PSS = 0x00000008
    DSAWithSHA_1 = 0x00000009
    DSAWithSHA224 = 0x0000000A
    DSAWithSHA256 = 0x0000000B
    ECDSAWithSHA_1 = 0x0000000C
    ECDSAWithSHA224 = 0x0000000D
    ECDSAWithSHA256 = 0x0000000E
    ECDSAWithSHA384 = 0x0000000F
    ECDSAWithSHA512 = 0x00000010
    SHA3_256WithRSAEncryption = 0x00000011
    SHA3_384WithRSAEncryption = 0x00000012
    SHA3_512WithRSAEncryption = 0x00000013


class SplitKeyMethod(enum.IntEnum):
    """Split Key Method (KMIP 1.4 section 9.1.3.2.8)."""

    XOR = 0x00000001
    PolynomialSharingGF2_16 = 0x00000002
    PolynomialSharingPrimeField = 0x00000003
    PolynomialSharingGF2_8 = 0x00000004


class SecretDataType(enum.IntEnum):
    """Secret Data Type (KMIP 1.4 section 9.1.3.2.9)."""

    Password = 0x00000001
    Seed = 0x00000002


class OpaqueDataType(enum.IntEnum):
    """Opaque Data Type (KMIP 1.4 section 9.1.3.2.10)."""

    # No values defined by the specification: only extensions (0x8XXXXXXX).


class NameType(enum.IntEnum):
    """Name Type (KMIP 1.4 section 9.1.3.2.11)."""

    UninterpretedTextString = 0x00000001
    URI = 0x00000002


class ObjectType(enum.IntEnum):
    """Object Type (KMIP 1.4 section 9.1.3.2.12)."""

    Certificate = 0x00000001
    SymmetricKey = 0x00000002
    PublicKey = 0x00000003
    PrivateKey = 0x00000004
    SplitKey = 0x00000005
    Template = 0x00000006
    SecretData = 0x00000007
    OpaqueObject = 0x00000008
    PGPKey = 0x00000009
    CertificateRequest = 0x0000000A  # KMIP 2.0


class CryptographicAlgorithm(enum.IntEnum):
    """Cryptographic Algorithm (KMIP 1.4 section 9.1.3.2.13)."""

    DES = 0x00000001
    DES3 = 0x00000002
    AES = 0x00000003
    RSA = 0x00000004
    DSA = 0x00000005
    ECDSA = 0x00000006
    HMAC_SHA1 = 0x00000007
    HMAC_SHA224 = 0x00000008
    HMAC_SHA256 = 0x00000009
    HMAC_SHA384 = 0x0000000A
    HMAC_SHA512 = 0x0000000B
    HMAC_MD5 = 0x0000000C
    DH = 0x0000000D
    ECDH = 0x0000000E
    ECMQV = 0x0000000F
    Blowfish = 0x00000010
    Camellia = 0x00000011
    CAST5 = 0x00000012
    IDEA = 0x00000013
    MARS = 0x00000014
    RC2 = 0x00000015
    RC4 = 0x00000016
    RC5 = 0x00000017
    SKIPJACK = 0x00000018
    Twofish = 0x00000019
    EC = 0x0000001A
    OneTimePad = 0x0000001B
    ChaCha20 = 0x0000001C
    Poly1305 = 0x0000001D
    ChaCha20Poly1305 = 0x0000001E
    SHA3_224 = 0x0000001F
    SHA3_256 = 0x00000020
    SHA3_384 = 0x00000021
    SHA3_512 = 0x00000022
    HMAC_SHA3_224 = 0x00000023
    HMAC_SHA3_256 = 0x00000024
    HMAC_SHA3_384 = 0x00000025
    HMAC_SHA3_512 = 0x00000026
    SHAKE_128 = 0x00000027
    SHAKE_256 = 0x00000028
    ARIA = 0x00000029  # KMIP 2.0
    SEED = 0x0000002A  # KMIP 2.0
    SM2 = 0x0000002B  # KMIP 2.0
    SM3 = 0x0000002C  # KMIP 2.0
    SM4 = 0x0000002D  # KMIP 2.0
    GOSTR34_10_2012 = 0x0000002E  # KMIP 2.0
    GOSTR34_11_2012 = 0x0000002F  # KMIP 2.0
    GOSTR34_13_2015 = 0x00000030  # KMIP 2.0
    GOST28147_89 = 0x00000031  # KMIP 2.0
    XMSS = 0x00000032  # KMIP 2.0
    SPHINCS_256 = 0x00000033  # KMIP 2.0
    McEliece = 0x00000034  # KMIP 2.0
    McEliece_6960119 = 0x00000035  # KMIP 2.0
    McEliece_8192128 = 0x00000036  # KMIP 2.0
    Ed25519 = 0x00000037  # KMIP 2.0
    Ed448 = 0x00000038  # KMIP 2.0


class BlockCipherMode(enum.IntEnum):
    """Block Cipher Mode (KMIP 1.4 section 9.1.3.2.14)."""

    CBC = 0x00000001
    ECB = 0x00000002
    PCBC = 0x00000003
    CFB = 0x00000004
    OFB = 0x00000005
    CTR = 0x00000006
    CMAC = 0x00000007
    CCM = 0x00000008
    GCM = 0x00000009
    CBC_MAC = 0x0000000A
    XTS = 0x0000000B
    AESKeyWrapPadding = 0x0000000C
    NISTKeyWrap = 0x0000000D
    X9_102AESKW = 0x0000000E
    X9_102TDKW = 0x0000000F
    X9_102AKW1 = 0x00000010
    X9_102AKW2 = 0x00000011
    AEAD = 0x00000012


class PaddingMethod(enum.IntEnum):
    """Padding Method (KMIP 1.4 section 9.1.3.2.15)."""

    None_ = 0x00000001
    OAEP = 0x00000002
    PKCS5 = 0x00000003
    SSL3 = 0x00000004
    Zeros = 0x00000005
    ANSIX9_23 = 0x00000006
    ISO10126 = 0x00000007
    PKCS1V1_5 = 0x00000008
    X9_31 = 0x00000009
    PSS = 0x0000000A


class HashingAlgorithm(enum.IntEnum):
    """Hashing Algorithm (KMIP 1.4 section 9.1.3.2.16)."""

    MD2 = 0x00000001
    MD4 = 0x00000002
    MD5 = 0x00000003
    SHA_1 = 0x00000004
    SHA_224 = 0x00000005
    SHA_256 = 0x00000006
    SHA_384 = 0x00000007
    SHA_512 = 0x00000008
    RIPEMD_160 = 0x00000009
    Tiger = 0x0000000A
    Whirlpool = 0x0000000B
    SHA_512_224 = 0x0000000C
    SHA_512_256 = 0x0000000D
    SHA_3_224 = 0x0000000E
    SHA_3_256 = 0x0000000F
    SHA_3_384 = 0x00000010
    SHA_3_512 = 0x00000011


class KeyRoleType(enum.IntEnum):
    """Key Role Type (KMIP 1.4 section 9.1.3.2.17)."""

    BDK = 0x00000001
    CVK = 0x00000002
    DEK = 0x00000003
    MKAC = 0x00000004
    MKSMC = 0x00000005
    MKSMI = 0x00000006
    MKDAC = 0x00000007
    MKDN = 0x00000008
    MKCP = 0x00000009
    MKOTH = 0x0000000A
    KEK = 0x0000000B
    MAC16609 = 0x0000000C
    MAC97971 = 0x0000000D
    MAC97972 = 0x0000000E
    MAC97973 = 0x0000000F
    MAC97974 = 0x00000010
    MAC97975 = 0x00000011
    ZPK = 0x00000012
    PVKIBM = 0x00000013
    PVKPVV = 0x00000014
    PVKOTH = 0x00000015
    DUKPT = 0x00000016
    IV = 0x00000017
    TRKBK = 0x00000018


class State(enum.IntEnum):
    """State (KMIP 1.4 section 9.1.3.2.18)."""

    PreActive = 0x00000001
    Active = 0x00000002
    Deactivated = 0x00000003
    Compromised = 0x00000004
    Destroyed = 0x00000005
    DestroyedCompromised = 0x00000006


class RevocationReasonCode(enum.IntEnum):
    """Revocation Reason Code (KMIP 1.4 section 9.1.3.2.19)."""

    Unspecified = 0x00000001
    KeyCompromise = 0x00000002
    CACompromise = 0x00000003
    AffiliationChanged = 0x00000004
    Superseded = 0x00000005
    CessationOfOperation = 0x00000006
    PrivilegeWithdrawn = 0x00000007


class LinkType(enum.IntEnum):
    """Link Type (KMIP 1.4 section 9.1.3.2.20)."""

    CertificateLink = 0x00000101
    PublicKeyLink = 0x00000102
    PrivateKeyLink = 0x00000103
    DerivationBaseObjectLink = 0x00000104
    DerivedKeyLink = 0x00000105
    ReplacementObjectLink = 0x00000106
    ReplacedObjectLink = 0x00000107
    ParentLink = 0x00000108
    ChildLink = 0x00000109
    PreviousLink = 0x0000010A
    NextLink = 0x0000010B
    PKCS_12CertificateLink = 0x0000010C
    PKCS_12PasswordLink = 0x0000010D
    WrappingKeyLink = 0x0000010E  # KMIP 2.0


class DerivationMethod(enum.IntEnum):
    """Derivation Method (KMIP 1.4 section 9.1.3.2.21)."""

    PBKDF2 = 0x00000001
    HASH = 0x00000002
    HMAC = 0x00000003
    ENCRYPT = 0x00000004
    NIST800_108_C = 0x00000005
    NIST800_108_F = 0x00000006
    NIST800_108_DPI = 0x00000007
    AsymmetricKey = 0x00000008
    AWSSignatureVersion4 = 0x00000009  # KMIP 2.0
    HKDF = 0x0000000A  # KMIP 2.0


class CertificateRequestType(enum.IntEnum):
    """Certificate Request Type (KMIP 1.4 section 9.1.3.2.22)."""

    CRMF = 0x00000001
    PKCS_10 = 0x00000002
    PEM = 0x00000003
    PGP = 0x00000004


class ValidityIndicator(enum.IntEnum):
    """Validity Indicator (KMIP 1.4 section 9.1.3.2.23)."""

    Valid = 0x00000001
    Invalid = 0x00000002
    Unknown = 0x00000003


class QueryFunction(enum.IntEnum):
    """Query Function (KMIP 1.4 section 9.1.3.2.24)."""

    QueryOperations = 0x00000001
    QueryObjects = 0x00000002
    QueryServerInformation = 0x00000003
    QueryApplicationNamespaces = 0x00000004
    QueryExtensionList = 0x00000005
    QueryExtensionMap = 0x00000006
    QueryAttestationTypes = 0x00000007
    QueryRNGs = 0x00000008
    QueryValidations = 0x00000009
    QueryProfiles = 0x0000000A
    QueryCapabilities = 0x0000000B
    QueryClientRegistrationMethods = 0x0000000C
    QueryDefaultsInformation = 0x0000000D  # KMIP 2.0
    QueryStorageProtectionMasks = 0x0000000E  # KMIP 2.0


class CancellationResult(enum.IntEnum):
    """Cancellation Result (KMIP 1.4 section 9.1.3.2.25)."""

    Canceled = 0x00000001
    UnableToCancel = 0x00000002
    Completed = 0x00000003
    Failed = 0x00000004
    Unavailable = 0x00000005


class PutFunction(enum.IntEnum):
    """Put Function (KMIP 1.4 section 9.1.3.2.26)."""

    New = 0x00000001
    Replace = 0x00000002


class Operation(enum.IntEnum):
    """Operation (KMIP 1.4 section 9.1.3.2.27)."""

    Create = 0x00000001
    CreateKeyPair = 0x00000002
    Register = 0x00000003
    ReKey = 0x00000004
    DeriveKey = 0x00000005
    Certify = 0x00000006
    ReCertify = 0x00000007
    Locate = 0x00000008
    Check = 0x00000009
    Get = 0x0000000A
    GetAttributes = 0x0000000B
    GetAttributeList = 0x0000000C
    AddAttribute = 0x0000000D
    ModifyAttribute = 0x0000000E
    DeleteAttribute = 0x0000000F
    ObtainLease = 0x00000010
    GetUsageAllocation = 0x00000011
    Activate = 0x00000012
    Revoke = 0x00000013
    Destroy = 0x00000014
    Archive = 0x00000015
    Recover = 0x00000016
    Validate = 0x00000017
    Query = 0x00000018
    Cancel = 0x00000019
    Poll = 0x0000001A
    Notify = 0x0000001B
    Put = 0x0000001C
    ReKeyKeyPair = 0x0000001D
    DiscoverVersions = 0x0000001E
    Encrypt = 0x0000001F
    Decrypt = 0x00000020
    Sign = 0x00000021
    SignatureVerify = 0x00000022
    MAC = 0x00000023
    MACVerify = 0x00000024
    RNGRetrieve = 0x00000025
    RNGSeed = 0x00000026
    Hash = 0x00000027
    CreateSplitKey = 0x00000028
    JoinSplitKey = 0x00000029
    Import = 0x0000002A
    Export = 0x0000002B
    Log = 0x0000002C  # KMIP 2.0
    Login = 0x0000002D  # KMIP 2.0
    Logout = 0x0000002E  # KMIP 2.0
    DelegatedLogin = 0x0000002F  # KMIP 2.0
    AdjustAttribute = 0x00000030  # KMIP 2.0
    SetAttribute = 0x00000031  # KMIP 2.0
    SetEndpointRole = 0x00000032  # KMIP 2.0
    PKCS_11 = 0x00000033  # KMIP 2.0
    Interop = 0x00000034  # KMIP 2.0
    ReProvision = 0x00000035  # KMIP 2.0
    SetDefaults = 0x00000036  # KMIP 2.1
    SetConstraints = 0x00000037  # KMIP 2.1
    GetConstraints = 0x00000038  # KMIP 2.1
    QueryAsynchronousRequests = 0x00000039  # KMIP 2.1
    Process = 0x0000003A  # KMIP 2.1
    Ping = 0x0000003B  # KMIP 2.1


class ResultStatus(enum.IntEnum):
    """Result Status (KMIP 1.4 section 9.1.3.2.28)."""

    Success = 0x00000000
    OperationFailed = 0x00000001
    OperationPending = 0x00000002
    OperationUndone = 0x00000003


class ResultReason(enum.IntEnum):
    """Result Reason (KMIP 1.4 section 9.1.3.2.29)."""

    ItemNotFound = 0x00000001
    ResponseTooLarge = 0x00000002
    AuthenticationNotSuccessful = 0x00000003
    InvalidMessage = 0x00000004
    OperationNotSupported = 0x00000005
    MissingData = 0x00000006
    InvalidField = 0x00000007
    FeatureNotSupported = 0x00000008
    OperationCanceledByRequester = 0x00000009
    CryptographicFailure = 0x0000000A
    IllegalOperation = 0x0000000B
    PermissionDenied = 0x0000000C
    ObjectArchived = 0x0000000D
    IndexOutOfBounds = 0x0000000E
    ApplicationNamespaceNotSupported = 0x0000000F
    KeyFormatTypeNotSupported = 0x00000010
    KeyCompressionTypeNotSupported = 0x00000011
    EncodingOptionError = 0x00000012
    KeyValueNotPresent = 0x00000013
    AttestationRequired = 0x00000014
    AttestationFailed = 0x00000015
    Sensitive = 0x00000016
    NotExtractable = 0x00000017
    ObjectAlreadyExists = 0x00000018
    InvalidTicket = 0x00000019  # KMIP 2.0
    UsageLimitExceeded = 0x0000001A  # KMIP 2.0
    NumericRange = 0x0000001B  # KMIP 2.0
    InvalidDataType = 0x0000001C  # KMIP 2.0
    ReadOnlyAttribute = 0x0000001D  # KMIP 2.0
    MultiValuedAttribute = 0x0000001E  # KMIP 2.0
    UnsupportedAttribute = 0x0000001F  # KMIP 2.0
    AttributeInstanceNotFound = 0x00000020  # KMIP 2.0
    AttributeNotFound = 0x00000021  # KMIP 2.0
    AttributeReadOnly = 0x00000022  # KMIP 2.0
    AttributeSingleValued = 0x00000023  # KMIP 2.0
    BadCryptographicParameters = 0x00000024  # KMIP 2.0
    BadPassword = 0x00000025  # KMIP 2.0
    CodecError = 0x00000026  # KMIP 2.0
    IllegalObjectType = 0x00000028  # KMIP 2.0
    IncompatibleCryptographicUsageMask = 0x00000029  # KMIP 2.0
    InternalServerError = 0x0000002A  # KMIP 2.0
    InvalidAsynchronousCorrelationValue = 0x0000002B  # KMIP 2.0
    InvalidAttribute = 0x0000002C  # KMIP 2.0
    InvalidAttributeValue = 0x0000002D  # KMIP 2.0
    InvalidCorrelationValue = 0x0000002E  # KMIP 2.0
    InvalidCSR = 0x0000002F  # KMIP 2.0
    InvalidObjectType = 0x00000030  # KMIP 2.0
    KeyWrapTypeNotSupported = 0x00000032  # KMIP 2.0
    MissingInitializationVector = 0x00000034  # KMIP 2.0
    NonUniqueNameAttribute = 0x00000035  # KMIP 2.0
    ObjectDestroyed = 0x00000036  # KMIP 2.0
    ObjectNotFound = 0x00000037  # KMIP 2.0
    NotAuthorized = 0x00000039  # KMIP 2.0
    ServerLimitExceeded = 0x0000003A  # KMIP 2.0
    UnknownEnumeration = 0x0000003B  # KMIP 2.0
    UnknownMessageExtension = 0x0000003C  # KMIP 2.0
    UnknownTag = 0x0000003D  # KMIP 2.0
    UnsupportedCryptographicParameters = 0x0000003E  # KMIP 2.0
    UnsupportedProtocolVersion = 0x0000003F  # KMIP 2.0
    WrappingObjectArchived = 0x00000040  # KMIP 2.0
    WrappingObjectDestroyed = 0x00000041  # KMIP 2.0
    WrappingObjectNotFound = 0x00000042  # KMIP 2.0
    WrongKeyLifecycleState = 0x00000043  # KMIP 2.0
    ProtectionStorageUnavailable = 0x00000044  # KMIP 2.0
    PKCS_11CodecError = 0x00000045  # KMIP 2.0
    PKCS_11InvalidFunction = 0x00000046  # KMIP 2.0
    PKCS_11InvalidInterface = 0x00000047  # KMIP 2.0
    GeneralFailure = 0x00000100


class BatchErrorContinuationOption(enum.IntEnum):
    """Batch Error Continuation Option (KMIP 1.4 section 9.1.3.2.30)."""

    Continue = 0x00000001
    Stop = 0x00000002
    Undo = 0x00000003


class UsageLimitsUnit(enum.IntEnum):
    """Usage Limits Unit (KMIP 1.4 section 9.1.3.2.31)."""

    Byte = 0x00000001
    Object = 0x00000002


class EncodingOption(enum.IntEnum):
    """Encoding Option (KMIP 1.4 section 9.1.3.2.32)."""

    NoEncoding = 0x00000001
    TTLVEncoding = 0x00000002


class ObjectGroupMember(enum.IntEnum):
    """Object Group Member (KMIP 1.4 section 9.1.3.2.33)."""

    GroupMemberFresh = 0x00000001
    GroupMemberDefault = 0x00000002


class AlternativeNameType(enum.IntEnum):
    """Alternative Name Type (KMIP 1.4 section 9.1.3.2.34)."""

    UninterpretedTextString = 0x00000001
    URI = 0x00000002
    ObjectSerialNumber = 0x00000003
    EmailAddress = 0x00000004
    DNSName = 0x00000005
    X_500DistinguishedName = 0x00000006
    IPAddress = 0x00000007


class KeyValueLocationType(enum.IntEnum):
    """Key Value Location Type (KMIP 1.4 section 9.1.3.2.35)."""

    UninterpretedTextString = 0x00000001
    URI = 0x00000002


class AttestationType(enum.IntEnum):
    """Attestation Type (KMIP 1.4 section 9.1.3.2.36)."""

    TPMQuote = 0x00000001
    TCGIntegrityReport = 0x00000002
    SAMLAssertion = 0x00000003


class RNGAlgorithm(enum.IntEnum):
    """RNG Algorithm (KMIP 1.4 section 9.1.3.2.37)."""

    Unspecified = 0x00000001
    FIPS186_2 = 0x00000002
    DRBG = 0x00000003
    NRBG = 0x00000004
    ANSIX9_31 = 0x00000005
    ANSIX9_62 = 0x00000006


class DRBGAlgorithm(enum.IntEnum):
    """DRBG Algorithm (KMIP 1.4 section 9.1.3.2.38)."""

    Unspecified = 0x00000001
    Dual_EC = 0x00000002
    Hash = 0x00000003
    HMAC = 0x00000004
    CTR = 0x00000005


class FIPS186Variation(enum.IntEnum):
    """FIPS186 Variation (KMIP 1.4 section 9.1.3.2.39)."""

    Unspecified = 0x00000001
    GPXOriginal = 0x00000002
    GPXChangeNotice = 0x00000003
    XOriginal = 0x00000004
    XChangeNotice = 0x00000005
    KOriginal = 0x00000006
    KChangeNotice = 0x00000007


class ValidationAuthorityType(enum.IntEnum):
    """Validation Authority Type (KMIP 1.4 section 9.1.3.2.40)."""

    Unspecified = 0x00000001
    NISTCMVP = 0x00000002
    CommonCriteria = 0x00000003


class ValidationType(enum.IntEnum):
    """Validation Type (KMIP 1.4 section 9.1.3.2.41)."""

    Unspecified = 0x00000001
    Hardware = 0x00000002
    Software = 0x00000003
    Firmware = 0x00000004
    Hybrid = 0x00000005


class ProfileName(enum.IntEnum):
    """Profile Name (KMIP 1.4 section 9.1.3.2.42)."""

    BaselineServerBasicKMIPV1_2 = 0x00000001
    BaselineServerTLSV1_2KMIPV1_2 = 0x00000002
    BaselineClientBasicKMIPV1_2 = 0x00000003
    BaselineClientTLSV1_2KMIPV1_2 = 0x00000004
    CompleteServerBasicKMIPV1_2 = 0x00000005
    CompleteServerTLSV1_2KMIPV1_2 = 0x00000006
    TapeLibraryClientKMIPV1_0 = 0x00000007
    TapeLibraryClientKMIPV1_1 = 0x00000008
    TapeLibraryClientKMIPV1_2 = 0x00000009
    TapeLibraryServerKMIPV1_0 = 0x0000000A
    TapeLibraryServerKMIPV1_1 = 0x0000000B
    TapeLibraryServerKMIPV1_2 = 0x0000000C
    SymmetricKeyLifecycleClientKMIPV1_0 = 0x0000000D
    SymmetricKeyLifecycleClientKMIPV1_1 = 0x0000000E
    SymmetricKeyLifecycleClientKMIPV1_2 = 0x0000000F
    SymmetricKeyLifecycleServerKMIPV1_0 = 0x00000010
    SymmetricKeyLifecycleServerKMIPV1_1 = 0x00000011
    SymmetricKeyLifecycleServerKMIPV1_2 = 0x00000012
    AsymmetricKeyLifecycleClientKMIPV1_0 = 0x00000013
    AsymmetricKeyLifecycleClientKMIPV1_1 = 0x00000014
    AsymmetricKeyLifecycleClientKMIPV1_2 = 0x00000015
    AsymmetricKeyLifecycleServerKMIPV1_0 = 0x00000016
    AsymmetricKeyLifecycleServerKMIPV1_1 = 0x00000017
    AsymmetricKeyLifecycleServerKMIPV1_2 = 0x00000018
    BasicCryptographicClientKMIPV1_2 = 0x00000019
    BasicCryptographicServerKMIPV1_2 = 0x0000001A
    AdvancedCryptographicClientKMIPV1_2 = 0x0000001B
    AdvancedCryptographicServerKMIPV1_2 = 0x0000001C
    RNGCryptographicClientKMIPV1_2 = 0x0000001D
    RNGCryptographicServerKMIPV1_2 = 0x0000001E
    BasicSymmetricKeyFoundryClientKMIPV1_0 = 0x0000001F
    IntermediateSymmetricKeyFoundryClientKMIPV1_0 = 0x00000020
    AdvancedSymmetricKeyFoundryClientKMIPV1_0 = 0x00000021
    BasicSymmetricKeyFoundryClientKMIPV1_1 = 0x00000022
    IntermediateSymmetricKeyFoundryClientKMIPV1_1 = 0x00000023
    AdvancedSymmetricKeyFoundryClientKMIPV1_1 = 0x00000024
    BasicSymmetricKeyFoundryClientKMIPV1_2 = 0x00000025
    IntermediateSymmetricKeyFoundryClientKMIPV1_2 = 0x00000026
    AdvancedSymmetricKeyFoundryClientKMIPV1_2 = 0x00000027
    SymmetricKeyFoundryServerKMIPV1_0 = 0x00000028
    SymmetricKeyFoundryServerKMIPV1_1 = 0x00000029
    SymmetricKeyFoundryServerKMIPV1_2 = 0x0000002A
    OpaqueManagedObjectStoreClientKMIPV1_0 = 0x0000002B
    OpaqueManagedObjectStoreClientKMIPV1_1 = 0x0000002C
    OpaqueManagedObjectStoreClientKMIPV1_2 = 0x0000002D
    OpaqueManagedObjectStoreServerKMIPV1_0 = 0x0000002E
    OpaqueManagedObjectStoreServerKMIPV1_1 = 0x0000002F
    OpaqueManagedObjectStoreServerKMIPV1_2 = 0x00000030
    SuiteBMinLOS_128ClientKMIPV1_0 = 0x00000031
    SuiteBMinLOS_128ClientKMIPV1_1 = 0x00000032
    SuiteBMinLOS_128ClientKMIPV1_2 = 0x00000033
    SuiteBMinLOS_128ServerKMIPV1_0 = 0x00000034
    SuiteBMinLOS_128ServerKMIPV1_1 = 0x00000035
    SuiteBMinLOS_128ServerKMIPV1_2 = 0x00000036
    SuiteBMinLOS_192ClientKMIPV1_0 = 0x00000037
    SuiteBMinLOS_192ClientKMIPV1_1 = 0x00000038
    SuiteBMinLOS_192ClientKMIPV1_2 = 0x00000039
    SuiteBMinLOS_192ServerKMIPV1_0 = 0x0000003A
    SuiteBMinLOS_192ServerKMIPV1_1 = 0x0000003B
    SuiteBMinLOS_192ServerKMIPV1_2 = 0x0000003C
    StorageArrayWithSelfEncryptingDriveClientKMIPV1_0 = 0x0000003D
    StorageArrayWithSelfEncryptingDriveClientKMIPV1_1 = 0x0000003E
    StorageArrayWithSelfEncryptingDriveClientKMIPV1_2 = 0x0000003F
    StorageArrayWithSelfEncryptingDriveServerKMIPV1_0 = 0x00000040
    StorageArrayWithSelfEncryptingDriveServerKMIPV1_1 = 0x00000041
    StorageArrayWithSelfEncryptingDriveServerKMIPV1_2 = 0x00000042
    HTTPSClientKMIPV1_0 = 0x00000043
    HTTPSClientKMIPV1_1 = 0x00000044
    HTTPSClientKMIPV1_2 = 0x00000045
    HTTPSServerKMIPV1_0 = 0x00000046
    HTTPSServerKMIPV1_1 = 0x00000047
    HTTPSServerKMIPV1_2 = 0x00000048
    JSONClientKMIPV1_0 = 0x00000049
    JSONClientKMIPV1_1 = 0x0000004A
    JSONClientKMIPV1_2 = 0x0000004B
    JSONServerKMIPV1_0 = 0x0000004C
    JSONServerKMIPV1_1 = 0x0000004D
    JSONServerKMIPV1_2 = 0x0000004E
    XMLClientKMIPV1_0 = 0x0000004F
    XMLClientKMIPV1_1 = 0x00000050
    XMLClientKMIPV1_2 = 0x00000051
    XMLServerKMIPV1_0 = 0x00000052
    XMLServerKMIPV1_1 = 0x00000053
    XMLServerKMIPV1_2 = 0x00000054
    BaselineServerBasicKMIPV1_3 = 0x00000055
    BaselineServerTLSV1_2KMIPV1_3 = 0x00000056
    BaselineClientBasicKMIPV1_3 = 0x00000057
    BaselineClientTLSV1_2KMIPV1_3 = 0x00000058
    CompleteServerBasicKMIPV1_3 = 0x00000059
    CompleteServerTLSV1_2KMIPV1_3 = 0x0000005A
    TapeLibraryClientKMIPV1_3 = 0x0000005B
    TapeLibraryServerKMIPV1_3 = 0x0000005C
    SymmetricKeyLifecycleClientKMIPV1_3 = 0x0000005D
    SymmetricKeyLifecycleServerKMIPV1_3 = 0x0000005E
    AsymmetricKeyLifecycleClientKMIPV1_3 = 0x0000005F
    AsymmetricKeyLifecycleServerKMIPV1_3 = 0x00000060
    BasicCryptographicClientKMIPV1_3 = 0x00000061
    BasicCryptographicServerKMIPV1_3 = 0x00000062
    AdvancedCryptographicClientKMIPV1_3 = 0x00000063
    AdvancedCryptographicServerKMIPV1_3 = 0x00000064
    RNGCryptographicClientKMIPV1_3 = 0x00000065
    RNGCryptographicServerKMIPV1_3 = 0x00000066
    BasicSymmetricKeyFoundryClientKMIPV1_3 = 0x00000067
    IntermediateSymmetricKeyFoundryClientKMIPV1_3 = 0x00000068
    AdvancedSymmetricKeyFoundryClientKMIPV1_3 = 0x00000069
    SymmetricKeyFoundryServerKMIPV1_3 = 0x0000006A
    OpaqueManagedObjectStoreClientKMIPV1_3 = 0x0000006B
    OpaqueManagedObjectStoreServerKMIPV1_3 = 0x0000006C
    SuiteBMinLOS_128ClientKMIPV1_3 = 0x0000006D
    SuiteBMinLOS_128ServerKMIPV1_3 = 0x0000006E
    SuiteBMinLOS_192ClientKMIPV1_3 = 0x0000006F
    SuiteBMinLOS_192ServerKMIPV1_3 = 0x00000070
    StorageArrayWithSelfEncryptingDriveClientKMIPV1_3 = 0x00000071
    StorageArrayWithSelfEncryptingDriveServerKMIPV1_3 = 0x00000072
    HTTPSClientKMIPV1_3 = 0x00000073
    HTTPSServerKMIPV1_3 = 0x00000074
    JSONClientKMIPV1_3 = 0x00000075
    JSONServerKMIPV1_3 = 0x00000076
    XMLClientKMIPV1_3 = 0x00000077
    XMLServerKMIPV1_3 = 0x00000078
    BaselineServerBasicKMIPV1_4 = 0x00000079
    BaselineServerTLSV1_2KMIPV1_4 = 0x0000007A
    BaselineClientBasicKMIPV1_4 = 0x0000007B
    BaselineClientTLSV1_2KMIPV1_4 = 0x0000007C
    CompleteServerBasicKMIPV1_4 = 0x0000007D
    CompleteServerTLSV1_2KMIPV1_4 = 0x0000007E
    TapeLibraryClientKMIPV1_4 = 0x0000007F
    TapeLibraryServerKMIPV1_4 = 0x00000080
    SymmetricKeyLifecycleClientKMIPV1_4 = 0x00000081
    SymmetricKeyLifecycleServerKMIPV1_4 = 0x00000082
    AsymmetricKeyLifecycleClientKMIPV1_4 = 0x00000083
    AsymmetricKeyLifecycleServerKMIPV1_4 = 0x00000084
    BasicCryptographicClientKMIPV1_4 = 0x00000085
    BasicCryptographicServerKMIPV1_4 = 0x00000086
    AdvancedCryptographicClientKMIPV1_4 = 0x00000087
    AdvancedCryptographicServerKMIPV1_4 = 0x00000088
    RNGCryptographicClientKMIPV1_4 = 0x00000089
    RNGCryptographicServerKMIPV1_4 = 0x0000008A
    BasicSymmetricKeyFoundryClientKMIPV1_4 = 0x0000008B
    IntermediateSymmetricKeyFoundryClientKMIPV1_4 = 0x0000008C
    AdvancedSymmetricKeyFoundryClientKMIPV1_4 = 0x0000008D
    SymmetricKeyFoundryServerKMIPV1_4 = 0x0000008E
    OpaqueManagedObjectStoreClientKMIPV1_4 = 0x0000008F
    OpaqueManagedObjectStoreServerKMIPV1_4 = 0x00000090
    SuiteBMinLOS_128ClientKMIPV1_4 = 0x00000091
    SuiteBMinLOS_128ServerKMIPV1_4 = 0x00000092
    SuiteBMinLOS_192ClientKMIPV1_4 = 0x00000093
    SuiteBMinLOS_192ServerKMIPV1_4 = 0x00000094
    StorageArrayWithSelfEncryptingDriveClientKMIPV1_4 = 0x00000095
    StorageArrayWithSelfEncryptingDriveServerKMIPV1_4 = 0x00000096
    HTTPSClientKMIPV1_4 = 0x00000097
    HTTPSServerKMIPV1_4 = 0x00000098
    JSONClientKMIPV1_4 = 0x00000099
    JSONServerKMIPV1_4 = 0x0000009A
    XMLClientKMIPV1_4 = 0x0000009B
    XMLServerKMIPV1_4 = 0x0000009C
    CompleteServerBasic = 0x00000104  # KMIP 2.0
    CompleteServerTLSV1_2 = 0x00000105  # KMIP 2.0
    TapeLibraryClient = 0x00000106  # KMIP 2.0
    TapeLibraryServer = 0x00000107  # KMIP 2.0
    SymmetricKeyLifecycleClient = 0x00000108  # KMIP 2.0
    SymmetricKeyLifecycleServer = 0x00000109  # KMIP 2.0
    AsymmetricKeyLifecycleClient = 0x0000010A  # KMIP 2.0
    AsymmetricKeyLifecycleServer = 0x0000010B  # KMIP 2.0
    BasicCryptographicClient = 0x0000010C  # KMIP 2.0
    BasicCryptographicServer = 0x0000010D  # KMIP 2.0
    AdvancedCryptographicClient = 0x0000010E  # KMIP 2.0
    AdvancedCryptographicServer = 0x0000010F  # KMIP 2.0
    RNGCryptographicClient = 0x00000110  # KMIP 2.0
    RNGCryptographicServer = 0x00000111  # KMIP 2.0
    BasicSymmetricKeyFoundryClient = 0x00000112  # KMIP 2.0
    IntermediateSymmetricKeyFoundryClient = 0x00000113  # KMIP 2.0
    AdvancedSymmetricKeyFoundryClient = 0x00000114  # KMIP 2.0
    SymmetricKeyFoundryServer = 0x00000115  # KMIP 2.0
    OpaqueManagedObjectStoreClient = 0x00000116  # KMIP 2.0
    OpaqueManagedObjectStoreServer = 0x00000117  # KMIP 2.0
    SuiteBMinLOS_128Client = 0x00000118  # KMIP 2.0
    SuiteBMinLOS_128Server = 0x00000119  # KMIP 2.0
    SuiteBMinLOS_192Client = 0x0000011A  # KMIP 2.0
    SuiteBMinLOS_192Server = 0x0000011B  # KMIP 2.0
    StorageArrayWithSelfEncryptingDriveClient = 0x0000011C  # KMIP 2.0
    StorageArrayWithSelfEncryptingDriveServer = 0x0000011D  # KMIP 2.0
    HTTPSClient = 0x0000011E  # KMIP 2.0
    HTTPSServer = 0x0000011F  # KMIP 2.0
    JSONClient = 0x00000120  # KMIP 2.0
    JSONServer = 0x00000121  # KMIP 2.0
    XMLClient = 0x00000122  # KMIP 2.0
    XMLServer = 0x00000123  # KMIP 2.0
    AESXTSClient = 0x00000124  # KMIP 2.0
    AESXTSServer = 0x00000125  # KMIP 2.0
    QuantumSafeClient = 0x00000126  # KMIP 2.0
    QuantumSafeServer = 0x00000127  # KMIP 2.0
    PKCS_11Client = 0x00000128  # KMIP 2.0
    PKCS_11Server = 0x00000129  # KMIP 2.0
    BaselineClient = 0x0000012A  # KMIP 2.0
    BaselineServer = 0x0000012B  # KMIP 2.0
    CompleteServer = 0x0000012C  # KMIP 2.0


class UnwrapMode(enum.IntEnum):
    """Unwrap Mode (KMIP 1.4 section 9.1.3.2.43)."""

    Unspecified = 0x00000001
    Processed = 0x00000002
    NotProcessed = 0x00000003


class DestroyAction(enum.IntEnum):
    """Destroy Action (KMIP 1.4 section 9.1.3.2.44)."""

    Unspecified = 0x00000001
    KeyMaterialDeleted = 0x00000002
    KeyMaterialShredded = 0x00000003
    MetaDataDeleted = 0x00000004
    MetaDataShredded = 0x00000005
    Deleted = 0x00000006
    Shredded = 0x00000007


class ShreddingAlgorithm(enum.IntEnum):
    """Shredding Algorithm (KMIP 1.4 section 9.1.3.2.45)."""

    Unspecified = 0x00000001
    Cryptographic = 0x00000002
    Unsupported = 0x00000003


class RNGMode(enum.IntEnum):
    """RNG Mode (KMIP 1.4 section 9.1.3.2.46)."""

    Unspecified = 0x00000001
    SharedInstantiation = 0x00000002
    NonSharedInstantiation = 0x00000003


class ClientRegistrationMethod(enum.IntEnum):
    """Client Registration Method (KMIP 1.4 section 9.1.3.2.47)."""

    Unspecified = 0x00000001
    ServerPreGenerated = 0x00000002
    ServerOnDemand = 0x00000003
    ClientGenerated = 0x00000004
    ClientRegistered = 0x00000005


class KeyWrapType(enum.IntEnum):
    """Key Wrap Type (KMIP 1.4 section 9.1.3.2.48)."""

    NotWrapped = 0x00000001
    AsRegistered = 0x00000002


class MaskGenerator(enum.IntEnum):
    """Mask Generator (KMIP 1.4 section 9.1.3.2.49)."""

    MGF1 = 0x00000001


class AdjustmentType(enum.IntEnum):
    """Adjustment Type (KMIP 2.0 section 11.1)."""

    Increment = 0x00000001
    Decrement = 0x00000002
    Negate = 0x00000003


class AsynchronousIndicator(enum.IntEnum):
    """Asynchronous Indicator (KMIP 2.0 section 11.3)."""

    Mandatory = 0x00000001
    Optional = 0x00000002
    Prohibited = 0x00000003


class Data(enum.IntEnum):
    """Data (KMIP 2.0 section 11.13)."""

    Decrypt = 0x00000001
    Encrypt = 0x00000002
    Hash = 0x00000003
    MACMACData = 0x00000004
    RNGRetrieve = 0x00000005
    SignSignatureData = 0x00000006
    SignatureVerify = 0x00000007


class EndpointRole(enum.IntEnum):
    """Endpoint Role (KMIP 2.0 section 11.19)."""

    Client = 0x00000001
    Server = 0x00000002


class InteropFunction(enum.IntEnum):
    """Interop Function (KMIP 2.0 section 11.22)."""

    Begin = 0x00000001
    End = 0x00000002
    Reset = 0x00000003


class NISTKeyType(enum.IntEnum):
    """NIST Key Type (KMIP 2.0)."""

    PrivateSignatureKey = 0x00000001
    PublicSignatureVerificationKey = 0x00000002
    SymmetricAuthenticationKey = 0x00000003
    PrivateAuthenticationKey = 0x00000004
    PublicAuthenticationKey = 0x00000005
    SymmetricDataEncryptionKey = 0x00000006
    SymmetricKeyWrappingKey = 0x00000007
    SymmetricRandomNumberGenerationKey = 0x00000008
    SymmetricMasterKey = 0x00000009
    PrivateKeyTransportKey = 0x0000000A
    PublicKeyTransportKey = 0x0000000B
    SymmetricKeyAgreementKey = 0x0000000C
    PrivateStaticKeyAgreementKey = 0x0000000D
    PublicStaticKeyAgreementKey = 0x0000000E
    PrivateEphemeralKeyAgreementKey = 0x0000000F
    PublicEphemeralKeyAgreementKey = 0x00000010
    SymmetricAuthorizationKey = 0x00000011
    PrivateAuthorizationKey = 0x00000012
    PublicAuthorizationKey = 0x00000013


class PKCS_11Function(enum.IntEnum):
    """PKCS#11 Function (KMIP 2.0)."""

    # Values are PKCS#11 identifiers, not transcribed here: they stay plain ints.


class PKCS_11ReturnCode(enum.IntEnum):
    """PKCS#11 Return Code (KMIP 2.0)."""

    # Values are PKCS#11 identifiers, not transcribed here: they stay plain ints.


class ProtectionLevel(enum.IntEnum):
    """Protection Level (KMIP 2.0)."""

    High = 0x00000001
    Low = 0x00000002


class TicketType(enum.IntEnum):
    """Ticket Type (KMIP 2.0)."""

    Login = 0x00000001


class UniqueIdentifier(enum.IntEnum):
    """Unique Identifier (KMIP 2.0)."""

    IDPlaceholder = 0x00000001
    Certify = 0x00000002
    Create = 0x00000003
    CreateKeyPair = 0x00000004
    CreateKeyPairPrivateKey = 0x00000005
    CreateKeyPairPublicKey = 0x00000006
    CreateSplitKey = 0x00000007
    DeriveKey = 0x00000008
    Import = 0x00000009
    JoinSplitKey = 0x0000000A
    Locate = 0x0000000B
    Register = 0x0000000C
    ReKey = 0x0000000D
    ReCertify = 0x0000000E
    ReKeyKeyPair = 0x0000000F
    ReKeyKeyPairPrivateKey = 0x00000010
    ReKeyKeyPairPublicKey = 0x00000011


class ProcessingStage(enum.IntEnum):
    """Processing Stage (KMIP 2.1)."""

    Submitted = 0x00000001
    InProcess = 0x00000002
    Completed = 0x00000003


class CryptographicUsageMask(enum.IntFlag):
    """Cryptographic Usage Mask (KMIP 1.4 section 9.1.3.3.1)."""

    Sign = 0x00000001
    Verify = 0x00000002
    Encrypt = 0x00000004
    Decrypt = 0x00000008
    WrapKey = 0x00000010
    UnwrapKey = 0x00000020
    Export = 0x00000040
    MACGenerate = 0x00000080
    MACVerify = 0x00000100
    DeriveKey = 0x00000200
    ContentCommitment = 0x00000400
    KeyAgreement = 0x00000800
    CertificateSign = 0x00001000
    CRLSign = 0x00002000
    GenerateCryptogram = 0x00004000
    ValidateCryptogram = 0x00008000
    TranslateEncrypt = 0x00010000
    TranslateDecrypt = 0x00020000
    TranslateWrap = 0x00040000
    TranslateUnwrap = 0x00080000
    Authenticate = 0x00100000  # KMIP 2.0
    Unrestricted = 0x00200000  # KMIP 2.0
    FPEEncrypt = 0x00400000  # KMIP 2.0
    FPEDecrypt = 0x00800000  # KMIP 2.0


class StorageStatusMask(enum.IntFlag):
    """Storage Status Mask (KMIP 1.4 section 9.1.3.3.2)."""

    OnLineStorage = 0x00000001
    ArchivalStorage = 0x00000002


class ProtectionStorageMask(enum.IntFlag):
    """Protection Storage Mask (KMIP 2.0)."""

    Software = 0x00000001
    Hardware = 0x00000002
    OnProcessor = 0x00000004
    OnSystem = 0x00000008
    OffSystem = 0x00000010
    Hypervisor = 0x00000020
    OperatingSystem = 0x00000040
    Container = 0x00000080
    OnPremises = 0x00000100
    OffPremises = 0x00000200
    SelfManaged = 0x00000400
    Outsourced = 0x00000800
    Validated = 0x00001000
    SameJurisdiction = 0x00002000


ENUM_FOR_TAG: dict[Tag, type[enum.IntEnum]] = {
    # Every tag whose item type is Enumeration, to the class its values come from.
    Tag.CredentialType: CredentialType,
    Tag.KeyCompressionType: KeyCompressionType,
    Tag.KeyFormatType: KeyFormatType,
    Tag.WrappingMethod: WrappingMethod,
    Tag.RecommendedCurve: RecommendedCurve,
    Tag.CertificateType: CertificateType,
    Tag.DigitalSignatureAlgorithm: DigitalSignatureAlgorithm,
    Tag.SplitKeyMethod: SplitKeyMethod,
    Tag.SecretDataType: SecretDataType,
    Tag.OpaqueDataType: OpaqueDataType,
    Tag.NameType: NameType,
    Tag.ObjectType: ObjectType,
    Tag.CryptographicAlgorithm: CryptographicAlgorithm,
    Tag.BlockCipherMode: BlockCipherMode,
    Tag.PaddingMethod: PaddingMethod,
    Tag.HashingAlgorithm: HashingAlgorithm,
    Tag.MaskGeneratorHashingAlgorithm: HashingAlgorithm,
    Tag.KeyRoleType: KeyRoleType,
    Tag.State: State,
    Tag.RevocationReasonCode: RevocationReasonCode,
    Tag.LinkType: LinkType,
    Tag.DerivationMethod: DerivationMethod,
    Tag.CertificateRequestType: CertificateRequestType,
    Tag.ValidityIndicator: ValidityIndicator,
    Tag.QueryFunction: QueryFunction,
    Tag.CancellationResult: CancellationResult,
    Tag.PutFunction: PutFunction,
    Tag.Operation: Operation,
    Tag.ResultStatus: ResultStatus,
    Tag.ResultReason: ResultReason,
    Tag.BatchErrorContinuationOption: BatchErrorContinuationOption,
    Tag.UsageLimitsUnit: UsageLimitsUnit,
    Tag.EncodingOption: EncodingOption,
    Tag.ObjectGroupMember: ObjectGroupMember,
    Tag.AlternativeNameType: AlternativeNameType,
    Tag.KeyValueLocationType: KeyValueLocationType,
    Tag.AttestationType: AttestationType,
    Tag.RNGAlgorithm: RNGAlgorithm,
    Tag.DRBGAlgorithm: DRBGAlgorithm,
    Tag.FIPS186Variation: FIPS186Variation,
    Tag.ValidationAuthorityType: ValidationAuthorityType,
    Tag.ValidationType: ValidationType,
    Tag.ProfileName: ProfileName,
    Tag.UnwrapMode: UnwrapMode,
    Tag.DestroyAction: DestroyAction,
    Tag.ShreddingAlgorithm: ShreddingAlgorithm,
    Tag.RNGMode: RNGMode,
    Tag.ClientRegistrationMethod: ClientRegistrationMethod,
    Tag.KeyWrapType: KeyWrapType,
    Tag.MaskGenerator: MaskGenerator,
    Tag.AdjustmentType: AdjustmentType,
    Tag.AsynchronousIndicator: AsynchronousIndicator,
    Tag.Data: Data,
    Tag.EndpointRole: EndpointRole,
    Tag.InteropFunction: InteropFunction,
    Tag.NISTKeyType: NISTKeyType,
    Tag.PKCS_11Function: PKCS_11Function,
    Tag.PKCS_11ReturnCode: PKCS_11ReturnCode,
    Tag.ProtectionLevel: ProtectionLevel,
    Tag.TicketType: TicketType,
    Tag.UniqueIdentifier: UniqueIdentifier,
    Tag.LinkedObjectIdentifier: UniqueIdentifier,
    Tag.ProcessingStage: ProcessingStage,
    # KMIP 2.0: an Attribute Reference enumeration names an attribute by its tag.
    Tag.AttributeReference: Tag,
}

# Integer-typed tags whose values are bit masks (written as flag names in XML).
MASK_FOR_TAG: dict[Tag, type[enum.IntFlag]] = {
    Tag.CryptographicUsageMask: CryptographicUsageMask,
    Tag.StorageStatusMask: StorageStatusMask,
    Tag.ProtectionStorageMask: ProtectionStorageMask,
}

# Standard KMIP 1.x attributes (KMIP 1.4 section 3): name -> (tag, item type) of the
# Attribute Value. Custom attributes ("x-..." client, "y-..." server) have no entry:
# their type travels with the value.
ATTRIBUTE_TYPES: dict[str, tuple[Tag, ItemType]] = {
    "Unique Identifier": (Tag.UniqueIdentifier, ItemType.TextString),
    "Name": (Tag.Name, ItemType.Structure),
    "Object Type": (Tag.ObjectType, ItemType.Enumeration),
    "Cryptographic Algorithm": (Tag.CryptographicAlgorithm, ItemType.Enumeration),
    "Cryptographic Length": (Tag.CryptographicLength, ItemType.Integer),
    "Cryptographic Parameters": (Tag.CryptographicParameters, ItemType.Structure),
    "Cryptographic Domain Parameters": (
        Tag.CryptographicDomainParameters,
        ItemType.Structure,
    ),
    "Certificate Type": (Tag.CertificateType, ItemType.Enumeration),
    "Certificate Length": (Tag.CertificateLength, ItemType.Integer),  # 1.1
    "X.509 Certificate Identifier": (
        Tag.X_509CertificateIdentifier,
        ItemType.Structure,
    ),  # 1.1
    "X.509 Certificate Subject": (
        Tag.X_509CertificateSubject,
        ItemType.Structure,
    ),  # 1.1
    "X.509 Certificate Issuer": (Tag.X_509CertificateIssuer, ItemType.Structure),  # 1.1
    "Certificate Identifier": (
        Tag.CertificateIdentifier,
        ItemType.Structure,
    ),  # deprecated 1.1
    "Certificate Subject": (
        Tag.CertificateSubject,
        ItemType.Structure,
    ),  # deprecated 1.1
    "Certificate Issuer": (Tag.CertificateIssuer, ItemType.Structure),  # deprecated 1.1
    "Digital Signature Algorithm": (
        Tag.DigitalSignatureAlgorithm,
        ItemType.Enumeration,
    ),  # 1.1
    "Digest": (Tag.Digest, ItemType.Structure),
    "Operation Policy Name": (
        Tag.OperationPolicyName,
        ItemType.TextString,
    ),  # deprecated 1.3
    "Cryptographic Usage Mask": (Tag.CryptographicUsageMask, ItemType.Integer),
    "Lease Time": (Tag.LeaseTime, ItemType.Interval),
    "Usage Limits": (Tag.UsageLimits, ItemType.Structure),
    "State": (Tag.State, ItemType.Enumeration),
    "Initial Date": (Tag.InitialDate, ItemType.DateTime),
    "Activation Date": (Tag.ActivationDate, ItemType.DateTime),
    "Process Start Date": (Tag.ProcessStartDate, ItemType.DateTime),
    "Protect Stop Date": (Tag.ProtectStopDate, ItemType.DateTime),
    "Deactivation Date": (Tag.DeactivationDate, ItemType.DateTime),
    "Destroy Date": (Tag.DestroyDate, ItemType.DateTime),
    "Compromise Occurrence Date": (Tag.CompromiseOccurrenceDate, ItemType.DateTime),
    "Compromise Date": (Tag.CompromiseDate, ItemType.DateTime),
    "Revocation Reason": (Tag.RevocationReason, ItemType.Structure),
    "Archive Date": (Tag.ArchiveDate, ItemType.DateTime),
    "Object Group": (Tag.ObjectGroup, ItemType.TextString),
    "Fresh": (Tag.Fresh, ItemType.Boolean),  # 1.1
    "Link": (Tag.Link, ItemType.Structure),
    "Application Specific Information": (
        Tag.ApplicationSpecificInformation,
        ItemType.Structure,
    ),
    "Contact Information": (Tag.ContactInformation, ItemType.TextString),
    "Last Change Date": (Tag.LastChangeDate, ItemType.DateTime),
    "Alternative Name": (Tag.AlternativeName, ItemType.Structure),  # 1.2
    "Key Value Present": (Tag.KeyValuePresent, ItemType.Boolean),  # 1.2
    "Key Value Location": (Tag.KeyValueLocation, ItemType.Structure),  # 1.2
    "Original Creation Date": (Tag.OriginalCreationDate, ItemType.DateTime),  # 1.2
    "Random Number Generator": (Tag.RandomNumberGenerator, ItemType.Structure),  # 1.3
    "PKCS#12 Friendly Name": (Tag.PKCS_12FriendlyName, ItemType.TextString),  # 1.4
    "Description": (Tag.Description, ItemType.TextString),  # 1.4
    "Comment": (Tag.Comment, ItemType.TextString),  # 1.4
    "Sensitive": (Tag.Sensitive, ItemType.Boolean),  # 1.4
    "Always Sensitive": (Tag.AlwaysSensitive, ItemType.Boolean),  # 1.4
    "Extractable": (Tag.Extractable, ItemType.Boolean),  # 1.4
    "Never Extractable": (Tag.NeverExtractable, ItemType.Boolean),  # 1.4
}

_E = TypeVar("_E", bound=enum.IntEnum)
_FLAG_SEPARATORS = re.compile(r"[\s|]+")


def member(cls: type[_E], name: str) -> _E:
    """Look up a member by its XML name; raises KeyError (names that are keywords end in ``_``)."""
    return cls[name + "_" if keyword.iskeyword(name) else name]


def parse_mask(cls: type[enum.IntFlag], text: str) -> int:
    """Parse a mask written as flag names (``"Encrypt Decrypt"``, ``"Sign|Verify"``) or a number.

    Raises KeyError for an unknown flag name and ValueError for an empty value.
    """
    words = [w for w in _FLAG_SEPARATORS.split(text.strip()) if w]
    if not words:
        raise ValueError("empty mask value")
    value = 0
    for word in words:
        value |= int(word, 0) if word[0].isdigit() else cls[word].value
    return value
