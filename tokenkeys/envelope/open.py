"""Open (decrypt) a CMS EnvelopedData / AuthEnvelopedData, streaming, atomically."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    TAG_SET,
    UNIVERSAL,
    BerReader,
    Budget,
    Header,
    decode_oid,
)
from tokenkeys.envelope.cek import KeyTrial, content_keys
from tokenkeys.envelope.formats import detect
from tokenkeys.envelope.identity import Identity, SoftwareIdentity
from tokenkeys.envelope.identity_view import IdentityView
from tokenkeys.envelope.recipient_frame import read_recipient_infos
from tokenkeys.envelope.recipients import Recipient, parse_recipient_infos
from tokenkeys.errors import EnvelopeIntegrity, EnvelopeMalformed, TokenKeysError, UsageError
from tokenkeys.files import AtomicOutput, CommitGroup, check_target
from tokenkeys.i18n import N_, _

_T = TypeVar("_T")
_INTEGRITY = N_("content integrity check failed (damaged envelope or wrong key)")
# Output is gathered in one reused buffer and written in large slices.
_OUT_CAP = 4 << 20
# The BER reader's buffer: 1 MB for large envelopes, the file's size for small ones.
READ_BLOCK = 1 << 20
MIN_READ_BLOCK = 64 * 1024


@dataclass(frozen=True)
class OpenResult:
    recipient: str
    identity_label: str
    content_cipher: str
    key_transport: str
    bytes_out: int
    sha256: str | None = None  # of the envelope file, hashed while it was read


class _Digesting:
    """The envelope file, hashed as it is read: the audit row's digest without
    reading the file a second time."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self._sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._f.read(size)
        self._sha256.update(data)
        return data

    def readinto(self, buffer: memoryview, /) -> int:
        got: int | None = self._f.readinto(buffer)
        if got:
            self._sha256.update(buffer[:got])
        return got or 0

    def fileno(self) -> int:
        fd: int = self._f.fileno()
        return fd

    def hexdigest(self) -> str:
        while chunk := self._f.read(1 << 20):  # whatever the decoder left unread
            self._sha256.update(chunk)
        return self._sha256.hexdigest()


class _NeedAad(Exception):
    """Internal: authAttrs were found after the content; decrypt again with them as AAD."""

    def __init__(self, aad: bytes) -> None:
        super().__init__(_("authAttrs present"))
        self.aad = aad


@dataclass
class _Head:
    reader: BerReader
    auth: bool
    outer: tuple[Header, Header, Header]  # ContentInfo, [0], Enveloped/AuthEnveloped body
    recipients: list[Recipient]


def _read_head(reader: BerReader) -> _Head:
    ci = reader.expect(UNIVERSAL, TAG_SEQUENCE, constructed=True)
    ctype = decode_oid(reader.read_oid_raw())
    if ctype not in (alg.ID_ENVELOPED_DATA, alg.ID_AUTH_ENVELOPED_DATA):
        name = alg.CONTENT_TYPE_NAMES.get(ctype, "unknown")
        raise EnvelopeMalformed(_("content type {name} ({ctype}) is not an encrypted envelope")
                                .format(name=name, ctype=ctype))
    explicit = reader.expect(CONTEXT, 0, constructed=True)
    body = reader.expect(UNIVERSAL, TAG_SEQUENCE, constructed=True)
    reader.read_content(reader.expect(UNIVERSAL, TAG_INTEGER, constructed=False), limit=4)
    h = reader.read_header()
    if h.tag_class == CONTEXT and h.tag == 0:  # originatorInfo: certificates we do not need
        reader.skip(h)
        h = reader.read_header()
    if h.tag_class != UNIVERSAL or h.tag != TAG_SET or not h.constructed:
        raise EnvelopeMalformed(_("expected RecipientInfos, found {describe}")
                                .format(describe=h.describe()))
    recipients = parse_recipient_infos(read_recipient_infos(reader, h))
    return _Head(reader, ctype == alg.ID_AUTH_ENVELOPED_DATA, (ci, explicit, body), recipients)


def _open_src(src: str | os.PathLike[str]) -> Any:
    try:
        return open(src, "rb")
    except OSError as exc:
        raise UsageError(_("cannot read {fspath}: {strerror}")
                         .format(fspath=os.fspath(src), strerror=exc.strerror)) from None


