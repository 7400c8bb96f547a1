"""Writing BER/DER headers and small elements (the streaming writer in seal.py uses these)."""

from __future__ import annotations


def encode_length(n: int | None) -> bytes:
    if n is None:
        return b"\x80"
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_header(tag_class: int, constructed: bool, tag: int, length: int | None) -> bytes:
    first = (tag_class << 6) | (0x20 if constructed else 0)
    if tag < 0x1F:
        ident = bytes([first | tag])
    else:
        digits = []
        t = tag
        while True:
            digits.append(t & 0x7F)
            t >>= 7
            if not t:
                break
        digits.reverse()
        ident = bytes([first | 0x1F]) + bytes(d | 0x80 for d in digits[:-1]) + bytes(digits[-1:])
    return ident + encode_length(length)


def tlv(tag_byte: int, content: bytes) -> bytes:
    """A definite-length DER element with a single-byte identifier."""
    return bytes([tag_byte]) + encode_length(len(content)) + content


EOC = b"\x00\x00"


def encode_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    values = [parts[0] * 40 + parts[1], *parts[2:]]
    out = bytearray()
    for v in values:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))
