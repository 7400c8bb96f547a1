"""RecipientInfo parsing into typed recipients (KeyTrans RSA, KeyAgree ECDH).

asn1crypto parses these small structures; everything it raises on bad input is
turned into EnvelopeMalformed here, so callers only see the error tree.
Content-key recovery is in cek.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import ClassVar

from asn1crypto import cms, core
from asn1crypto import x509 as a1x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.identity_view import IdentityView, format_name
from tokenkeys.errors import EnvelopeIntegrity, EnvelopeMalformed, TokenKeysError
from tokenkeys.i18n import _
from tokenkeys.keyalg import OaepPadding


class NotMine(Exception):
    """Internal: this identity cannot open this recipient; try the next."""


class _Unsupported(Exception):
    """Internal: why a recipient's algorithms cannot be used (naming the OID)."""


# What a decryption that was performed says about a bad ciphertext: the uniform
# EnvelopeIntegrity of a device key (drivers' DecryptFailed), or ValueError from a
# software key. Anything else (TokenNotFound, DeviceError, KeyNotFound, PIN) is raised.
PADDING_OUTCOME = (EnvelopeIntegrity, ValueError)


@dataclass(frozen=True)
class Rid:
    """A recipient identifier: issuer and serial number, or a subject key identifier."""

    issuer: a1x509.Name | None = None
    serial: int | None = None
    ski: bytes | None = None

    def text(self) -> str:
        return self._text

    @cached_property
    def _text(self) -> str:  # a batch's envelopes share their Rid (see _rid)
        if self.issuer is not None:
            return f"issuer {format_name(self.issuer)},serial=0x{self.serial or 0:x}"
        return f"ski={(self.ski or b'').hex()}"

    def names(self, iv: IdentityView) -> bool:
        if self.ski is not None:
            return self.ski in iv.skis
        if self.issuer is not None and iv.issuer is not None:
            try:
                if iv.serial != self.serial:
                    return False
                # Same DER is the common case; RFC 5280 name comparison is slow.
                return iv.issuer.dump() == self.issuer.dump() or bool(iv.issuer == self.issuer)
            except Exception:  # asn1crypto name normalisation on odd strings
                return False
        return False

    def key(self) -> tuple[bytes, int] | bytes | None:
        """(issuer DER, serial) or the SKI: what recipient_ids reports."""
        if self.issuer is not None and self.serial is not None:
            return (self.issuer.dump(), self.serial)
        return self.ski


@dataclass
class Opened:
    cek: bytes
    recipient: KeyTransRecipient | KeyAgreeRecipient
    view: IdentityView
    genuine: bool = True  # False when the v1.5 countermeasure substituted a random key