@contextmanager
def _malformed_input() -> Iterator[None]:
    """Any stray library exception caused by input bytes becomes EnvelopeMalformed."""
    try:
        yield
    except (TokenKeysError, _NeedAad, OSError):
        raise
    except RecursionError:
        raise EnvelopeMalformed(_("envelope nesting too deep")) from None
    except Exception:
        raise EnvelopeMalformed(_("malformed envelope (a structure does not decode)")) from None


def _from_header(src: str | os.PathLike[str], each: Callable[[Recipient], _T | None]) -> list[_T]:
    """`each` of the recipients, from the header only (the content is never read).
    `each` is inside _malformed_input too: asn1crypto decodes names lazily."""
    with _malformed_input(), _open_src(src) as f:
        source, _fmt = detect(f)
        found = (each(r) for r in _read_head(BerReader(source, 64 * 1024)).recipients)
        return [x for x in found if x is not None]


def describe_recipients(src: str | os.PathLike[str]) -> list[str]:
    """Read only the header and describe each recipient (for "wrong card" diagnostics)."""
    return _from_header(src, lambda r: r.describe())


def _rid(r: Recipient) -> tuple[bytes, int] | bytes | None:
    return r.rid.key() if r.rid is not None else None


def recipient_ids(src: str | os.PathLike[str]) -> list[tuple[bytes, int] | bytes]:
    """Each recipient's identifier, from the header only: (issuer DER, serial) or an SKI."""
    return _from_header(src, _rid)


