"""Streaming BER framing: read and write TLV headers without loading the message.

Hand-written on purpose: asn1crypto and cryptography's pkcs7 both parse a whole
message in memory, and a sealed bid can be gigabytes. Only the outer framing and
the encrypted content are handled here; the small structures (RecipientInfos,
AlgorithmIdentifiers) are read as raw TLVs and handed to asn1crypto.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from tokenkeys.envelope.ber_encode import EOC as EOC
from tokenkeys.envelope.ber_encode import encode_header as encode_header
from tokenkeys.envelope.ber_encode import encode_length as encode_length
from tokenkeys.envelope.ber_encode import encode_oid as encode_oid
from tokenkeys.envelope.ber_encode import tlv as tlv
from tokenkeys.envelope.der_count import count_der_nodes
from tokenkeys.errors import EnvelopeMalformed
from tokenkeys.i18n import _

UNIVERSAL = 0
CONTEXT = 2

TAG_INTEGER = 2
TAG_OCTET_STRING = 4
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17

# Small structures (algorithm parameters, attributes) are read whole; anything
# bigger than this in those positions is an attack or garbage.
MAX_SMALL_TLV = 64 << 10
# What is read and dropped (originatorInfo certificates, unprotected attributes).
MAX_SKIPPED = 16 << 20
# Elements per small structure: each costs about 4 us to frame and, in asn1crypto,
# an object of about 800 bytes. 8192 bound both to ~10x the fixed cost of a bid.
MAX_NODES = 8192
# Nesting deeper than this cannot occur in CMS; refuse it instead of recursing.
MAX_DEPTH = 64
# Content chunks: the first FREE_CHUNKS may be any size; beyond, they must average
# MIN_AVG_CHUNK bytes (openssl writes 4 KiB, Bouncy Castle 1000 bytes, tokenkeys 1 MiB).
FREE_CHUNKS = 1024
MIN_AVG_CHUNK = 512


class Budget:
    """Bytes and elements still allowed for one small structure (shared across calls)."""

    def __init__(self, max_bytes: int, max_nodes: int = MAX_NODES) -> None:
        self.bytes_left = max_bytes
        self.nodes_left = max_nodes

    def spend(self, h: Header, nbytes: int) -> None:
        self.nodes_left -= 1
        self.bytes_left -= nbytes
        if self.bytes_left < 0:
            raise EnvelopeMalformed(_("value too large, {describe}").format(describe=h.describe()))
        if self.nodes_left < 0:
            raise EnvelopeMalformed(_("too many elements in a small structure, {describe}")
                                    .format(describe=h.describe()))


class ByteSource(Protocol):
    def readinto(self, buffer: memoryview, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Header:
    tag_class: int
    constructed: bool
    tag: int
    length: int | None  # None = indefinite
    start: int  # absolute offset of the first header byte
    content_start: int  # absolute offset of the first content byte

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.content_start + self.length

    def describe(self) -> str:
        cls = {0: "universal", 1: "application", 2: "context", 3: "private"}[self.tag_class]
        return (_("{cls} tag {tag} at offset {start}")
                .format(cls=cls, tag=self.tag, start=self.start))


class BerReader:
    """Incremental BER reader over a ByteSource with one reused buffer.

    `offset` is the absolute number of bytes consumed, so definite lengths can
    be checked against the position where a container must end.
    """

    def __init__(self, source: ByteSource, block_size: int = 1 << 20) -> None:
        self._src = source
        self._buf = bytearray(block_size)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self.offset = 0
        self._chunks = 0
        self._chunk_bytes = 0

    # -- buffer management -------------------------------------------------
    def _available(self) -> int:
        return self._end - self._start

    def _fill(self, need: int) -> bool:
        """Make at least `need` bytes available; False if the input ends first."""
        while self._available() < need:
            if self._eof:
                return False
            if self._start:
                n = self._available()
                self._buf[0:n] = self._buf[self._start : self._end]
                self._start, self._end = 0, n
            got = self._src.readinto(self._mv[self._end :])
            if not got:
                self._eof = True
                return self._available() >= need
            self._end += got
        return True

    def _need(self, n: int) -> None:
        if not self._fill(n):
            at = self.offset + self._available()
            raise EnvelopeMalformed(_("envelope is truncated (input ends at offset {at})")
                                    .format(at=at))

    def _take(self, n: int) -> memoryview:
        """Consume n bytes (n <= block size); the view is valid until the next read."""
        self._need(n)
        view = self._mv[self._start : self._start + n]
        self._start += n
        self.offset += n
        return view

    # -- headers ---------------------------------------------------------------
    def read_header(self) -> Header:
        start = self.offset
        self._need(2)
        b = self._buf
        i = self._start
        first = b[i]
        tag_class = first >> 6
        constructed = bool(first & 0x20)
        tag = first & 0x1F
        pos = 1
        if tag == 0x1F:  # high tag number form
            tag = 0
            while True:
                self._need(pos + 2)
                b = self._buf
                i = self._start
                octet = b[i + pos]
                pos += 1
                tag = (tag << 7) | (octet & 0x7F)
                if tag > 1 << 28:
                    raise EnvelopeMalformed(_("tag number too large at offset {start}")
                                            .format(start=start))
                if not octet & 0x80:
                    break
        lb = b[i + pos]
        pos += 1
        length: int | None
        if lb < 0x80:
            length = lb
        elif lb == 0x80:
            if not constructed:
                raise EnvelopeMalformed(_("indefinite length on a primitive value at offset "
                                          "{start}").format(start=start))
            length = None
        else:
            count = lb & 0x7F
            if count > 8 or count == 0x7F:
                raise EnvelopeMalformed(_("length field too large at offset {start}")
                                        .format(start=start))
            self._need(pos + count)
            i = self._start
            length = int.from_bytes(self._buf[i + pos : i + pos + count], "big")
            pos += count
        self._start += pos
        self.offset += pos
        return Header(tag_class, constructed, tag, length, start, self.offset)

    def peek_is_eoc(self) -> bool:
        self._need(2)
        i = self._start
        return self._buf[i] == 0 and self._buf[i + 1] == 0

    def at_end(self, container: Header) -> bool:
        """True when `container` has no more children (without consuming its EOC)."""
        end = container.end
        if end is None:
            return self.peek_is_eoc()
        if self.offset > end:
            raise EnvelopeMalformed(_("element overruns its container ({describe})")
                                    .format(describe=container.describe()))
        return self.offset == end

    def close(self, container: Header) -> None:
        """Consume the end of `container`: its EOC, or check its definite length."""
        end = container.end
        if end is None:
            if not self.peek_is_eoc():
                raise EnvelopeMalformed(_("unexpected data before end of {describe}")
                                        .format(describe=container.describe()))
            self._take(2)
        elif self.offset != end:
            raise EnvelopeMalformed(_("length mismatch at end of {describe}")
                                    .format(describe=container.describe()))

    def expect_eof(self) -> None:
        if self._fill(1):
            raise EnvelopeMalformed(_("trailing data after the envelope at offset {offset}")
                                    .format(offset=self.offset))

    # -- values ------------------------------------------------------------------
    def read_content(self, h: Header, limit: int = MAX_SMALL_TLV) -> bytes:
        """Content octets of a definite-length primitive value."""
        if h.length is None or h.constructed:
            raise EnvelopeMalformed(_("expected a primitive value, {describe}")
                                    .format(describe=h.describe()))
        if h.length > limit:
            raise EnvelopeMalformed(_("value too large, {describe}").format(describe=h.describe()))
        return self._read_exact(h.length)

    def _read_exact(self, n: int) -> bytes:
        block = len(self._buf)
        if n <= block:
            return bytes(self._take(n))
        parts = []
        while n:
            k = min(n, block)
            parts.append(bytes(self._take(k)))
            n -= k
        return b"".join(parts)

    def read_tlv_raw(self, h: Header, limit: int = MAX_SMALL_TLV,
                     budget: Budget | None = None) -> bytes:
        """The encoding (header included) of an element whose header was read.

        Constructed values are walked element by element, so a hostile shape
        (millions of empty elements) is refused by the budget before it costs memory.
        """
        out = bytearray()
        self._walk(h, budget or Budget(limit), out, 0)
        return bytes(out)

    def skip(self, h: Header, limit: int = MAX_SKIPPED) -> None:
        """Consume an element we do not need, at a cost per byte, not per element."""
        if h.length is not None:
            if h.length > limit:
                raise EnvelopeMalformed(_("value too large, {describe}")
                                        .format(describe=h.describe()))
            self._discard(h.length)
            return
        self._walk(h, Budget(limit), None, 0)

    def _discard(self, n: int) -> None:
        block = len(self._buf)
        while n:
            k = min(n, block)
            self._take(k)
            n -= k

    def _walk(self, h: Header, budget: Budget, out: bytearray | None, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise EnvelopeMalformed(_("nesting too deep, {describe}")
                                    .format(describe=h.describe()))
        if out is not None and h.constructed and self._copy_buffered(h, budget, out, depth):
            return
        whole = not h.constructed or (out is None and h.length is not None)
        eoc = 2 if h.length is None else 0
        budget.spend(h, h.content_start - h.start + eoc + ((h.length or 0) if whole else 0))
        if out is not None:
            out += _encode_header_like(h)
        if whole:
            if out is None:
                self._discard(h.length or 0)
            else:
                out += self._read_exact(h.length or 0)
            return
        while not self.at_end(h):
            self._walk(self.read_header(), budget, out, depth + 1)
        if eoc and out is not None:
            out += EOC
        self.close(h)

    def _copy_buffered(self, h: Header, budget: Budget, out: bytearray, depth: int) -> bool:
        """_walk's fast path: a definite-length DER element already in the buffer is
        counted in place and copied at once. False, having consumed nothing, for anything
        else (BER forms, a limit reached): _walk then says what is wrong."""
        if h.length is None or h.length > self._available():
            return False
        total = h.content_start - h.start + h.length
        if total > budget.bytes_left:
            return False
        start = self._start
        nodes = count_der_nodes(self._buf, start, start + h.length, MAX_DEPTH - depth,
                                budget.nodes_left - 1)
        if nodes is None or nodes + 1 > budget.nodes_left:
            return False
        budget.nodes_left -= nodes + 1
        budget.bytes_left -= total
        out += _encode_header_like(h)
        out += self._take(h.length)
        return True

    def expect(self, tag_class: int, tag: int, constructed: bool | None = None) -> Header:
        h = self.read_header()
        if h.tag_class != tag_class or h.tag != tag:
            raise EnvelopeMalformed(_("unexpected {describe} (wanted {tag_class})")
                                    .format(describe=h.describe(),
                                            tag_class=_name(tag_class, tag)))
        if constructed is not None and h.constructed != constructed:
            raise EnvelopeMalformed(_("wrong encoding form, {describe}")
                                    .format(describe=h.describe()))
        return h

    def read_oid_raw(self) -> bytes:
        h = self.expect(UNIVERSAL, TAG_OID, constructed=False)
        return self.read_content(h, limit=256)

    def iter_octets(self, h: Header, depth: int = 0) -> Iterator[memoryview]:
        """Yield the content of an OCTET STRING (or [n] IMPLICIT one) piece by piece.

        Handles a primitive value and the constructed, chunked form (definite or
        indefinite) that streaming encoders write. Each view is only valid until
        the next item is requested.
        """
        if depth > MAX_DEPTH:
            raise EnvelopeMalformed(_("nesting too deep, {describe}")
                                    .format(describe=h.describe()))
        if depth == 0:
            self._chunks = self._chunk_bytes = 0
        if not h.constructed:
            remaining = h.length or 0
            block = len(self._buf)
            while remaining:
                k = min(remaining, block)
                # Hand out what is already buffered rather than forcing a full block.
                avail = self._available()
                if avail and avail < k:
                    k = avail
                yield self._take(k)
                remaining -= k
            return
        while not self.at_end(h):
            child = self.read_header()
            if child.tag_class != UNIVERSAL or child.tag != TAG_OCTET_STRING:
                raise EnvelopeMalformed(_("unexpected {describe} inside chunked content")
                                        .format(describe=child.describe()))
            n = child.length
            # Each chunk costs Python work: tiny ones must be rare, or the input is refused.
            self._chunks += 1
            self._chunk_bytes += n or 0
            if self._chunks > FREE_CHUNKS + self._chunk_bytes // MIN_AVG_CHUNK:
                raise EnvelopeMalformed(
                    _("content is split into too many tiny chunks ({chunks} chunks for "
                      "{chunk_bytes} bytes at offset {start})")
                    .format(chunks=self._chunks, chunk_bytes=self._chunk_bytes, start=child.start))
            if not child.constructed and n is not None and n <= self._available():
                # Fast path for the common small chunk already in the buffer
                # (openssl -stream writes 4 KiB chunks): no nested generator.
                if n:
                    yield self._take(n)
                continue
            yield from self.iter_octets(child, depth + 1)
        self.close(h)


def _name(tag_class: int, tag: int) -> str:
    if tag_class == CONTEXT:
        return f"[{tag}]"
    names = {TAG_INTEGER: "INTEGER", TAG_OCTET_STRING: "OCTET STRING", TAG_OID: "OBJECT IDENTIFIER",
             TAG_SEQUENCE: "SEQUENCE", TAG_SET: "SET"}
    return names.get(tag, f"tag {tag}")


def _encode_header_like(h: Header) -> bytes:
    """Re-encode a header read from the input (used to rebuild raw TLVs)."""
    return encode_header(h.tag_class, h.constructed, h.tag, h.length)


def decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise EnvelopeMalformed(_("malformed OBJECT IDENTIFIER"))
    values: list[int] = []
    v = 0
    for byte in content:
        v = (v << 7) | (byte & 0x7F)
        if not byte & 0x80:
            values.append(v)
            v = 0
    first = values[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(x) for x in head + values[1:])

