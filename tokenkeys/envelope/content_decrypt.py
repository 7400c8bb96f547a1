"""The content of an opened envelope (EncryptedContentInfo): its cipher, then the
ciphertext decrypted while it streams into the output, and the GCM tag or the CBC
padding checked before anything may be committed."""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.ber import (
    CONTEXT,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    UNIVERSAL,
    BerReader,
    Budget,
    Header,
    decode_oid,
)
from tokenkeys.errors import EnvelopeIntegrity, EnvelopeMalformed
from tokenkeys.files import AtomicOutput
from tokenkeys.i18n import N_, _

INTEGRITY = N_("content integrity check failed (damaged envelope or wrong key)")
# Output is gathered in one reused buffer and written in large slices.
_OUT_CAP = 4 << 20


class NeedAad(Exception):
    """Internal: authAttrs were found after the content; decrypt again with them as AAD."""

    def __init__(self, aad: bytes) -> None:
        super().__init__(_("authAttrs present"))
        self.aad = aad



def read_content_cipher(r: BerReader, auth: bool) -> tuple[Header, alg.ContentCipher]:
    """The EncryptedContentInfo header and its content cipher, which must fit the
    envelope type (`auth`: GCM for AuthEnvelopedData, CBC for EnvelopedData)."""
    eci = r.expect(UNIVERSAL, TAG_SEQUENCE, constructed=True)
    decode_oid(r.read_oid_raw())  # inner content type: any, the bytes are released as-is
    cipher = alg.parse_content_cipher(r.read_tlv_raw(
        r.expect(UNIVERSAL, TAG_SEQUENCE, True), budget=Budget(4096, 64)))
    if auth != (cipher.mode == "gcm"):
        raise EnvelopeMalformed(_("{name} does not fit the envelope type")
                                .format(name=cipher.name))
    return eci, cipher


def decrypt_content(r: BerReader, eci: Header, body: Header, auth: bool,
                    cipher: alg.ContentCipher, cek: bytes, aad: bytes | None,
                    out: AtomicOutput, *, size_hint: int) -> int:
    """Stream encryptedContent into `out`, then check the GCM tag (`auth`) or the CBC
    padding, and what follows up to the end of `body` (the envelope's SEQUENCE);
    returns the plaintext length. `out` is only committed once everything checks."""
    if r.at_end(eci):
        raise EnvelopeMalformed(_("detached content (no encryptedContent) is not supported"))
    content = r.expect(CONTEXT, 0)
    dec = _decryptor(cipher, cek, aad)
    total, last = _stream(r, content, dec, out, cbc=cipher.mode == "cbc", size_hint=size_hint)
    r.close(eci)
    if auth:
        _check_gcm_tag(r, body, dec, cipher.tag_len, aad)
        return total
    return total - _finish_cbc(r, body, dec, last, out)


def _decryptor(cipher: alg.ContentCipher, cek: bytes, aad: bytes | None) -> Any:
    if cipher.mode == "gcm":
        mode: modes.Mode = modes.GCM(cipher.iv, min_tag_length=cipher.tag_len)
    else:
        mode = modes.CBC(cipher.iv)
    dec = Cipher(algorithms.AES(cek), mode).decryptor()  # type: ignore[misc]
    if aad is not None:
        dec.authenticate_additional_data(aad)
    return dec


def _check_gcm_tag(r: BerReader, body: Header, dec: Any, tag_len: int,
                   aad: bytes | None) -> None:
    """Read the mac (and unauthAttrs) after authAttrs, then check the tag."""
    h = _after_auth_attrs(r, aad)
    if h.tag_class != UNIVERSAL or h.tag != TAG_OCTET_STRING or h.constructed:
        raise EnvelopeMalformed(_("expected the mac OCTET STRING, found {describe}")
                                .format(describe=h.describe()))
    mac = r.read_content(h, limit=64)
    if not r.at_end(body):
        _skip_optional(r, 2, "unauthAttrs")
    if len(mac) != tag_len:
        raise EnvelopeIntegrity(_(INTEGRITY))
    try:
        dec.finalize_with_tag(mac)
    except InvalidTag:
        raise EnvelopeIntegrity(_(INTEGRITY)) from None


