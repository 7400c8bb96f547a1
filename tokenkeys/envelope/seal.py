"""Seal (encrypt) a file into a streaming, indefinite-length BER CMS envelope.

The output is what `openssl cms -encrypt -stream` writes: the small header
structures are DER, the outer containers and the content are indefinite-length
with the ciphertext in constructed OCTET STRING chunks, so memory stays flat.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from asn1crypto import algos, cms, keys
from asn1crypto import x509 as a1x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP, PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from tokenkeys.certificates import forbidden_encryption_usage
from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.ber import EOC, encode_length, encode_oid, tlv
from tokenkeys.errors import MechanismUnsupported, PolicyRefused, UsageError
from tokenkeys.files import AtomicOutput, check_target
from tokenkeys.i18n import _
from tokenkeys.keyalg import KEY_TRANSPORTS, OAEP_TRANSPORTS

CHUNK = 1 << 20  # plaintext read size = ciphertext OCTET STRING chunk size
_CURVES = {"secp256r1", "secp384r1", "secp521r1"}


@dataclass(frozen=True)
class SealOptions:
    authenticated: bool = True  # AuthEnvelopedData AES-GCM; False -> EnvelopedData AES-CBC
    key_bits: int = 256
    key_transport: str = "oaep-sha256"  # oaep-sha1/256/384/512 | pkcs1v15 (RSA recipients)
    use_ski: bool = False  # identify recipients by subjectKeyIdentifier (when they have one)
    pem: bool = False  # "-----BEGIN CMS-----" armour instead of BER
    allow_any_usage: bool = False  # seal even when keyUsage forbids receiving
    # Per recipient (same order), a key transport replacing `key_transport`; None keeps it.
    transports: tuple[str | None, ...] = ()


def _check_options(o: SealOptions) -> None:
    if o.key_bits not in (128, 192, 256):
        raise UsageError(_("key_bits must be 128, 192 or 256, not {key_bits}")
                         .format(key_bits=o.key_bits))
    for transport in (o.key_transport, *o.transports):
        if transport is not None and transport not in KEY_TRANSPORTS:
            choices = ", ".join(KEY_TRANSPORTS)
            raise UsageError(_("unknown key transport {transport!r} (choose one of: {choices})")
                             .format(transport=transport, choices=choices))


def _a1cert(cert: x509.Certificate) -> a1x509.Certificate:
    return a1x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


_RSASSA_PSS = "1.2.840.113549.1.1.10"
_KEY_NAMES = {"Ed25519PublicKey": "Ed25519", "Ed448PublicKey": "Ed448", "X25519PublicKey": "X25519",
              "X448PublicKey": "X448", "DSAPublicKey": "DSA", "DHPublicKey": "DH"}


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:#x}"


def check_recipient(cert: x509.Certificate, allow_any_usage: bool = False) -> None:
    """Refuse a certificate that cannot receive an envelope other tools can open."""
    if cert.public_key_algorithm_oid.dotted_string == _RSASSA_PSS:
        # An RSA-PSS key is for signatures only; OpenSSL refuses to decrypt with it.
        raise PolicyRefused(_("recipient {cert} has an RSA-PSS key, which is for signatures "
                              "only: it cannot receive an envelope").format(cert=_who(cert)))
    pub = cert.public_key()
    if not isinstance(pub, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        name = _KEY_NAMES.get(type(pub).__name__, "unknown")
        raise MechanismUnsupported(_("sealing to the {name} key of {cert}")
                                   .format(name=name, cert=_who(cert)),
                                   ["RSA", "EC P-256/P-384/P-521"], by="tokenkeys")
    needed = forbidden_encryption_usage(cert, pub)
    if needed is not None and not allow_any_usage:
        raise PolicyRefused(_("recipient {cert} has a keyUsage without {needed}: its key is "
                              "not meant to receive envelopes; --allow-any-usage overrides")
                            .format(cert=_who(cert), needed=needed))


def named_by_issuer(recipients: Sequence[x509.Certificate], o: SealOptions) -> list[str]:
    """With use_ski, the recipients that have no subjectKeyIdentifier extension: they are
    named by issuer and serial instead (a derived identifier could not be found by other
    tools, which look up the certificate's own)."""
    if not o.use_ski:
        return []
    return [_who(c) for c in recipients if _a1cert(c).key_identifier is None]


def _ski(a1: a1x509.Certificate) -> bytes | None:
    ident = a1.key_identifier
    return bytes(ident) if ident else None


def _ias(a1: a1x509.Certificate) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber({"issuer": a1.issuer, "serial_number": a1.serial_number})


def _ktri(cert: x509.Certificate, pub: rsa.RSAPublicKey, cek: bytes,
          o: SealOptions) -> cms.RecipientInfo:
    a1 = _a1cert(cert)
    ski = _ski(a1) if o.use_ski else None
    if ski is not None:
        rid = cms.RecipientIdentifier(name="subject_key_identifier", value=ski)
    else:
        rid = cms.RecipientIdentifier(name="issuer_and_serial_number", value=_ias(a1))
    if o.key_transport == "pkcs1v15":
        kea = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"})
        enc = pub.encrypt(cek, PKCS1v15())
    else:
        name = OAEP_TRANSPORTS[o.key_transport]
        hcls = alg.DIGESTS[alg.DIGEST_OID_BY_NAME[name]][1]
        # Explicit parameters, MGF1 with the same digest, empty label (RFC 4055).
        params = algos.RSAESOAEPParams({
            "hash_algorithm": {"algorithm": name},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": name}},
        })
        kea = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": params})
        enc = pub.encrypt(cek, OAEP(mgf=MGF1(hcls()), algorithm=hcls(), label=None))
    version = "v2" if ski is not None else "v0"
    return cms.RecipientInfo(name="ktri", value=cms.KeyTransRecipientInfo({
        "version": version, "rid": rid, "key_encryption_algorithm": kea, "encrypted_key": enc}))


def _kari(cert: x509.Certificate, pub: ec.EllipticCurvePublicKey, cek: bytes,
          o: SealOptions) -> cms.RecipientInfo:
    if pub.curve.name not in _CURVES:
        raise MechanismUnsupported(_("ECDH on curve {name}").format(name=pub.curve.name),
                                   sorted(_CURVES), by="tokenkeys")
    a1 = _a1cert(cert)
    # One ephemeral key per recipient (RFC 5753 dhSinglePass): forward secrecy per envelope.
    eph = ec.generate_private_key(pub.curve)
    z = eph.exchange(ec.ECDH(), pub)
    wrap = cms.KeyEncryptionAlgorithm({"algorithm": "aes256_wrap"})
    shared_info = alg.ecc_shared_info(wrap, None, 32)
    kek = X963KDF(algorithm=alg.DIGESTS["2.16.840.1.101.3.4.2.1"][1](), length=32,
                  sharedinfo=shared_info).derive(z)
    point = eph.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    ski = _ski(a1) if o.use_ski else None
    if ski is not None:
        rid = cms.KeyAgreementRecipientIdentifier(
            # A dict, not cms.RecipientKeyIdentifier: asn1crypto defines that name twice.
            name="r_key_id", value={"subject_key_identifier": ski})
    else:
        rid = cms.KeyAgreementRecipientIdentifier(name="issuer_and_serial_number", value=_ias(a1))
    originator = cms.OriginatorIdentifierOrKey(name="originator_key", value=keys.PublicKeyInfo({
        "algorithm": keys.PublicKeyAlgorithm({"algorithm": "ec"}), "public_key": point}))
    return cms.RecipientInfo(name="kari", value=cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": originator,
        "key_encryption_algorithm": {"algorithm": alg.ECDH_SCHEME_BY_DIGEST["sha256"],
                                     "parameters": wrap},
        "recipient_encrypted_keys": [{"rid": rid, "encrypted_key": aes_key_wrap(kek, cek)}],
    }))