@dataclass
class KeyTransRecipient:
    """A KeyTransRecipientInfo with RSA PKCS#1 v1.5 or RSAES-OAEP."""

    rid: Rid
    encrypted_key: bytes
    padding: PKCS1v15 | OaepPadding
    transport: str  # e.g. rsaes-oaep-sha256

    @property
    def detectable(self) -> bool:
        """Does a wrong key fail visibly? OAEP does; v1.5 hides it (countermeasure)."""
        return isinstance(self.padding, OaepPadding)

    def rid_text(self) -> str:
        return self.rid.text()

    def describe(self) -> str:
        return f"{self.rid_text()} [{self.transport}]"

    def compatible(self, iv: IdentityView) -> bool:
        return iv.is_rsa

    def matches(self, iv: IdentityView) -> bool:
        return self.compatible(iv) and self.rid.names(iv)

    def weak_match(self, iv: IdentityView) -> bool:
        """A certificate-less RSA identity of the right size for a v1.5 recipient."""
        pub = iv.identity.public_key
        return (not self.detectable and iv.issuer is None and isinstance(pub, rsa.RSAPublicKey)
                and (pub.key_size + 7) // 8 == len(self.encrypted_key))

    def transport_for(self, iv: IdentityView) -> str:
        return self.transport

    def open_with(self, iv: IdentityView, cek_len: int) -> Opened:
        if isinstance(self.padding, PKCS1v15):
            return self._open_v15(iv, cek_len)
        try:
            key = iv.identity.decrypt(self.encrypted_key, self.padding)
        except PADDING_OUTCOME:
            raise NotMine from None
        if len(key) != cek_len:
            raise NotMine
        return Opened(key, self, iv)

    def _open_v15(self, iv: IdentityView, cek_len: int) -> Opened:
        # Bleichenbacher countermeasure (RFC 3218 sec. 2.3.2): when the decryption
        # was performed and its padding (or length) is bad, carry on with a random
        # key, so it only shows as an integrity error of the content. Only that
        # outcome is hidden: a device that fails (removed, session lost, key gone)
        # says nothing about the ciphertext and is raised.
        fallback = os.urandom(cek_len)
        try:
            key = iv.identity.decrypt(self.encrypted_key, self.padding)
        except PADDING_OUTCOME:
            key = b""
        genuine = len(key) == cek_len
        return Opened(key if genuine else fallback, self, iv, genuine)


@dataclass(frozen=True)
class EcdhAgreement:
    """What the keys of one KeyAgreeRecipientInfo share: the originator's ephemeral
    point, the X9.63 KDF and the AES key wrap."""

    point: bytes
    kdf_hash: type[hashes.HashAlgorithm]
    kek_len: int
    shared_info: bytes  # ECC-CMS-SharedInfo
    transport: str  # e.g. sha256-kdf+aes256-wrap


@dataclass
class KeyAgreeRecipient:
    """One recipient key of a KeyAgreeRecipientInfo (ephemeral-static ECDH)."""

    rid: Rid
    encrypted_key: bytes
    agreement: EcdhAgreement
    detectable: ClassVar[bool] = True  # the RFC 3394 integrity check fails for a wrong key

    @property
    def transport(self) -> str:
        return self.agreement.transport

    def rid_text(self) -> str:
        return self.rid.text()

    def describe(self) -> str:
        return f"{self.rid_text()} [{self.transport}]"

    def compatible(self, iv: IdentityView) -> bool:
        return isinstance(iv.identity.public_key, ec.EllipticCurvePublicKey)

    def matches(self, iv: IdentityView) -> bool:
        return self.compatible(iv) and self.rid.names(iv)

    def transport_for(self, iv: IdentityView) -> str:
        pub = iv.identity.public_key
        if isinstance(pub, ec.EllipticCurvePublicKey):
            curve = alg.CURVE_NAMES.get(pub.curve.name, pub.curve.name)
            return f"ecdh-{curve}-{self.transport}"
        return self.transport

    def open_with(self, iv: IdentityView, cek_len: int) -> Opened:
        a = self.agreement
        kek = X963KDF(algorithm=a.kdf_hash(), length=a.kek_len,
                      sharedinfo=a.shared_info).derive(self._shared_secret(iv))
        try:
            key = aes_key_unwrap(kek, self.encrypted_key)
        except Exception:
            raise NotMine from None  # RFC 3394 integrity check failed: not our key
        if len(key) != cek_len:
            raise NotMine
        return Opened(key, self, iv)

    def _shared_secret(self, iv: IdentityView) -> bytes:
        pub = iv.identity.public_key
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise NotMine
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(pub.curve, self.agreement.point)
        except Exception:
            raise NotMine from None  # originator key is not on this identity's curve
        try:
            return iv.identity.derive_ecdh(peer)
        except ValueError:
            raise NotMine from None  # software key: point refused


@dataclass
class UnsupportedRecipient:
    """A recipient tokenkeys cannot open, kept to say why (the reason names the OID)."""

    kind: str  # the RecipientInfo choice: ktri, kari, kekri, pwri, ori
    reason: str
    rid: Rid | None = None

    def rid_text(self) -> str:
        return self.rid.text() if self.rid is not None else f"{self.kind} recipient"

    def describe(self) -> str:
        return f"{self.rid_text()} [{self.reason}]"

    def compatible(self, iv: IdentityView) -> bool:
        if self.kind == "ktri":
            return iv.is_rsa
        if self.kind == "kari":
            return isinstance(iv.identity.public_key, ec.EllipticCurvePublicKey)
        return False

    def matches(self, iv: IdentityView) -> bool:
        return self.compatible(iv) and self.rid is not None and self.rid.names(iv)


Recipient = KeyTransRecipient | KeyAgreeRecipient | UnsupportedRecipient


def parse_recipient_infos(raws: list[bytes]) -> list[Recipient]:
    """RecipientInfo encodings (framed and counted by recipient_frame) -> Recipients."""
    out: list[Recipient] = []
    try:
        for raw in raws:
            info = cms.RecipientInfo.load(raw)
            if info.name == "ktri":
                out.append(_parse_ktri(info.chosen))
            elif info.name == "kari":
                out.extend(_parse_kari(info.chosen))
            else:
                out.append(UnsupportedRecipient(info.name, _("{name} recipient info")
                                                           .format(name=info.name)))
    except TokenKeysError:
        raise
    except Exception:
        raise EnvelopeMalformed(_("malformed RecipientInfos")) from None
    if not out:
        raise EnvelopeMalformed(_("envelope has no recipients"))
    return out


# A batch repeats its recipient identifiers and algorithms byte for byte: each
# distinct encoding is parsed once. The cached values are never changed once built.
_SEEN = 256


def _rid(rid: core.Choice) -> Rid:
    return _rid_of(isinstance(rid, cms.KeyAgreementRecipientIdentifier), rid.dump())


@lru_cache(_SEEN)
def _rid_of(agreement: bool, raw: bytes) -> Rid:
    kind = cms.KeyAgreementRecipientIdentifier if agreement else cms.RecipientIdentifier
    rid = kind.load(raw)
    if rid.name == "issuer_and_serial_number":
        found = Rid(issuer=rid.chosen["issuer"], serial=int(rid.chosen["serial_number"].native))
    elif rid.name == "subject_key_identifier":
        found = Rid(ski=bytes(rid.chosen.native))
    else:
        found = Rid(ski=bytes(rid.chosen["subject_key_identifier"].native))  # rKeyId (KARI)
    found.key()  # parsed whole now, not later by two threads at once
    return found


def _parse_ktri(ktri: cms.KeyTransRecipientInfo) -> KeyTransRecipient | UnsupportedRecipient:
    rid = _rid(ktri["rid"])
    encrypted_key = bytes(ktri["encrypted_key"].native)
    padding = _rsa_padding_of(ktri["key_encryption_algorithm"].dump())
    if isinstance(padding, str):
        return UnsupportedRecipient("ktri", padding, rid)
    return KeyTransRecipient(rid, encrypted_key, *padding)


@lru_cache(_SEEN)
def _rsa_padding_of(raw: bytes) -> tuple[PKCS1v15 | OaepPadding, str] | str:
    """The padding and transport name, or why the algorithm is not supported."""
    try:
        return _rsa_padding(cms.KeyEncryptionAlgorithm.load(raw))
    except _Unsupported as exc:
        return str(exc)


def _rsa_padding(kea: cms.KeyEncryptionAlgorithm) -> tuple[PKCS1v15 | OaepPadding, str]:
    oid = kea["algorithm"].dotted
    if oid == alg.RSA_ENCRYPTION:
        return PKCS1v15(), "rsa-pkcs1v15"
    if oid != alg.RSAES_OAEP:
        raise _Unsupported(_("key transport {oid}").format(oid=oid))
    return _oaep_padding(kea["parameters"])


def _oaep_padding(params: core.Asn1Value) -> tuple[OaepPadding, str]:
    hash_oid = mgf_hash_oid = alg.DIGEST_OID_BY_NAME["sha1"]  # absent parameters: SHA-1
    label = b""
    if not isinstance(params, (core.Void, core.Null)):
        hash_oid = params["hash_algorithm"]["algorithm"].dotted
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].dotted != alg.MGF1:
            raise _Unsupported(_("OAEP mask generation {dotted}")
                               .format(dotted=mgf['algorithm'].dotted))
        mgf_hash_oid = mgf["parameters"]["algorithm"].dotted
        psrc = params["p_source_algorithm"]
        if psrc["algorithm"].dotted != alg.P_SPECIFIED:
            raise _Unsupported(f"OAEP pSourceFunc {psrc['algorithm'].dotted}")
        label = bytes(psrc["parameters"].native or b"")
    hname, hcls = _oaep_digest(hash_oid)
    mname, mcls = _oaep_digest(mgf_hash_oid)
    transport = f"rsaes-oaep-{hname}" + (f"-mgf1-{mname}" if mname != hname else "")
    transport += "-label" if label else ""
    return OaepPadding(hcls(), mcls(), label or None), transport


