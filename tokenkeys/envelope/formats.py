"""Input format detection (DER/BER, PEM, S/MIME) and streaming base64 decoding."""

from __future__ import annotations

import binascii
import re
from typing import BinaryIO

from tokenkeys.errors import EnvelopeMalformed
from tokenkeys.i18n import _

READ_BLOCK = 1 << 20
_WS = b" \t\r\n\v\f"
PEM_LABELS = (b"CMS", b"PKCS7", b"PKCS #7")
_MIME_TYPES = (b"application/pkcs7-mime", b"application/x-pkcs7-mime")


class FileSource:
    """Binary input: bytes already read during detection, then the file."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head = memoryview(head)
        self._f = f

    def readinto(self, buffer: memoryview, /) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        got: int | None = self._f.readinto(buffer)  # type: ignore[attr-defined]
        return got or 0


class Base64Source:
    """Decodes base64 text incrementally (PEM body or S/MIME body).

    For PEM the text ends at the first '-' (the END line, which is checked);
    for S/MIME it ends at end of file. Only whitespace may follow.
    """

    def __init__(self, head: bytes, f: BinaryIO, pem_label: bytes | None) -> None:
        self._text = head
        self._f = f
        self._label = pem_label
        self._carry = b""  # base64 characters not yet a multiple of 4
        self._out = memoryview(b"")
        self._done = False
        self._padded = False

    def readinto(self, buffer: memoryview, /) -> int:
        while not self._out and not self._done:
            self._decode_more()
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _next_text(self) -> bytes:
        if self._text:
            t, self._text = self._text, b""
            return t
        return self._f.read(READ_BLOCK)

    def _decode_more(self) -> None:
        text = self._next_text()
        final = not text
        if final and self._label is not None:
            raise EnvelopeMalformed(_("PEM END line missing (truncated file?)"))
        if text:
            dash = text.find(b"-")
            if dash >= 0:
                if self._label is None:
                    raise EnvelopeMalformed(
                        _("S/MIME body is not plain base64 (multipart is not supported)"))
                self._check_pem_end(text[dash:])
                text = text[:dash]
                final = True
        data = self._carry + text.translate(None, _WS)
        cut = len(data) if final else len(data) - len(data) % 4
        chunk, self._carry = data[:cut], data[cut:]
        if chunk:
            if self._padded:
                raise EnvelopeMalformed(_("bad base64: data after the final padding"))
            if final and len(chunk) % 4:
                raise EnvelopeMalformed(_("bad base64: length is not a multiple of 4"))
            try:
                self._out = memoryview(binascii.a2b_base64(chunk, strict_mode=True))
            except binascii.Error as exc:
                raise EnvelopeMalformed(_("bad base64 ({exc})").format(exc=exc)) from None
            self._padded = chunk.endswith(b"=")
        if final:
            self._done = True

    def _check_pem_end(self, tail: bytes) -> None:
        expected = b"-----END " + (self._label or b"") + b"-----"
        # The END line may straddle a read block: pull a little more text.
        while len(tail) < len(expected) + 1:
            more = self._f.read(READ_BLOCK)
            if not more:
                break
            tail += more
        if not tail.startswith(expected):
            raise EnvelopeMalformed(_("PEM END line missing or does not match BEGIN line"))
        rest = tail[len(expected) :]
        while True:
            if rest.translate(None, _WS):
                raise EnvelopeMalformed(_("trailing data after the PEM END line"))
            rest = self._f.read(READ_BLOCK)
            if not rest:
                return


def detect(f: BinaryIO) -> tuple[FileSource | Base64Source, str]:
    """Pick the decoder from the first block; returns (source, format name)."""
    head = f.read(64 * 1024)
    if not head:
        raise EnvelopeMalformed(_("empty file"))
    if head[0] == 0x30:
        return FileSource(head, f), "der"
    stripped = head.lstrip(_WS)
    if stripped.startswith(b"-----BEGIN "):
        m = re.match(rb"-----BEGIN ([A-Z0-9 #]+)-----[ \t]*\r?\n", stripped)
        if not m or m.group(1) not in PEM_LABELS:
            raise EnvelopeMalformed(_("PEM file is not a CMS/PKCS7 envelope"))
        return Base64Source(stripped[m.end() :], f, m.group(1)), "pem"
    m = re.search(rb"\r?\n\r?\n", head)
    if m and b":" in head[: m.start()]:
        return _smime(head, m.start(), m.end(), f)
    raise EnvelopeMalformed(_("not a CMS envelope (neither DER/BER, PEM nor S/MIME)"))


def _smime(head: bytes, hdr_end: int, body: int, f: BinaryIO) -> tuple[Base64Source, str]:
    headers: dict[bytes, bytes] = {}
    name = b""
    for line in re.split(rb"\r?\n", head[:hdr_end]):
        if line[:1] in (b" ", b"\t") and name:  # folded header continuation
            headers[name] += b" " + line.strip()
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            raise EnvelopeMalformed(_("not a CMS envelope (unreadable MIME header)"))
        name = key.strip().lower()
        headers[name] = value.strip()
    ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if ctype not in _MIME_TYPES:
        shown = ctype.decode("ascii", "replace")[:60] or "none"
        raise EnvelopeMalformed(
            _("S/MIME part is not application/pkcs7-mime (Content-Type: {shown})")
            .format(shown=shown))
    cte = headers.get(b"content-transfer-encoding", b"").strip().lower()
    if cte != b"base64":
        shown = cte.decode("ascii", "replace")[:30] or "none"
        raise EnvelopeMalformed(_("S/MIME transfer encoding {shown} is not supported (base64 "
                                  "only)").format(shown=shown))
    return Base64Source(head[body:], f, None), "smime"
