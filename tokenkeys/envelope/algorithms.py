"""OID tables and the small algorithm structures (content cipher, OAEP, ECC-CMS-SharedInfo).

Tables, not chains of ifs: adding an algorithm is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes

from tokenkeys.errors import EnvelopeMalformed, MechanismUnsupported
from tokenkeys.i18n import _

ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
P_SPECIFIED = "1.2.840.113549.1.1.9"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"

CONTENT_TYPE_NAMES = {
    ID_DATA: "id-data",
    "1.2.840.113549.1.7.2": "id-signedData",
    ID_ENVELOPED_DATA: "id-envelopedData",
    "1.2.840.113549.1.7.5": "id-digestedData",
    "1.2.840.113549.1.7.6": "id-encryptedData",
    "1.2.840.113549.1.9.16.1.2": "id-ct-authData",
    ID_AUTH_ENVELOPED_DATA: "id-ct-authEnvelopedData",
}

# digest OID -> (short name, cryptography hash class)
DIGESTS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "1.3.14.3.2.26": ("sha1", hashes.SHA1),
    "2.16.840.1.101.3.4.2.4": ("sha224", hashes.SHA224),
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
}
DIGEST_OID_BY_NAME = {name: oid for oid, (name, _) in DIGESTS.items()}

# RFC 5753 / SEC 1 key agreement schemes -> KDF digest OID. The cofactor
# variants are equivalent on P-256/P-384 (cofactor 1).
ECDH_SCHEMES: dict[str, str] = {
    "1.3.133.16.840.63.0.2": "1.3.14.3.2.26",  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.132.1.11.0": "2.16.840.1.101.3.4.2.4",  # dhSinglePass-stdDH-sha224kdf-scheme
    "1.3.132.1.11.1": "2.16.840.1.101.3.4.2.1",  # dhSinglePass-stdDH-sha256kdf-scheme
    "1.3.132.1.11.2": "2.16.840.1.101.3.4.2.2",  # dhSinglePass-stdDH-sha384kdf-scheme
    "1.3.132.1.11.3": "2.16.840.1.101.3.4.2.3",  # dhSinglePass-stdDH-sha512kdf-scheme
    "1.3.133.16.840.63.0.3": "1.3.14.3.2.26",  # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.14.0": "2.16.840.1.101.3.4.2.4",
    "1.3.132.1.14.1": "2.16.840.1.101.3.4.2.1",
    "1.3.132.1.14.2": "2.16.840.1.101.3.4.2.2",
    "1.3.132.1.14.3": "2.16.840.1.101.3.4.2.3",
}
ECDH_SCHEME_BY_DIGEST = {"sha1": "1.3.133.16.840.63.0.2", "sha224": "1.3.132.1.11.0",
                         "sha256": "1.3.132.1.11.1", "sha384": "1.3.132.1.11.2",
                         "sha512": "1.3.132.1.11.3"}

# id-aes*-wrap -> KEK length in bytes
AES_WRAP: dict[str, int] = {
    "2.16.840.1.101.3.4.1.5": 16,
    "2.16.840.1.101.3.4.1.25": 24,
    "2.16.840.1.101.3.4.1.45": 32,
}

# content cipher OID -> (mode, key length in bytes)
CONTENT_CIPHERS: dict[str, tuple[str, int]] = {
    "2.16.840.1.101.3.4.1.2": ("cbc", 16),
    "2.16.840.1.101.3.4.1.22": ("cbc", 24),
    "2.16.840.1.101.3.4.1.42": ("cbc", 32),
    "2.16.840.1.101.3.4.1.6": ("gcm", 16),
    "2.16.840.1.101.3.4.1.26": ("gcm", 24),
    "2.16.840.1.101.3.4.1.46": ("gcm", 32),
}
CONTENT_CIPHER_OID = {(mode, n): oid for oid, (mode, n) in CONTENT_CIPHERS.items()}

CURVE_NAMES = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084: aes-ICVlen defaults to 12, so it is written explicitly for 16."""

    _fields = [  # noqa: RUF012 - asn1crypto schema
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5753 section 7.2, input to the X9.63 KDF."""

    _fields = [  # noqa: RUF012 - asn1crypto schema
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def ecc_shared_info(wrap_alg: cms.KeyEncryptionAlgorithm, ukm: bytes | None,
                    kek_len: int) -> bytes:
    fields: dict[str, object] = {"key_info": wrap_alg,
                                 "supp_pub_info": (kek_len * 8).to_bytes(4, "big")}
    if ukm is not None:
        fields["entity_u_info"] = ukm
    return bytes(EccCmsSharedInfo(fields).dump())


@dataclass(frozen=True)
class ContentCipher:
    mode: str  # "cbc" | "gcm"
    key_len: int
    iv: bytes  # CBC IV or GCM nonce
    tag_len: int = 16

    @property
    def name(self) -> str:
        return f"aes-{self.key_len * 8}-{self.mode}"


def parse_content_cipher(raw: bytes) -> ContentCipher:
    """contentEncryptionAlgorithm AlgorithmIdentifier -> ContentCipher."""
    try:
        alg = algos.AlgorithmIdentifier.load(raw, strict=True)
        oid = alg["algorithm"].dotted
        params = alg["parameters"]
        known = CONTENT_CIPHERS.get(oid)
        if known is None:
            raise MechanismUnsupported(_("content cipher {oid}").format(oid=oid),
                                       ["aes-128/192/256 CBC and GCM"], by="tokenkeys")
        mode, key_len = known
        if isinstance(params, core.Void):
            raise EnvelopeMalformed(_("content cipher {oid} has no parameters").format(oid=oid))
        if mode == "cbc":
            iv = bytes(core.OctetString.load(params.dump(), strict=True).native)
            if len(iv) != 16:
                raise EnvelopeMalformed(_("AES-CBC IV is not 16 bytes"))
            return ContentCipher("cbc", key_len, iv, 0)
        gcm = GCMParameters.load(params.dump(), strict=True)
        nonce = bytes(gcm["aes_nonce"].native)
        tag_len = int(gcm["aes_icvlen"].native)
    except (MechanismUnsupported, EnvelopeMalformed):
        raise
    except Exception:  # asn1crypto raises ValueError/TypeError/... on bad input
        raise EnvelopeMalformed(
            _("malformed content encryption algorithm (its parameters do not decode)")) from None
    if not 12 <= tag_len <= 16:
        raise EnvelopeMalformed(_("AES-GCM tag length {tag_len} is outside 12..16")
                                .format(tag_len=tag_len))
    if not 8 <= len(nonce) <= 64:
        raise EnvelopeMalformed(_("AES-GCM nonce length {count} is not supported")
                                .format(count=len(nonce)))
    return ContentCipher("gcm", key_len, nonce, tag_len)


def encode_content_cipher(c: ContentCipher) -> bytes:
    oid = CONTENT_CIPHER_OID[(c.mode, c.key_len)]
    params: core.Asn1Value
    if c.mode == "cbc":
        params = core.OctetString(c.iv)
    else:
        params = GCMParameters({"aes_nonce": c.iv, "aes_icvlen": c.tag_len})
    return bytes(algos.AlgorithmIdentifier({"algorithm": oid, "parameters": params}).dump())