def _oaep_digest(oid: str) -> tuple[str, type[hashes.HashAlgorithm]]:
    found = alg.DIGESTS.get(oid)
    if found is None:
        raise _Unsupported(f"OAEP digest {oid}")
    return found


def _parse_kari(kari: cms.KeyAgreeRecipientInfo) -> list[Recipient]:
    agreement: EcdhAgreement | None = None
    reason = ""
    try:
        agreement = _ecdh_agreement(kari)
    except _Unsupported as exc:
        reason = str(exc)
    out: list[Recipient] = []
    for rek in kari["recipient_encrypted_keys"]:
        rid = _rid(rek["rid"])
        encrypted_key = bytes(rek["encrypted_key"].native)
        out.append(KeyAgreeRecipient(rid, encrypted_key, agreement) if agreement is not None
                   else UnsupportedRecipient("kari", reason, rid))
    if not out:
        raise EnvelopeMalformed(_("key agreement recipient info lists no keys"))
    return out


def _ecdh_agreement(kari: cms.KeyAgreeRecipientInfo) -> EcdhAgreement:
    orig = kari["originator"]
    if orig.name != "originator_key":
        raise _Unsupported(_("static-static ECDH (originator is not an ephemeral key)"))
    scheme = _ecdh_scheme_of(kari["key_encryption_algorithm"].dump(), kari["ukm"].native)
    if isinstance(scheme, str):
        raise _Unsupported(scheme)
    return replace(scheme, point=_ephemeral_point(orig.chosen))