def build_recipient_infos(recipients: Sequence[x509.Certificate], cek: bytes,
                          o: SealOptions) -> tuple[bytes, bool]:
    """DER RecipientInfos and whether every one is a version-0 KTRI."""
    if not recipients:
        raise UsageError(_("seal needs at least one recipient certificate"))
    infos = []
    for i, cert in enumerate(recipients):
        check_recipient(cert, o.allow_any_usage)
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            own = o.transports[i] if i < len(o.transports) else None
            infos.append(_ktri(cert, pub, cek, replace(o, key_transport=own) if own else o))
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            infos.append(_kari(cert, pub, cek, o))
        else:  # pragma: no cover - check_recipient refused it
            raise PolicyRefused(_("recipient {cert}: unsupported key type")
                                .format(cert=_who(cert)))
    all_v0 = all(i.name == "ktri" and i.chosen["version"].native == "v0" for i in infos)
    return bytes(cms.RecipientInfos(infos).dump()), all_v0


class _PemSink:
    """Streams base64 with 64-character lines between BEGIN/END CMS lines."""

    def __init__(self, write: Callable[[bytes | memoryview], None]) -> None:
        self._write = write
        self._carry = b""
        write(b"-----BEGIN CMS-----\n")

    def __call__(self, data: bytes | memoryview) -> None:
        data = self._carry + bytes(data)
        cut = len(data) - len(data) % 48
        self._carry = data[cut:]
        if cut:
            self._emit(data[:cut])

    def _emit(self, raw: bytes) -> None:
        text = binascii.b2a_base64(raw, newline=False)
        self._write(b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64)))

    def close(self) -> None:
        if self._carry:
            self._emit(self._carry)
        self._write(b"-----END CMS-----\n")


