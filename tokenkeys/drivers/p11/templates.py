"""The one template module: key pairs, certificates, secret keys, ECDH secrets.

Usage attributes are always explicit: SoftHSM defaults absent ones to true.
"""

from __future__ import annotations

from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys import keyalg
from tokenkeys.drivers.base import PublicKey
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.port import Mech, Template
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _
from tokenkeys.types import KeySpec, KeyType

PRIVATE_USAGE: dict[KeyType, Template] = {
    KeyType.RSA: {ck.CKA_DECRYPT: True, ck.CKA_SIGN: True, ck.CKA_UNWRAP: True,
                  ck.CKA_DERIVE: False},
    KeyType.EC: {ck.CKA_DERIVE: True, ck.CKA_SIGN: True, ck.CKA_DECRYPT: False,
                 ck.CKA_UNWRAP: False},
}
PUBLIC_USAGE: dict[KeyType, Template] = {
    KeyType.RSA: {ck.CKA_ENCRYPT: True, ck.CKA_VERIFY: True, ck.CKA_WRAP: True},
    KeyType.EC: {ck.CKA_VERIFY: True, ck.CKA_ENCRYPT: False, ck.CKA_WRAP: False},
}
# Cards that take a decryption key only (OpenPGP slot 02).
DECRYPT_ONLY: dict[KeyType, tuple[Template, Template]] = {
    KeyType.RSA: ({ck.CKA_ENCRYPT: True}, {ck.CKA_DECRYPT: True}),
    KeyType.EC: ({}, {ck.CKA_DERIVE: True}),
}
KEYGEN_MECH = {KeyType.RSA: ck.CKM_RSA_PKCS_KEY_PAIR_GEN, KeyType.EC: ck.CKM_EC_KEY_PAIR_GEN}
CKK = {KeyType.RSA: ck.CKK_RSA, KeyType.EC: ck.CKK_EC}
OAEP_HASH: dict[str, tuple[int, int]] = {
    "sha1": (ck.CKM_SHA_1, ck.CKG_MGF1_SHA1),
    "sha224": (ck.CKM_SHA224, ck.CKG_MGF1_SHA224),
    "sha256": (ck.CKM_SHA256, ck.CKG_MGF1_SHA256),
    "sha384": (ck.CKM_SHA384, ck.CKG_MGF1_SHA384),
    "sha512": (ck.CKM_SHA512, ck.CKG_MGF1_SHA512),
}


def keygen(spec: KeySpec, key_id: bytes, *, decrypt_only: bool = False
           ) -> tuple[Mech, Template, Template]:
    """(mechanism, public, private) for a token key pair labelled spec.label."""
    alg = keyalg.info(spec.algorithm)
    kt = alg.key_type
    public, private = key_pair(kt, spec.label, key_id, extractable=spec.shareable,
                               decrypt_only=decrypt_only)
    if alg.curve is not None:
        public[ck.CKA_EC_PARAMS] = alg.curve.params
    else:
        public[ck.CKA_MODULUS_BITS] = alg.bits
        public[ck.CKA_PUBLIC_EXPONENT] = b"\x01\x00\x01"
    return Mech(KEYGEN_MECH[kt]), public, private


def key_pair(kt: KeyType, label: str, key_id: bytes, *, extractable: bool,
             decrypt_only: bool = False) -> tuple[Template, Template]:
    """(public, private) token templates with the usage attributes, for generation
    and for a key arriving by import or transport; the caller adds the key material."""
    common: Template = {ck.CKA_TOKEN: True, ck.CKA_LABEL: label, ck.CKA_ID: key_id,
                        ck.CKA_KEY_TYPE: CKK[kt]}
    pub_use, priv_use = DECRYPT_ONLY[kt] if decrypt_only else (PUBLIC_USAGE[kt], PRIVATE_USAGE[kt])
    public: Template = {**common, ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_PRIVATE: False, **pub_use}
    private: Template = {
        **common, ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_PRIVATE: True,
        ck.CKA_SENSITIVE: True, ck.CKA_EXTRACTABLE: extractable, **priv_use,
    }
    return public, private