@lru_cache(_SEEN)
def _ecdh_scheme_of(raw_kea: bytes, ukm: bytes | None) -> EcdhAgreement | str:
    """The agreement without its point (the KDF, the key wrap, the shared info), or
    why it is not supported."""
    kea = cms.KeyEncryptionAlgorithm.load(raw_kea)
    scheme = kea["algorithm"].dotted
    if scheme not in alg.ECDH_SCHEMES:
        return _("key agreement {scheme}").format(scheme=scheme)
    wrap = cms.KeyEncryptionAlgorithm.load(kea["parameters"].dump())
    wrap_oid = wrap["algorithm"].dotted
    kek_len = alg.AES_WRAP.get(wrap_oid)
    hname, hcls = alg.DIGESTS[alg.ECDH_SCHEMES[scheme]]
    if kek_len is None:
        return _("key wrap {wrap_oid}").format(wrap_oid=wrap_oid)
    shared_info = alg.ecc_shared_info(wrap, ukm, kek_len)
    return EcdhAgreement(b"", hcls, kek_len, shared_info, f"{hname}-kdf+aes{kek_len * 8}-wrap")


def _ephemeral_point(okey: cms.OriginatorPublicKey) -> bytes:
    if okey["algorithm"]["algorithm"].dotted != alg.EC_PUBLIC_KEY:
        raise EnvelopeMalformed(_("originator key is not an EC public key"))
    bits = okey["public_key"].contents
    if not bits or bits[0] != 0:
        raise EnvelopeMalformed(_("malformed originator public key"))
    return bytes(bits[1:])