def seal(
    src: str | os.PathLike[str] | BinaryIO,
    dst: str | os.PathLike[str],
    recipients: Sequence[x509.Certificate],
    options: SealOptions = SealOptions(),
    *,
    overwrite: bool = False,
) -> int:
    """Encrypt `src` to every recipient certificate; returns the plaintext size.

    `dst` appears only once the whole envelope is written (see tokenkeys/files.py).
    """
    _check_options(options)
    dst_path = Path(dst)
    check_target(dst_path, overwrite)
    cek = os.urandom(options.key_bits // 8)
    ris, all_v0 = build_recipient_infos(recipients, cek, options)
    mode_name = "gcm" if options.authenticated else "cbc"
    cipher = alg.ContentCipher(mode_name, len(cek), os.urandom(12 if options.authenticated else 16))
    if options.authenticated:
        ctype, version = alg.ID_AUTH_ENVELOPED_DATA, 0
        mode: modes.Mode = modes.GCM(cipher.iv)
    else:
        ctype, version = alg.ID_ENVELOPED_DATA, 0 if all_v0 else 2
        mode = modes.CBC(cipher.iv)
    head = (b"\x30\x80" + encode_oid(ctype) + b"\xa0\x80"  # ContentInfo, [0] content
            + b"\x30\x80" + tlv(0x02, bytes([version]))
            + ris + b"\x30\x80" + encode_oid(alg.ID_DATA) + alg.encode_content_cipher(cipher)
            + b"\xa0\x80")
    if isinstance(src, (str, os.PathLike)):
        try:
            fin: BinaryIO = open(src, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(_("cannot read {fspath}: {strerror}")
                             .format(fspath=os.fspath(src), strerror=exc.strerror)) from None
        close_src = True
    else:
        fin, close_src = src, False
    try:
        with AtomicOutput(dst_path, overwrite) as out:
            pem = _PemSink(out.write) if options.pem else None
            write = pem if pem is not None else out.write
            write(head)
            enc = Cipher(algorithms.AES(cek), mode).encryptor()  # type: ignore[misc]
            total = _stream(fin, enc, write, cbc=not options.authenticated)
            tail = EOC + EOC  # end of [0] encryptedContent, end of EncryptedContentInfo
            if options.authenticated:
                enc.finalize()
                tail += tlv(0x04, enc.tag)
            write(tail + EOC + EOC + EOC)
            if pem is not None:
                pem.close()
            out.commit()
    finally:
        if close_src:
            fin.close()
    return total


def _stream(fin: BinaryIO, enc: CipherContext, write: Callable[[bytes | memoryview], None], *,
            cbc: bool) -> int:
    inbuf = bytearray(CHUNK)
    inmv = memoryview(inbuf)
    outbuf = bytearray(CHUNK + 32 + 8)
    omv = memoryview(outbuf)
    update_into = enc.update_into
    readinto = getattr(fin, "readinto", None)
    total = 0

    def emit(k: int) -> None:
        if k:
            hdr = b"\x04" + encode_length(k)
            start = 8 - len(hdr)
            omv[start:8] = hdr
            write(omv[start : 8 + k])

    while True:
        if readinto is not None:
            n = readinto(inmv)
        else:
            data = fin.read(CHUNK)
            n = len(data)
            inmv[:n] = data
        if not n:
            break
        total += n
        emit(update_into(inmv[:n], omv[8:]))
    if cbc:
        pad = 16 - total % 16
        k = update_into(bytes([pad]) * pad, omv[8:])
        k += len(enc.finalize())
        emit(k)
    return total