def _after_auth_attrs(r: BerReader, aad: bytes | None) -> Header:
    """The header after the optional authAttrs. They come after the content but are
    part of the AAD: the first pass (no AAD yet) stops with NeedAad to run again."""
    h = r.read_header()
    if h.tag_class == CONTEXT and h.tag == 1:
        raw = r.read_tlv_raw(h, budget=Budget(64 << 10, 4096))
        if aad is None:
            raise NeedAad(_auth_attrs_aad(raw))
        return r.read_header()
    if aad is not None:
        raise EnvelopeMalformed(_("authAttrs changed between passes"))
    return h


def _finish_cbc(r: BerReader, body: Header, dec: Any, last: bytes, out: AtomicOutput) -> int:
    """After unprotectedAttrs, check the padding of the held-back last block and write
    it without the padding; returns the padding length."""
    if not r.at_end(body):
        _skip_optional(r, 1, "unprotectedAttrs")
    pad = _check_cbc_tail(dec, last)
    out.write(last[: len(last) - pad])
    return pad


def _skip_optional(r: BerReader, tag: int, what: str) -> None:
    h = r.read_header()
    if h.tag_class != CONTEXT or h.tag != tag:
        raise EnvelopeMalformed(_("unexpected {describe} (expected {what} or the end)")
                                .format(describe=h.describe(), what=what))
    r.skip(h)


def _auth_attrs_aad(raw: bytes) -> bytes:
    """RFC 5083 sec. 2.2: the AAD is the DER of authAttrs with the EXPLICIT SET OF tag."""
    from asn1crypto import cms

    attrs = cms.CMSAttributes.load(b"\x31" + raw[1:])
    return bytes(attrs.dump(force=True))


def _stream(r: BerReader, content: Header, dec: Any, out: AtomicOutput, *,
             cbc: bool, size_hint: int) -> tuple[int, bytes]:
    """Decrypt the content into `out`. For CBC the last block is held back (padding)."""
    # Small envelopes get a small buffer: zeroing 6 MiB per 4 KB bid costs more than the AES.
    # (A base64 input is larger than its content, so the hint is an upper bound.)
    # Room for the output gathered so far plus one chunk (at most a reader block).
    buf = bytearray(min(_OUT_CAP, size_hint) + min(2 << 20, size_hint) + 64)
    mv = memoryview(buf)
    cap = len(buf)
    fill = 0
    total = 0
    update_into = dec.update_into
    for chunk in r.iter_octets(content):
        if fill + len(chunk) + 16 > cap:
            keep = 16 if cbc and fill >= 16 else 0
            out.write(mv[: fill - keep])
            total += fill - keep
            mv[0:keep] = mv[fill - keep : fill]
            fill = keep
        fill += update_into(chunk, mv[fill:])
    if not cbc:  # GCM is finalised with the tag, which comes after the content
        out.write(mv[:fill])
        return total + fill, b""
    if fill < 16:
        raise EnvelopeIntegrity(_(INTEGRITY))
    out.write(mv[: fill - 16])
    return total + fill, bytes(mv[fill - 16 : fill])


def _check_cbc_tail(dec: Any, last: bytes) -> int:
    """Check PKCS#7 padding of the last block; returns the padding length."""
    try:
        if dec.finalize():
            raise EnvelopeIntegrity(_(INTEGRITY))
    except ValueError:  # ciphertext not a whole number of blocks
        raise EnvelopeIntegrity(_(INTEGRITY)) from None
    if len(last) != 16:
        raise EnvelopeIntegrity(_(INTEGRITY))
    pad = last[-1]
    if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
        raise EnvelopeIntegrity(_(INTEGRITY))
    return pad
