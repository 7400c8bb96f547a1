"""Open (decrypt) a CMS EnvelopedData / AuthEnvelopedData, streaming, atomically.

This module reads the header and tries the candidate keys; the content itself is
decrypted and checked by content_decrypt."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenkeys.envelope import algorithms as alg
from tokenkeys.envelope.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_SEQUENCE,
    TAG_SET,
    UNIVERSAL,
    BerReader,
    Header,
    decode_oid,
)
from tokenkeys.envelope.cek import KeyTrial, content_keys
from tokenkeys.envelope.content_decrypt import (
    INTEGRITY,
    NeedAad,
    decrypt_content,
    read_content_cipher,
)
from tokenkeys.envelope.formats import detect
from tokenkeys.envelope.identity import Identity, SoftwareIdentity
from tokenkeys.envelope.identity_view import IdentityView
from tokenkeys.envelope.recipient_frame import read_recipient_infos
from tokenkeys.envelope.recipients import Recipient, parse_recipient_infos
from tokenkeys.errors import EnvelopeIntegrity, EnvelopeMalformed, TokenKeysError, UsageError
from tokenkeys.files import AtomicOutput, CommitGroup, check_target
from tokenkeys.i18n import _

_T = TypeVar("_T")
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
    except (TokenKeysError, NeedAad, OSError):
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
        except NeedAad as need:  # authAttrs come after the content: once more with them
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
            raise EnvelopeIntegrity(_(INTEGRITY))
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
        eci, cipher = read_content_cipher(head.reader, head.auth)
        if not t.keys:
            t.keys = content_keys(head.recipients, views, cipher.key_len)
            t.cbc = cipher.mode == "cbc"
        o = t.keys[t.index]
        total = decrypt_content(head.reader, eci, head.outer[2], head.auth, cipher, o.cek,
                                t.aad, out, size_hint=size)
        _read_to_the_end(head)
        if not o.genuine:
            # The random key of the v1.5 countermeasure went through the same
            # decryption and checks; fail only now, with the same error as a bad
            # tag or padding, so CBC's 1-in-256 "valid" padding never releases junk.
            raise EnvelopeIntegrity(_(INTEGRITY))
        digest = f.hexdigest()
    return OpenResult(
        recipient=f"{o.recipient.rid_text()} via {o.view.label}",
        identity_label=o.view.label,
        content_cipher=cipher.name,
        key_transport=o.recipient.transport_for(o.view),
        bytes_out=total,
        sha256=digest,
    )


def _read_to_the_end(head: _Head) -> None:
    """Close the envelope body, [0] and ContentInfo: nothing may follow them."""
    ci, explicit, body = head.outer
    head.reader.close(body)
    head.reader.close(explicit)
    head.reader.close(ci)
    head.reader.expect_eof()