def public_key(public: PublicKey, label: str, key_id: bytes, *, decrypt_only: bool = False
               ) -> Template:
    """A token public key object holding `public` (a key arriving, or one rebuilt)."""
    kt = KeyType.RSA if isinstance(public, rsa.RSAPublicKey) else KeyType.EC
    pub, _private = key_pair(kt, label, key_id, extractable=False, decrypt_only=decrypt_only)
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        pub[ck.CKA_MODULUS] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        pub[ck.CKA_PUBLIC_EXPONENT] = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return pub
    curve = keyalg.CURVES.get(public.curve.name)
    if curve is None:
        raise UsageError(_("EC curve {name} is not one tokenkeys keeps")
                         .format(name=public.curve.name))
    # The private key's curve comes from the PKCS#8 (SoftHSM2: CKA_EC_PARAMS in an
    # unwrap template is CKR_ATTRIBUTE_READ_ONLY): only the public key names it.
    pub[ck.CKA_EC_PARAMS] = curve.params
    point = public.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    pub[ck.CKA_EC_POINT] = OctetString(point).dump()  # DER, as the spec says
    return pub


def certificate(label: str, key_id: bytes, cert: x509.Certificate) -> Template:
    return {
        ck.CKA_CLASS: ck.CKO_CERTIFICATE,
        ck.CKA_CERTIFICATE_TYPE: ck.CKC_X_509,
        ck.CKA_TOKEN: True,
        ck.CKA_PRIVATE: False,
        ck.CKA_LABEL: label,
        ck.CKA_ID: key_id,
        ck.CKA_SUBJECT: cert.subject.public_bytes(),
        ck.CKA_ISSUER: cert.issuer.public_bytes(),
        # CKA_SERIAL_NUMBER is the DER INTEGER, not the bare value.
        ck.CKA_SERIAL_NUMBER: der_integer(cert.serial_number),
        ck.CKA_VALUE: cert.public_bytes(serialization.Encoding.DER),
    }


def aes_key(bits: int = 256, *, token: bool = False, extractable: bool = False,
            label: str = "", for_unwrap: bool = False,
            value: bytes | None = None) -> tuple[Mech, Template]:
    """A secret AES key for wrapping (session object unless `token`). `for_unwrap`:
    the template of C_UnwrapKey, where the length comes from the data (SoftHSM2
    refuses CKA_VALUE_LEN there with CKR_ATTRIBUTE_READ_ONLY). `value`: the
    template of C_CreateObject for a key with that value (no CKA_VALUE_LEN)."""
    tpl: Template = {
        ck.CKA_CLASS: ck.CKO_SECRET_KEY, ck.CKA_KEY_TYPE: ck.CKK_AES, ck.CKA_VALUE_LEN: bits // 8,
        ck.CKA_TOKEN: token, ck.CKA_PRIVATE: True, ck.CKA_SENSITIVE: True,
        ck.CKA_EXTRACTABLE: extractable, ck.CKA_WRAP: True, ck.CKA_UNWRAP: True,
        ck.CKA_ENCRYPT: False, ck.CKA_DECRYPT: False,
    }
    if label:
        tpl[ck.CKA_LABEL] = label
    if for_unwrap or value is not None:
        del tpl[ck.CKA_VALUE_LEN]
    if value is not None:
        tpl[ck.CKA_VALUE] = value
    return Mech(ck.CKM_AES_KEY_GEN), tpl


def ecdh_secret(size: int) -> Template:
    """The raw shared secret Z of CKM_ECDH1_DERIVE, readable, in a session object."""
    return {
        ck.CKA_CLASS: ck.CKO_SECRET_KEY, ck.CKA_KEY_TYPE: ck.CKK_GENERIC_SECRET,
        ck.CKA_VALUE_LEN: size, ck.CKA_TOKEN: False, ck.CKA_SENSITIVE: False,
        ck.CKA_EXTRACTABLE: True,
    }


def der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + (
        n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return b"\x02" + length + body
