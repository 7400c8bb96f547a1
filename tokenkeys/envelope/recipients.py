"""RecipientInfo parsing and content-key recovery (KeyTrans RSA, KeyAgree ECDH).

asn1crypto parses these small structures; everything it raises on bad input is
turned into EnvelopeMalformed here, so callers only see the error tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from asn1crypto import cms, core
from asn1crypto import x509 as a1x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.identity import OaepPadding
from tokenkeys.envelope.identity_view import IdentityView, format_name
from tokenkeys.errors import (
    EnvelopeIntegrity,
    EnvelopeMalformed,
    MechanismUnsupported,
    NoMatchingRecipient,
    TokenKeysError,
)


class NotMine(Exception):
    """Internal: this identity cannot open this recipient; try the next."""


# What a decryption that was performed says about a bad ciphertext: the uniform
# EnvelopeIntegrity of a device key (drivers' DecryptFailed), or ValueError from a
# software key. Anything else (TokenNotFound, DeviceError, KeyNotFound, PIN) is raised.
PADDING_OUTCOME = (EnvelopeIntegrity, ValueError)



@dataclass
class Recipient:
    """One way into the envelope: a KTRI, one key of a KARI, or something unsupported."""

    rid_issuer: a1x509.Name | None = None
    rid_serial: int | None = None
    rid_ski: bytes | None = None
    unsupported: str | None = None  # why it cannot be opened, naming the OID
    kind: str = "other"
    transport: str = "unknown"
    detectable: bool = False  # does a wrong key fail visibly (OAEP, key-unwrap)?
    extra: dict[str, object] = field(default_factory=dict)

    def rid_text(self) -> str:
        if self.rid_issuer is not None:
            return f"issuer {format_name(self.rid_issuer)},serial=0x{self.rid_serial or 0:x}"
        if self.rid_ski is not None:
            return f"ski={self.rid_ski.hex()}"
        return f"{self.kind} recipient"

    def describe(self) -> str:
        return f"{self.rid_text()} [{self.unsupported or self.transport}]"

    def matches(self, iv: IdentityView) -> bool:
        if not self.compatible(iv):
            return False
        if self.rid_ski is not None:
            return self.rid_ski in iv.skis
        if self.rid_issuer is not None and iv.issuer is not None:
            try:
                if iv.serial != self.rid_serial:
                    return False
                # Same DER is the common case; RFC 5280 name comparison is slow.
                return iv.issuer.dump() == self.rid_issuer.dump() or bool(
                    iv.issuer == self.rid_issuer)
            except Exception:  # asn1crypto name normalisation on odd strings
                return False
        return False

    def compatible(self, iv: IdentityView) -> bool:
        if self.kind == "ktri":
            return iv.is_rsa
        if self.kind == "kari":
            pub = iv.identity.public_key
            return isinstance(pub, ec.EllipticCurvePublicKey)
        return False

    def weak_match(self, iv: IdentityView) -> bool:
        """A certificate-less RSA identity of the right size for an issuer/serial v1.5 recipient."""
        pub = iv.identity.public_key
        enc = self.extra.get("encrypted_key", b"")
        return (self.kind == "ktri" and not self.detectable and iv.issuer is None
                and isinstance(pub, rsa.RSAPublicKey) and isinstance(enc, bytes)
                and (pub.key_size + 7) // 8 == len(enc))

    def transport_for(self, iv: IdentityView) -> str:
        pub = iv.identity.public_key
        if self.kind == "kari" and isinstance(pub, ec.EllipticCurvePublicKey):
            curve = alg.CURVE_NAMES.get(pub.curve.name, pub.curve.name)
            return f"ecdh-{curve}-{self.transport}"
        return self.transport

    # -- content-key recovery ---------------------------------------------------------
    def unwrap(self, iv: IdentityView, cek_len: int) -> bytes:
        if self.kind == "ktri":
            return self._unwrap_rsa(iv, cek_len)
        if self.kind == "kari":
            return self._unwrap_ecdh(iv, cek_len)
        raise NotMine

    def _unwrap_rsa(self, iv: IdentityView, cek_len: int) -> bytes:
        padding = self.extra["padding"]
        enc = self.extra["encrypted_key"]
        assert isinstance(padding, AsymmetricPadding) and isinstance(enc, bytes)
        if isinstance(padding, PKCS1v15):
            # Bleichenbacher countermeasure (RFC 3218 sec. 2.3.2): when the
            # decryption was performed and its padding (or length) is bad, carry on
            # with a random key, so it only shows as an integrity error of the
            # content. Only that outcome is hidden: a device that fails (removed,
            # session lost, key gone) says nothing about the ciphertext and is raised.
            fallback = os.urandom(cek_len)
            try:
                key = iv.identity.decrypt(enc, padding)
            except PADDING_OUTCOME:
                key = b""
            genuine = len(key) == cek_len
            self.extra["v15_failed"] = not genuine
            return key if genuine else fallback
        try:
            key = iv.identity.decrypt(enc, padding)
        except PADDING_OUTCOME:
            raise NotMine from None
        if len(key) != cek_len:
            raise NotMine
        return key

    def _unwrap_ecdh(self, iv: IdentityView, cek_len: int) -> bytes:
        pub = iv.identity.public_key
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        point, shared_info, kdf_hash, kek_len, enc = (
            self.extra["point"], self.extra["shared_info"], self.extra["kdf_hash"],
            self.extra["kek_len"], self.extra["encrypted_key"])
        assert isinstance(point, bytes) and isinstance(shared_info, bytes)
        assert isinstance(kek_len, int) and isinstance(enc, bytes) and isinstance(kdf_hash, type)
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(pub.curve, point)
        except Exception:
            raise NotMine from None  # originator key is not on this identity's curve
        try:
            z = iv.identity.derive_ecdh(peer)
        except ValueError:
            raise NotMine from None  # software key: point refused
        kek = X963KDF(algorithm=kdf_hash(), length=kek_len, sharedinfo=shared_info).derive(z)
        try:
            key = aes_key_unwrap(kek, enc)
        except Exception:
            raise NotMine from None  # RFC 3394 integrity check failed: not our key
        if len(key) != cek_len:
            raise NotMine
        return key


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
                out.append(Recipient(kind=info.name, unsupported=f"{info.name} recipient info"))
    except TokenKeysError:
        raise
    except Exception:
        raise EnvelopeMalformed("malformed RecipientInfos") from None
    if not out:
        raise EnvelopeMalformed("envelope has no recipients")
    return out


def _set_rid(r: Recipient, rid: core.Choice) -> None:
    if rid.name == "issuer_and_serial_number":
        r.rid_issuer = rid.chosen["issuer"]
        r.rid_serial = int(rid.chosen["serial_number"].native)
    elif rid.name == "subject_key_identifier":
        r.rid_ski = bytes(rid.chosen.native)
    else:  # r_key_id (KARI)
        r.rid_ski = bytes(rid.chosen["subject_key_identifier"].native)


def _digest(oid: str) -> tuple[str, type]:
    found = alg.DIGESTS.get(oid)
    if found is None:
        raise NotMine(f"digest {oid}")
    return found


def _parse_ktri(ktri: cms.KeyTransRecipientInfo) -> Recipient:
    r = Recipient(kind="ktri")
    _set_rid(r, ktri["rid"])
    r.extra["encrypted_key"] = bytes(ktri["encrypted_key"].native)
    kea = ktri["key_encryption_algorithm"]
    oid = kea["algorithm"].dotted
    if oid == alg.RSA_ENCRYPTION:
        r.transport, r.extra["padding"] = "rsa-pkcs1v15", PKCS1v15()
        return r
    if oid != alg.RSAES_OAEP:
        r.unsupported = f"key transport {oid}"
        return r
    params = kea["parameters"]
    hash_oid = mgf_hash_oid = alg.DIGEST_OID_BY_NAME["sha1"]
    label = b""
    if not isinstance(params, (core.Void, core.Null)):
        hash_oid = params["hash_algorithm"]["algorithm"].dotted
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].dotted != alg.MGF1:
            r.unsupported = f"OAEP mask generation {mgf['algorithm'].dotted}"
            return r
        mgf_hash_oid = mgf["parameters"]["algorithm"].dotted
        psrc = params["p_source_algorithm"]
        if psrc["algorithm"].dotted != alg.P_SPECIFIED:
            r.unsupported = f"OAEP pSourceFunc {psrc['algorithm'].dotted}"
            return r
        label = bytes(psrc["parameters"].native or b"")
    try:
        hname, hcls = _digest(hash_oid)
        mname, mcls = _digest(mgf_hash_oid)
    except NotMine as exc:
        r.unsupported = f"OAEP {exc}"
        return r
    r.transport = f"rsaes-oaep-{hname}" + (f"-mgf1-{mname}" if mname != hname else "")
    r.transport += "-label" if label else ""
    r.extra["padding"] = OaepPadding(hcls(), mcls(), label or None)
    r.detectable = True
    return r


def _parse_kari(kari: cms.KeyAgreeRecipientInfo) -> list[Recipient]:
    base: dict[str, object] = {}
    unsupported = None
    transport = "ecdh"
    orig = kari["originator"]
    scheme = kari["key_encryption_algorithm"]["algorithm"].dotted
    if orig.name != "originator_key":
        unsupported = "static-static ECDH (originator is not an ephemeral key)"
    elif scheme not in alg.ECDH_SCHEMES:
        unsupported = f"key agreement {scheme}"
    else:
        okey = orig.chosen
        if okey["algorithm"]["algorithm"].dotted != alg.EC_PUBLIC_KEY:
            raise EnvelopeMalformed("originator key is not an EC public key")
        bits = okey["public_key"].contents
        if not bits or bits[0] != 0:
            raise EnvelopeMalformed("malformed originator public key")
        wrap_raw = kari["key_encryption_algorithm"]["parameters"].dump()
        wrap = cms.KeyEncryptionAlgorithm.load(wrap_raw)
        wrap_oid = wrap["algorithm"].dotted
        kek_len = alg.AES_WRAP.get(wrap_oid)
        hname, hcls = alg.DIGESTS[alg.ECDH_SCHEMES[scheme]]
        if kek_len is None:
            unsupported = f"key wrap {wrap_oid}"
        else:
            ukm = kari["ukm"].native if kari["ukm"].native is not None else None
            base = {"point": bytes(bits[1:]), "kdf_hash": hcls, "kek_len": kek_len,
                    "shared_info": alg.ecc_shared_info(wrap, ukm, kek_len)}
            transport = f"{hname}-kdf+aes{kek_len * 8}-wrap"
    out = []
    for rek in kari["recipient_encrypted_keys"]:
        r = Recipient(kind="kari", unsupported=unsupported, transport=transport,
                      detectable=True, extra=dict(base))
        _set_rid(r, rek["rid"])
        r.extra["encrypted_key"] = bytes(rek["encrypted_key"].native)
        out.append(r)
    if not out:
        raise EnvelopeMalformed("key agreement recipient info lists no keys")
    return out


@dataclass
class Opened:
    cek: bytes
    recipient: Recipient
    view: IdentityView

    @property
    def genuine(self) -> bool:
        """False when the v1.5 countermeasure substituted a random key."""
        return not self.recipient.extra.get("v15_failed", False)


def recover_cek(recipients: list[Recipient], views: list[IdentityView], cek_len: int) -> Opened:
    """Try matching identities first, then (only where a miss is detectable) the others."""
    tried: set[tuple[int, int]] = set()
    matched_failure: tuple[Recipient, IdentityView] | None = None
    matched_unsupported: Recipient | None = None

    def attempt(ri: int, vi: int) -> Opened | None:
        tried.add((ri, vi))
        r, v = recipients[ri], views[vi]
        return Opened(r.unwrap(v, cek_len), r, v)

    # 1. identities that the recipient identifier names
    for ri, r in enumerate(recipients):
        for vi, v in enumerate(views):
            if not r.matches(v):
                continue
            if r.unsupported:
                matched_unsupported = matched_unsupported or r
                continue
            try:
                opened = attempt(ri, vi)
            except NotMine:
                matched_failure = matched_failure or (r, v)
                continue
            if opened:
                return opened
    # 2. any compatible identity, but only where a wrong key fails visibly
    for ri, r in enumerate(recipients):
        if r.unsupported or not r.detectable:
            continue
        for vi, v in enumerate(views):
            if (ri, vi) in tried or not r.compatible(v):
                continue
            try:
                opened = attempt(ri, vi)
            except (NotMine, MechanismUnsupported):
                continue
            if opened:
                return opened
    # 3. certificate-less RSA identities on issuer/serial v1.5 recipients (countermeasure applies)
    for ri, r in enumerate(recipients):
        if r.unsupported:
            continue
        for vi, v in enumerate(views):
            if (ri, vi) not in tried and r.weak_match(v):
                opened = attempt(ri, vi)
                if opened:
                    return opened
    if matched_failure is not None:
        r, v = matched_failure
        raise EnvelopeIntegrity(
            f"{v.label} matches recipient {r.rid_text()} but its content key does not "
            "decrypt (damaged envelope or different key with the same name)")
    if matched_unsupported is not None:
        raise MechanismUnsupported(
            f"recipient {matched_unsupported.rid_text()} uses {matched_unsupported.unsupported}",
            ["RSA PKCS#1 v1.5", "RSAES-OAEP SHA-1/SHA-2", "ECDH X9.63 + AES wrap"],
            by="tokenkeys")
    raise NoMatchingRecipient([v.label for v in views], [r.describe() for r in recipients])