def _as_identity(i: int, x: Identity | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Identity:
    if isinstance(x, rsa.RSAPrivateKey):
        return SoftwareIdentity(x, label=f"software RSA-{x.key_size} key #{i + 1}")
    if isinstance(x, ec.EllipticCurvePrivateKey):
        return SoftwareIdentity(x, label=f"software EC {x.curve.name} key #{i + 1}")
    return x


def open_envelope(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    identities: Sequence[Identity | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
    *,
    overwrite: bool = False,
    group: CommitGroup | None = None,
) -> OpenResult:
    """Decrypt `src` into `dst` with the first identity that opens it.

    Nothing is written at `dst` unless the whole envelope checks out (GCM tag or
    CBC padding, and the structure to its last byte). Identities that need a PIN
    must already be logged in. With `group`, the authenticated output waits there
    and appears at `dst` when the group publishes it.
    """
    dst_path = Path(dst)
    check_target(dst_path, overwrite)
    views = [IdentityView.of(_as_identity(i, x)) for i, x in enumerate(identities)]
    with AtomicOutput(dst_path, overwrite, group=group) as out:
        result = _open_checked(src, out, views)
        out.commit()
    return result


def _open_checked(src: str | os.PathLike[str], out: AtomicOutput,
                  views: list[IdentityView]) -> OpenResult:
    """Pass over the content with each candidate key (cek.content_keys; nearly always
    one) until one checks out: a GCM tag settles it; CBC padding passes by chance 1
    time in 256, so with several candidates exactly one may pass (then it is run
    again, the output of the others being gone). Each pass streams: memory stays
    constant, time is one pass per candidate at most (plus that re-run)."""
    t = KeyTrial()
    passed: list[int] = []
    last: OpenResult | None = None
    rerun = False
    while True:
        try:
            with _malformed_input():
                result = _decrypt(src, out, views, t)
            if not t.cbc or len(t.keys) == 1 or rerun:
                return result
            passed.append(t.index)
            last = result
        except _NeedAad as need:  # authAttrs come after the content: once more with them
            t.aad = need.aad
            out.truncate()
            continue
        except EnvelopeIntegrity:
            if len(t.keys) <= 1:
                raise
        if t.index + 1 < len(t.keys):
            t.index += 1
            out.truncate()
            continue
        if len(passed) != 1:
            raise EnvelopeIntegrity(_(_INTEGRITY))
        if passed == [t.index] and last is not None:
            return last
        t.index, rerun = passed[0], True
        out.truncate()


def _decrypt(src: str | os.PathLike[str], out: AtomicOutput, views: list[IdentityView],
             t: KeyTrial) -> OpenResult:
    with _open_src(src) as raw_file:
        f = _Digesting(raw_file)
        size = os.fstat(f.fileno()).st_size
        source, _fmt = detect(cast(BinaryIO, f))
        # The reader's buffer need not outgrow the file: zeroing 1 MB for a 4 KB bid
        # was a fifth of the batch's Python time per envelope.
        head = _read_head(BerReader(source, min(READ_BLOCK, max(MIN_READ_BLOCK, size))))
        eci, cipher = _read_content_cipher(head)
        if not t.keys:
            t.keys = content_keys(head.recipients, views, cipher.key_len)
            t.cbc = cipher.mode == "cbc"
        o = t.keys[t.index]
        total = _decrypt_content(head, eci, cipher, o.cek, t.aad, out, size_hint=size)
        _read_to_the_end(head)
        if not o.genuine:
            # The random key of the v1.5 countermeasure went through the same
            # decryption and checks; fail only now, with the same error as a bad
            # tag or padding, so CBC's 1-in-256 "valid" padding never releases junk.
            raise EnvelopeIntegrity(_(_INTEGRITY))
        digest = f.hexdigest()
    return OpenResult(
        recipient=f"{o.recipient.rid_text()} via {o.view.label}",
        identity_label=o.view.label,
        content_cipher=cipher.name,
        key_transport=o.recipient.transport_for(o.view),
        bytes_out=total,
        sha256=digest,
    )


def _read_content_cipher(head: _Head) -> tuple[Header, alg.ContentCipher]:
    """The EncryptedContentInfo header and its content cipher, which must fit the
    envelope type (GCM for AuthEnvelopedData, CBC for EnvelopedData)."""
    r = head.reader
    eci = r.expect(UNIVERSAL, TAG_SEQUENCE, constructed=True)
    decode_oid(r.read_oid_raw())  # inner content type: any, the bytes are released as-is
    cipher = alg.parse_content_cipher(r.read_tlv_raw(
        r.expect(UNIVERSAL, TAG_SEQUENCE, True), budget=Budget(4096, 64)))
    if head.auth != (cipher.mode == "gcm"):
        raise EnvelopeMalformed(_("{name} does not fit the envelope type")
                                .format(name=cipher.name))
    return eci, cipher


def _decrypt_content(head: _Head, eci: Header, cipher: alg.ContentCipher, cek: bytes,
                     aad: bytes | None, out: AtomicOutput, *, size_hint: int) -> int:
    """Stream encryptedContent into `out`, then check the GCM tag or the CBC padding;
    returns the plaintext length. `out` is only committed once everything checks."""
    r = head.reader
    if r.at_end(eci):
        raise EnvelopeMalformed(_("detached content (no encryptedContent) is not supported"))
    content = r.expect(CONTEXT, 0)
    dec = _decryptor(cipher, cek, aad)
    total, last = _stream(r, content, dec, out, cbc=cipher.mode == "cbc", size_hint=size_hint)
    r.close(eci)
    body = head.outer[2]
    if head.auth:
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
        raise EnvelopeIntegrity(_(_INTEGRITY))
    try:
        dec.finalize_with_tag(mac)
    except InvalidTag:
        raise EnvelopeIntegrity(_(_INTEGRITY)) from None


def _after_auth_attrs(r: BerReader, aad: bytes | None) -> Header:
    """The header after the optional authAttrs. They come after the content but are
    part of the AAD: the first pass (no AAD yet) stops with _NeedAad to run again."""
    h = r.read_header()
    if h.tag_class == CONTEXT and h.tag == 1:
        raw = r.read_tlv_raw(h, budget=Budget(64 << 10, 4096))
        if aad is None:
            raise _NeedAad(_auth_attrs_aad(raw))
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


def _read_to_the_end(head: _Head) -> None:
    """Close the envelope body, [0] and ContentInfo: nothing may follow them."""
    ci, explicit, body = head.outer
    head.reader.close(body)
    head.reader.close(explicit)
    head.reader.close(ci)
    head.reader.expect_eof()


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
        raise EnvelopeIntegrity(_(_INTEGRITY))
    out.write(mv[: fill - 16])
    return total + fill, bytes(mv[fill - 16 : fill])


def _check_cbc_tail(dec: Any, last: bytes) -> int:
    """Check PKCS#7 padding of the last block; returns the padding length."""
    try:
        if dec.finalize():
            raise EnvelopeIntegrity(_(_INTEGRITY))
    except ValueError:  # ciphertext not a whole number of blocks
        raise EnvelopeIntegrity(_(_INTEGRITY)) from None
    if len(last) != 16:
        raise EnvelopeIntegrity(_(_INTEGRITY))
    pad = last[-1]
    if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
        raise EnvelopeIntegrity(_(_INTEGRITY))
    return pad
